//! Opaque, tamper-proof page tokens.
//!
//! A token carries the cursor (last sort key and id) and a fingerprint of the query it
//! belongs to, signed with HMAC-SHA256 under a key derived from the service secret. A
//! modified token, or one replayed with different filters, is rejected.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{Cursor, TaskFilter};

const VERSION: u8 = 1;
const FINGERPRINT_LEN: usize = 8;
const TAG_LEN: usize = 16;
const BODY_LEN: usize = 1 + FINGERPRINT_LEN + 8 + 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageTokenError {
    #[error("page token is malformed or was modified")]
    Invalid,
    #[error("page token belongs to a different query; keep the filters and order unchanged")]
    QueryChanged,
}

#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTokens").finish_non_exhaustive()
    }
}

impl PageTokens {
    /// Derives the signing key, so that the service secret itself never signs tokens.
    pub fn new(secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"taskmesh/page-token/v1\0");
        hasher.update(secret);
        Self {
            key: hasher.finalize().into(),
        }
    }

    pub fn encode(&self, owner: &str, filter: &TaskFilter, cursor: Cursor) -> String {
        let mut bytes = Vec::with_capacity(BODY_LEN + TAG_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&fingerprint(owner, filter));
        bytes.extend_from_slice(&cursor.key.to_be_bytes());
        bytes.extend_from_slice(cursor.id.as_bytes());
        let tag = self.tag(&bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(
        &self,
        token: &str,
        owner: &str,
        filter: &TaskFilter,
    ) -> Result<Cursor, PageTokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| PageTokenError::Invalid)?;
        if bytes.len() != BODY_LEN + TAG_LEN {
            return Err(PageTokenError::Invalid);
        }
        let (body, tag) = bytes.split_at(BODY_LEN);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| PageTokenError::Invalid)?;
        if body[0] != VERSION {
            return Err(PageTokenError::Invalid);
        }
        let (stamp, rest) = body[1..].split_at(FINGERPRINT_LEN);
        if stamp != fingerprint(owner, filter) {
            return Err(PageTokenError::QueryChanged);
        }
        let (key, id) = rest.split_at(8);
        let key = i64::from_be_bytes(key.try_into().map_err(|_| PageTokenError::Invalid)?);
        let id = Uuid::from_slice(id).map_err(|_| PageTokenError::Invalid)?;
        Ok(Cursor { key, id })
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
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

fn fingerprint(owner: &str, filter: &TaskFilter) -> [u8; FINGERPRINT_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(owner.as_bytes());
    hasher.update([0]);
    hasher.update(format!("{filter:?}").as_bytes());
    let digest = hasher.finalize();
    let mut out = [0; FINGERPRINT_LEN];
    out.copy_from_slice(&digest[..FINGERPRINT_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrderBy, StatusFilter};

    fn filter() -> TaskFilter {
        TaskFilter {
            status: StatusFilter::All,
            priority: None,
            tag: None,
            due_before: None,
            due_after: None,
            title_contains: None,
            list_id: None,
            assignee: None,
            query: None,
            order_by: OrderBy::CreateTime,
            descending: false,
        }
    }

    #[test]
    fn round_trip_and_tampering() {
        let tokens = PageTokens::new(b"secret");
        let cursor = Cursor {
            key: -42,
            id: Uuid::now_v7(),
        };
        let token = tokens.encode("alice", &filter(), cursor);
        assert_eq!(tokens.decode(&token, "alice", &filter()), Ok(cursor));

        let mut other = filter();
        other.descending = true;
        assert_eq!(
            tokens.decode(&token, "alice", &other),
            Err(PageTokenError::QueryChanged)
        );
        assert_eq!(
            tokens.decode(&token, "bob", &filter()),
            Err(PageTokenError::QueryChanged)
        );
        assert_eq!(
            PageTokens::new(b"other").decode(&token, "alice", &filter()),
            Err(PageTokenError::Invalid)
        );
        // Flip every character in turn: each modified token must be rejected.
        for i in 0..token.len() {
            let mut chars: Vec<char> = token.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let tampered: String = chars.into_iter().collect();
            assert!(tokens.decode(&tampered, "alice", &filter()).is_err(), "{i}");
        }
        for junk in ["", "!!!", "AAAA", &"A".repeat(1000)] {
            assert!(tokens.decode(junk, "alice", &filter()).is_err());
        }
    }
}
