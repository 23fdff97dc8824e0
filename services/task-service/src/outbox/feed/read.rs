//! The outbox queries of the watch feed: the poller's read past its cursor, a watcher's
//! catch-up between two cursors, the start position and the pruned horizon.
//!
//! Raw SQL: the seqs of a cursor's gaps are inlined (they are integers from our own
//! cursor), the list ids bound.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement};
use taskmesh_shared::events::TaskEvent;
use uuid::Uuid;

use super::cursor::Cursor;
use crate::outbox::StoreError;

/// One outbox row as watchers use it.
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: i64,
    /// The task's list after the change, and the one it left when the change moved it.
    pub list_id: Option<Uuid>,
    pub previous_list_id: Option<Uuid>,
    /// The CloudEvent; `None` when only seqs were read (nobody watches), or when the
    /// payload does not parse (logged, and skipped by watchers).
    pub event: Option<TaskEvent>,
}

#[derive(Debug, Clone)]
pub struct OutboxReader {
    db: DatabaseConnection,
}

impl OutboxReader {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The rows the cursor has not seen, lowest seqs first: its gaps and what follows
    /// `high`. Without `payload`, only the seqs (enough to move a cursor nobody reads).
    pub async fn after(
        &self,
        cursor: &Cursor,
        limit: u64,
        payload: bool,
    ) -> Result<Vec<Row>, StoreError> {
        self.rows(
            statements::after(self.backend(), cursor, limit, payload),
            payload,
        )
        .await
    }

    /// The rows of `lists` above `after` that `from` has not seen, up to `to.high`,
    /// lowest seqs first: what a watcher that resumes at `from` missed up to where the
    /// live feed takes over (`to`). Rows `to` has not seen are among them (its gaps); they
    /// come live, so the caller skips them.
    pub async fn between(
        &self,
        from: &Cursor,
        to: &Cursor,
        lists: &[Uuid],
        after: i64,
        limit: u64,
    ) -> Result<Vec<Row>, StoreError> {
        if lists.is_empty() {
            return Ok(Vec::new());
        }
        let statement = statements::between(self.backend(), from, to, lists, after, limit);
        self.rows(statement, true).await
    }

    /// The highest seq in the outbox now, and the seqs of its last `window` rows: where a
    /// poller starts (the rows below the highest that are absent may be transactions in
    /// flight, so they start as gaps).
    pub async fn tail(&self, window: i64) -> Result<(i64, Vec<i64>), StoreError> {
        let high = self
            .scalar(statements::highest(self.backend()))
            .await?
            .unwrap_or(0);
        let rows = self
            .rows(statements::tail(self.backend(), high, window), false)
            .await?;
        Ok((high, rows.into_iter().map(|row| row.seq).collect()))
    }

    /// The highest seq the relay's pruning has deleted (0 before any): a watcher that has
    /// not seen a seq at or below it may have missed a change for good.
    pub async fn pruned_through(&self) -> Result<i64, StoreError> {
        Ok(self
            .scalar(statements::pruned_through(self.backend()))
            .await?
            .unwrap_or(0))
    }

    async fn scalar(&self, statement: Statement) -> Result<Option<i64>, StoreError> {
        let row = self.db.query_one_raw(statement).await?;
        Ok(row
            .map(|row| row.try_get::<Option<i64>>("", "n"))
            .transpose()?
            .flatten())
    }

    async fn rows(&self, statement: Statement, payload: bool) -> Result<Vec<Row>, StoreError> {
        let rows = self.db.query_all_raw(statement).await?;
        rows.iter().map(|row| parse(row, payload)).collect()
    }
}

/// The statements the reader runs, built apart from running them: the reader runs exactly
/// these, and `tests/api/explain_outbox.rs` explains them on a seeded database to hold
/// each to an index.
pub mod statements {
    use sea_orm::{DbBackend, Statement, Value};
    use uuid::Uuid;

    use super::{Cursor, unseen};

    /// The poller's read: the rows `cursor` has not seen, lowest seqs first. Without
    /// `payload`, only the seqs.
    pub fn after(backend: DbBackend, cursor: &Cursor, limit: u64, payload: bool) -> Statement {
        let columns = if payload {
            "seq, payload, list_id, previous_list_id"
        } else {
            "seq"
        };
        let newer = format!("SELECT {columns} FROM outbox WHERE seq > {}", cursor.high);
        let sql = if cursor.gaps.is_empty() {
            format!("{newer} ORDER BY seq LIMIT {limit}")
        } else {
            // The gaps and the rows past `high` apart, each from the primary key, merged:
            // with `seq > high OR seq IN (gaps)` in one WHERE, SQLite scans the whole
            // outbox (and PostgreSQL sorts what it found). Gaps are below `high`: no row
            // is in both.
            let gaps: Vec<String> = cursor.gaps.iter().map(|gap| gap.seq.to_string()).collect();
            format!(
                "SELECT {columns} FROM outbox WHERE seq IN ({}) UNION ALL {newer} \
                 ORDER BY seq LIMIT {limit}",
                gaps.join(", ")
            )
        };
        Statement::from_string(backend, sql)
    }

    /// A watcher's catch-up: the rows of `lists` (non-empty) in `(after, to.high]` that
    /// `from` has not seen, lowest seqs first.
    pub fn between(
        backend: DbBackend,
        from: &Cursor,
        to: &Cursor,
        lists: &[Uuid],
        after: i64,
        limit: u64,
    ) -> Statement {
        let placeholders: Vec<String> = (1..=lists.len())
            .map(|n| match backend {
                DbBackend::Postgres => format!("${n}"),
                _ => format!("?{n}"),
            })
            .collect();
        let values: Vec<Value> = lists.iter().map(|list| list.to_string().into()).collect();
        let lists = placeholders.join(", ");
        let range = format!(
            "seq > {after} AND seq <= {to_high} AND ({unseen})",
            to_high = to.high,
            unseen = unseen(from),
        );
        // The rows in the lists and the rows that left them apart, each from its index
        // over (list, seq), merged (a row that moved between two of the lists comes from
        // the first only). With `list_id IN (..) OR previous_list_id IN (..)` in one
        // WHERE, SQLite read the whole seq range for several lists: all of the outbox for
        // a day-old token. Even apart it prefers that range for the first half: without
        // statistics of ranges (no STAT4) it takes any range for narrow. So the indexes
        // are named: through them it reads the lists' rows in the range and a seek per
        // list, never more than the range holds.
        let (by_list, by_previous) = match backend {
            DbBackend::Postgres => ("", ""),
            _ => (
                " INDEXED BY idx_outbox_list_seq",
                " INDEXED BY idx_outbox_previous_list_seq",
            ),
        };
        let columns = "seq, payload, list_id, previous_list_id";
        let sql = format!(
            "SELECT {columns} FROM outbox{by_list} WHERE list_id IN ({lists}) AND {range} \
             UNION ALL \
             SELECT {columns} FROM outbox{by_previous} WHERE previous_list_id IN ({lists}) \
             AND {range} AND (list_id IS NULL OR list_id NOT IN ({lists})) \
             ORDER BY seq LIMIT {limit}"
        );
        Statement::from_sql_and_values(backend, sql, values)
    }

    /// The highest seq in the outbox (`n`), where a starting poller stands.
    pub fn highest(backend: DbBackend) -> Statement {
        Statement::from_string(backend, "SELECT MAX(seq) AS n FROM outbox")
    }

    /// The seqs of the rows less than `window` below `high`, in order.
    pub fn tail(backend: DbBackend, high: i64, window: i64) -> Statement {
        let sql = format!(
            "SELECT seq FROM outbox WHERE seq > {} ORDER BY seq",
            high.saturating_sub(window)
        );
        Statement::from_string(backend, sql)
    }

    /// The highest seq the relay's pruning has deleted (`n`).
    pub fn pruned_through(backend: DbBackend) -> Statement {
        Statement::from_string(
            backend,
            "SELECT pruned_seq AS n FROM outbox_horizon WHERE id = 1",
        )
    }
}

/// The condition "the cursor has not seen `seq`".
fn unseen(cursor: &Cursor) -> String {
    let mut sql = format!("seq > {}", cursor.high);
    if !cursor.gaps.is_empty() {
        let gaps: Vec<String> = cursor.gaps.iter().map(|gap| gap.seq.to_string()).collect();
        sql.push_str(&format!(" OR seq IN ({})", gaps.join(", ")));
    }
    sql
}

fn parse(row: &QueryResult, payload: bool) -> Result<Row, StoreError> {
    let seq: i64 = row.try_get("", "seq")?;
    if !payload {
        return Ok(Row {
            seq,
            list_id: None,
            previous_list_id: None,
            event: None,
        });
    }
    let list = |column: &str| -> Result<Option<Uuid>, StoreError> {
        let text: Option<String> = row.try_get("", column)?;
        Ok(text.and_then(|text| Uuid::parse_str(&text).ok()))
    };
    let text: String = row.try_get("", "payload")?;
    let event = match serde_json::from_str::<TaskEvent>(&text) {
        Ok(event) => Some(event),
        Err(err) => {
            tracing::warn!(seq, %err, "an outbox row's event does not parse; watchers skip it");
            None
        }
    };
    Ok(Row {
        seq,
        list_id: list("list_id")?,
        previous_list_id: list("previous_list_id")?,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::feed::Gap;

    #[test]
    fn the_unseen_condition_names_the_gaps() {
        assert_eq!(unseen(&Cursor::at(7)), "seq > 7");
        let cursor = Cursor {
            high: 9,
            gaps: vec![
                Gap {
                    seq: 3,
                    until_ms: 0,
                },
                Gap {
                    seq: 8,
                    until_ms: 0,
                },
            ],
        };
        assert_eq!(unseen(&cursor), "seq > 9 OR seq IN (3, 8)");
    }
}
