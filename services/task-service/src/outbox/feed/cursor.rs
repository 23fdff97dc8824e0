//! Where a reader of the outbox stands, gaps included.
//!
//! `seq` is taken when a row is inserted, but transactions commit in any order: on
//! PostgreSQL, seq 11 may be visible while seq 10's transaction is still open. A reader
//! that only kept "the highest seq I saw" would step over 10 for good when it commits. So
//! a cursor is the highest seq seen plus the seqs below it not seen yet (the gaps); each
//! gap is looked for again until its grace period ends. A gap that never fills was a
//! rolled-back insert (or a seq PostgreSQL's sequence skipped), which nothing will ever
//! commit: the grace is longer than any transaction may stay open (the request deadline
//! plus the statement timeout), after which whatever was going to commit has.
//!
//! Per task, seq order is commit order already (a task's changes serialise on its
//! version check, so its next change is inserted only after the last one committed), and
//! a reader that sees a task's later row sees its earlier one in the same snapshot: gaps
//! are never a task's own earlier change overtaken by a later one.

/// A seq below the cursor's `high` that has not been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub seq: i64,
    /// Unix milliseconds after which nothing can commit it any more. Zero when unknown (a
    /// gap read back from a resume token): the replica's own poller, which knows it,
    /// decides when such a seq is given up on.
    pub until_ms: i64,
}

/// Every seq up to `high` has been seen, except `gaps` (sorted by seq, all below `high`).
/// "Seen" means read from the outbox, or given up on (a gap past its grace, which stands
/// for a seq that will never commit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub high: i64,
    pub gaps: Vec<Gap>,
}

/// The most gaps a cursor keeps. Gaps are the transactions in flight while the reader
/// looked, a handful; past this many (a burst of rollbacks, a jump of the sequence) the
/// lowest are given up on early, with a warning.
pub const MAX_GAPS: usize = 4096;

impl Cursor {
    pub fn at(high: i64) -> Self {
        Self {
            high,
            gaps: Vec::new(),
        }
    }

    /// Whether `seq` is behind the cursor: seen (or given up on).
    pub fn covers(&self, seq: i64) -> bool {
        seq <= self.high && self.gap_index(seq).is_err()
    }

    /// The lowest seq the cursor has not seen.
    pub fn first_uncovered(&self) -> i64 {
        self.gaps
            .first()
            .map_or(self.high.saturating_add(1), |gap| gap.seq)
    }

    /// Records `seq` as seen. Rows must come in seq order within one read (an outbox
    /// query ordered by seq): the seqs between the old `high` and `seq` that the read did
    /// not return are absent, so they become gaps open until `until_ms`.
    pub fn see(&mut self, seq: i64, until_ms: i64) {
        if seq <= self.high {
            if let Ok(index) = self.gap_index(seq) {
                self.gaps.remove(index);
            }
            return;
        }
        let missing = seq - self.high - 1;
        // Beyond MAX_GAPS the lowest would be dropped at once: skip them without building.
        let first = if missing > MAX_GAPS as i64 {
            tracing::warn!(
                from = self.high + 1,
                to = seq - 1,
                "the outbox skipped more seqs than a reader keeps as gaps; the lowest are \
                 given up on"
            );
            seq - MAX_GAPS as i64
        } else {
            self.high + 1
        };
        self.gaps
            .extend((first..seq).map(|seq| Gap { seq, until_ms }));
        self.high = seq;
        self.bound();
    }

    /// Gives up on the gaps whose grace ended before `now_ms`. Only after a read that
    /// started at `now_ms` or later looked for them, or one that commits after its grace
    /// would still be missed.
    pub fn expire(&mut self, now_ms: i64) {
        self.gaps
            .retain(|gap| gap.until_ms == 0 || gap.until_ms >= now_ms);
    }

    /// What is behind either cursor: a seq is seen if either saw it. A gap known to both
    /// keeps the later grace.
    pub fn union(&self, other: &Self) -> Self {
        let (low, high) = if self.high <= other.high {
            (self, other)
        } else {
            (other, self)
        };
        let mut gaps: Vec<Gap> = Vec::new();
        for gap in &high.gaps {
            if gap.seq > low.high {
                gaps.push(*gap);
            } else if let Ok(index) = low.gap_index(gap.seq) {
                gaps.push(Gap {
                    seq: gap.seq,
                    until_ms: gap.until_ms.max(low.gaps[index].until_ms),
                });
            }
        }
        Self {
            high: high.high,
            gaps,
        }
    }

    /// What the cursor had seen up to and including `seq`: the position of a reader that
    /// has been given this cursor's rows up to `seq`, in order.
    pub fn truncated(&self, seq: i64) -> Self {
        let high = self.high.min(seq);
        Self {
            high,
            gaps: self
                .gaps
                .iter()
                .copied()
                .filter(|gap| gap.seq <= high)
                .collect(),
        }
    }

    fn gap_index(&self, seq: i64) -> Result<usize, usize> {
        self.gaps.binary_search_by_key(&seq, |gap| gap.seq)
    }

    fn bound(&mut self) {
        if self.gaps.len() > MAX_GAPS {
            let excess = self.gaps.len() - MAX_GAPS;
            tracing::warn!(
                given_up = excess,
                "more open gaps in the outbox than a reader keeps; the lowest are given up on"
            );
            self.gaps.drain(..excess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(cursor: &Cursor) -> Vec<i64> {
        cursor.gaps.iter().map(|gap| gap.seq).collect()
    }

    #[test]
    fn seeing_past_missing_seqs_opens_gaps_that_fill_or_expire() {
        let mut cursor = Cursor::at(10);
        cursor.see(11, 100);
        cursor.see(14, 100);
        assert_eq!(cursor.high, 14);
        assert_eq!(seqs(&cursor), [12, 13]);
        assert!(cursor.covers(11) && !cursor.covers(12) && cursor.covers(14));
        assert!(!cursor.covers(15));
        assert_eq!(cursor.first_uncovered(), 12);

        cursor.see(13, 200);
        assert_eq!(seqs(&cursor), [12]);
        cursor.see(16, 300);
        assert_eq!(seqs(&cursor), [12, 15]);
        cursor.expire(150);
        assert_eq!(seqs(&cursor), [15], "12's grace ended at 100");
        cursor.expire(301);
        assert_eq!(cursor, Cursor::at(16));
        assert_eq!(cursor.first_uncovered(), 17);
    }

    #[test]
    fn a_gap_from_a_token_is_not_expired_by_time() {
        let mut cursor = Cursor {
            high: 5,
            gaps: vec![Gap {
                seq: 3,
                until_ms: 0,
            }],
        };
        cursor.expire(i64::MAX);
        assert_eq!(seqs(&cursor), [3]);
    }

    #[test]
    fn union_sees_what_either_saw() {
        let a = Cursor {
            high: 10,
            gaps: vec![
                Gap {
                    seq: 4,
                    until_ms: 1,
                },
                Gap {
                    seq: 7,
                    until_ms: 1,
                },
            ],
        };
        let b = Cursor {
            high: 20,
            gaps: vec![
                Gap {
                    seq: 7,
                    until_ms: 5,
                },
                Gap {
                    seq: 9,
                    until_ms: 5,
                },
                Gap {
                    seq: 15,
                    until_ms: 5,
                },
            ],
        };
        let both = a.union(&b);
        assert_eq!(both, b.union(&a));
        assert_eq!(both.high, 20);
        assert_eq!(
            both.gaps,
            [
                Gap {
                    seq: 7,
                    until_ms: 5
                },
                Gap {
                    seq: 15,
                    until_ms: 5
                }
            ]
        );
        for seq in 0..25 {
            assert_eq!(
                both.covers(seq),
                a.covers(seq) || b.covers(seq),
                "seq {seq}"
            );
        }
    }

    #[test]
    fn truncation_keeps_what_was_seen_up_to_a_seq() {
        let cursor = Cursor {
            high: 20,
            gaps: vec![
                Gap {
                    seq: 5,
                    until_ms: 1,
                },
                Gap {
                    seq: 15,
                    until_ms: 1,
                },
            ],
        };
        let cut = cursor.truncated(12);
        assert_eq!(cut.high, 12);
        assert_eq!(seqs(&cut), [5]);
        assert_eq!(cursor.truncated(99), cursor);
    }

    #[test]
    fn a_huge_jump_keeps_at_most_max_gaps() {
        let mut cursor = Cursor::at(0);
        cursor.see(1_000_000, 1);
        assert_eq!(cursor.gaps.len(), MAX_GAPS);
        assert_eq!(cursor.gaps[0].seq, 1_000_000 - MAX_GAPS as i64);
        assert!(cursor.covers(10));
    }
}
