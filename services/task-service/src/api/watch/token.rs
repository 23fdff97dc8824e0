//! Resume tokens: a watcher's outbox position, opaque and tamper-proof.
//!
//! A token carries a `Cursor` (the highest seq delivered and the seqs below it still
//! open, see `outbox::feed::cursor`) and a fingerprint of the caller and the watch's list
//! filter, signed with HMAC-SHA256 under a key of its own derived from the service secret
//! (as page tokens are). Every replica shares the secret, so a token from one replica
//! resumes on any other. A modified token, or another user's, is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::outbox::feed::{Cursor, Gap};

const VERSION: u8 = 1;
const FINGERPRINT_LEN: usize = 8;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeTokenError {
    #[error("resume token is malformed or was modified")]
    Invalid,
    #[error(
        "resume token belongs to another user or another list_id; resume with the same \
         list_id, or watch without a token"
    )]
    OtherWatch,
}

#[derive(Clone)]
pub struct ResumeTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for ResumeTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeTokens").finish_non_exhaustive()
    }
}

impl ResumeTokens {
    /// Derives the signing key (not the page tokens' one: a page token is never a resume
    /// token, even by accident).
    pub fn new(secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"taskmesh/resume-token/v1\0");
        hasher.update(secret);
        Self {
            key: hasher.finalize().into(),
        }
    }

    pub fn encode(&self, user: &str, list: Option<Uuid>, cursor: &Cursor) -> String {
        let mut bytes = Vec::with_capacity(32 + 3 * cursor.gaps.len());
        bytes.push(VERSION);
        bytes.extend_from_slice(&fingerprint(user, list));
        put_varint(&mut bytes, zigzag(cursor.high));
        put_varint(&mut bytes, cursor.gaps.len() as u64);
        // Each gap as its distance below the previous one (or below `high`): small numbers.
        let mut above = cursor.high;
        for gap in cursor.gaps.iter().rev() {
            put_varint(&mut bytes, above.abs_diff(gap.seq));
            above = gap.seq;
        }
        let tag = self.tag(&bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(
        &self,
        token: &str,
        user: &str,
        list: Option<Uuid>,
    ) -> Result<Cursor, ResumeTokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| ResumeTokenError::Invalid)?;
        if bytes.len() < 1 + FINGERPRINT_LEN + TAG_LEN {
            return Err(ResumeTokenError::Invalid);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| ResumeTokenError::Invalid)?;
        if body[0] != VERSION {
            return Err(ResumeTokenError::Invalid);
        }
        let (stamp, mut rest) = body[1..].split_at(FINGERPRINT_LEN);
        if stamp != fingerprint(user, list) {
            return Err(ResumeTokenError::OtherWatch);
        }
        let high = unzigzag(take_varint(&mut rest)?);
        let count = take_varint(&mut rest)?;
        if count > crate::outbox::feed::MAX_GAPS as u64 {
            return Err(ResumeTokenError::Invalid);
        }
        let mut gaps = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut above = high;
        for _ in 0..count {
            let distance =
                i64::try_from(take_varint(&mut rest)?).map_err(|_| ResumeTokenError::Invalid)?;
            let seq = above
                .checked_sub(distance)
                .filter(|seq| *seq < above)
                .ok_or(ResumeTokenError::Invalid)?;
            gaps.push(Gap { seq, until_ms: 0 });
            above = seq;
        }
        if !rest.is_empty() {
            return Err(ResumeTokenError::Invalid);
        }
        gaps.reverse();
        Ok(Cursor { high, gaps })
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac();
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }
}

fn fingerprint(user: &str, list: Option<Uuid>) -> [u8; FINGERPRINT_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(user.as_bytes());
    hasher.update([0]);
    if let Some(list) = list {
        hasher.update(list.as_bytes());
    }
    let digest = hasher.finalize();
    let mut out = [0; FINGERPRINT_LEN];
    out.copy_from_slice(&digest[..FINGERPRINT_LEN]);
    out
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, ResumeTokenError> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(ResumeTokenError::Invalid)?;
        *bytes = rest;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(ResumeTokenError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Cursor {
        Cursor {
            high: 1_234_567,
            gaps: vec![
                Gap {
                    seq: 17,
                    until_ms: 0,
                },
                Gap {
                    seq: 1_234_560,
                    until_ms: 0,
                },
                Gap {
                    seq: 1_234_566,
                    until_ms: 0,
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_tampering() {
        let tokens = ResumeTokens::new(b"secret");
        let list = Some(Uuid::now_v7());
        for cursor in [
            cursor(),
            Cursor::at(0),
            Cursor::at(-1),
            Cursor::at(i64::MAX),
        ] {
            let token = tokens.encode("alice", list, &cursor);
            assert_eq!(tokens.decode(&token, "alice", list), Ok(cursor));
        }
        let token = tokens.encode("alice", list, &cursor());
        assert_eq!(
            tokens.decode(&token, "bob", list),
            Err(ResumeTokenError::OtherWatch)
        );
        assert_eq!(
            tokens.decode(&token, "alice", None),
            Err(ResumeTokenError::OtherWatch)
        );
        assert_eq!(
            ResumeTokens::new(b"other").decode(&token, "alice", list),
            Err(ResumeTokenError::Invalid)
        );
        for i in 0..token.len() {
            let mut chars: Vec<char> = token.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let tampered: String = chars.into_iter().collect();
            assert!(tokens.decode(&tampered, "alice", list).is_err(), "{i}");
        }
        for junk in ["", "!!!", "AAAA", &"A".repeat(1000)] {
            assert!(tokens.decode(junk, "alice", list).is_err());
        }
    }

    #[test]
    fn tokens_stay_short() {
        let token = ResumeTokens::new(b"k").encode("alice", None, &cursor());
        assert!(token.len() < 64, "{} characters: {token}", token.len());
    }
}
