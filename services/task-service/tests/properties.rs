//! Property tests for the page token codec, the one thing task-service parses from a client
//! that is not a protobuf field: any string decodes to a clear error, and a token that was
//! encoded and then changed in any way is refused. The case count is bounded so that
//! `just test` stays quick (`PROPTEST_CASES=100000` for a deep run); no regression files
//! are written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use task_service::api::PageTokens;
use task_service::domain::{Cursor, OrderBy, Priority, StatusFilter, TaskFilter};
use uuid::Uuid;

/// The largest input generated: a metadata value a client could plausibly send.
const MAX_INPUT: usize = 64 * 1024;

/// What a client is told about a token it made up or changed.
const INVALID: &str = "page token is malformed or was modified";
/// What it is told about a token of another query.
const QUERY_CHANGED: &str =
    "page token belongs to a different query; keep the filters and order unchanged";

const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `cases` per property, unless `PROPTEST_CASES` asks for another number.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => ".{0,24}",
        1 => any::<String>(),
        1 => (".{1,4}", 0..MAX_INPUT).prop_map(|(s, n)| s.repeat(n / s.len().max(1))),
    ]
}

fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_135_596_800i64..=253_402_300_799, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

fn arb_filter() -> impl Strategy<Value = TaskFilter> {
    (
        select(vec![
            StatusFilter::Open,
            StatusFilter::Completed,
            StatusFilter::All,
        ]),
        option::of(select(vec![
            Priority::Low,
            Priority::Medium,
            Priority::High,
            Priority::Urgent,
        ])),
        option::of(arb_text()),
        option::of(arb_time()),
        option::of(arb_time()),
        option::of(arb_text()),
        select(vec![
            OrderBy::CreateTime,
            OrderBy::DueTime,
            OrderBy::Priority,
        ]),
        any::<bool>(),
    )
        .prop_map(
            |(
                status,
                priority,
                tag,
                due_before,
                due_after,
                title_contains,
                order_by,
                descending,
            )| {
                TaskFilter {
                    status,
                    priority,
                    tag,
                    due_before,
                    due_after,
                    title_contains,
                    list_id: None,
                    assignee: None,
                    query: None,
                    order_by,
                    descending,
                }
            },
        )
}

fn arb_cursor() -> impl Strategy<Value = Cursor> {
    (any::<i64>(), any::<u128>()).prop_map(|(key, id)| Cursor {
        key,
        id: Uuid::from_u128(id),
    })
}

/// A token as the service hands it out, with what it was made for.
#[derive(Debug, Clone)]
struct Issued {
    secret: Vec<u8>,
    owner: String,
    filter: TaskFilter,
    cursor: Cursor,
    token: String,
}

fn arb_issued() -> impl Strategy<Value = Issued> {
    (
        vec(any::<u8>(), 0..64),
        arb_text(),
        arb_filter(),
        arb_cursor(),
    )
        .prop_map(|(secret, owner, filter, cursor)| {
            let token = PageTokens::new(&secret).encode(&owner, &filter, cursor);
            Issued {
                secret,
                owner,
                filter,
                cursor,
                token,
            }
        })
}

impl Issued {
    fn decode(&self, token: &str) -> Result<Cursor, String> {
        PageTokens::new(&self.secret)
            .decode(token, &self.owner, &self.filter)
            .map_err(|err| err.to_string())
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn issued_tokens_decode_to_their_cursor(issued in arb_issued()) {
        prop_assert_eq!(issued.decode(&issued.token), Ok(issued.cursor));
    }

    /// Any string: refused as malformed, whether it is text, base64url of the right
    /// length, or base64url of a body with a plausible version byte.
    #[test]
    fn made_up_tokens_are_refused(
        issued in arb_issued(),
        token in prop_oneof![
            arb_text(),
            "[A-Za-z0-9_-]{60,70}",
            vec(any::<u8>(), 40..60).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
            vec(any::<u8>(), 48..=48).prop_map(|b| URL_SAFE_NO_PAD.encode([&[1u8][..], &b].concat())),
        ],
    ) {
        prop_assume!(token != issued.token);
        prop_assert_eq!(issued.decode(&token), Err(INVALID.to_owned()));
    }

    /// Any one character replaced by any other: refused.
    #[test]
    fn tokens_with_a_character_changed_are_refused(
        issued in arb_issued(),
        at in any::<Index>(),
        replacement in prop_oneof![
            3 => select(BASE64URL.to_vec()).prop_map(char::from),
            1 => any::<char>(),
        ],
    ) {
        let mut chars: Vec<char> = issued.token.chars().collect();
        let i = at.index(chars.len());
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let tampered: String = chars.into_iter().collect();
        prop_assert_eq!(issued.decode(&tampered), Err(INVALID.to_owned()));
    }

    /// Any bit of the decoded bytes flipped, re-encoded properly: refused by the signature.
    #[test]
    fn tokens_with_a_bit_flipped_are_refused(issued in arb_issued(), at in any::<Index>(), bit in 0..8u8) {
        let mut bytes = URL_SAFE_NO_PAD.decode(&issued.token).unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert_eq!(
            issued.decode(&URL_SAFE_NO_PAD.encode(&bytes)),
            Err(INVALID.to_owned())
        );
    }

    /// Cut short, lengthened, padded or wrapped in spaces: refused.
    #[test]
    fn tokens_cut_or_extended_are_refused(
        issued in arb_issued(),
        keep in any::<Index>(),
        suffix in prop_oneof!["[A-Za-z0-9_-]{1,8}", Just("=".to_owned()), Just("==".to_owned()), arb_text()],
    ) {
        prop_assume!(!suffix.is_empty());
        let cut = &issued.token[..keep.index(issued.token.len())];
        prop_assert_eq!(issued.decode(cut), Err(INVALID.to_owned()));
        prop_assert_eq!(
            issued.decode(&format!("{}{suffix}", issued.token)),
            Err(INVALID.to_owned())
        );
        prop_assert_eq!(
            issued.decode(&format!(" {}", issued.token)),
            Err(INVALID.to_owned())
        );
    }

    /// A token is good only under the key that signed it.
    #[test]
    fn tokens_from_another_secret_are_refused(issued in arb_issued(), other in vec(any::<u8>(), 0..64)) {
        prop_assume!(other != issued.secret);
        prop_assert_eq!(
            PageTokens::new(&other)
                .decode(&issued.token, &issued.owner, &issued.filter)
                .map_err(|err| err.to_string()),
            Err(INVALID.to_owned())
        );
    }

    /// Replayed by another user or with other filters: refused as another query.
    #[test]
    fn tokens_of_another_query_are_refused(
        issued in arb_issued(),
        owner in arb_text(),
        filter in arb_filter(),
    ) {
        prop_assume!(owner != issued.owner || filter != issued.filter);
        prop_assert_eq!(
            PageTokens::new(&issued.secret)
                .decode(&issued.token, &owner, &filter)
                .map_err(|err| err.to_string()),
            Err(QUERY_CHANGED.to_owned())
        );
    }
}

/// Every position, every base64url character: the token's last character has spare bits,
/// and a decoder that ignored them would accept a changed token.
#[test]
fn every_one_character_change_is_refused() {
    let filter = TaskFilter {
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
    };
    let tokens = PageTokens::new(b"secret");
    let cursor = Cursor {
        key: i64::MIN,
        id: Uuid::max(),
    };
    let token = tokens.encode("alice", &filter, cursor);
    assert_eq!(tokens.decode(&token, "alice", &filter), Ok(cursor));
    for i in 0..token.len() {
        for replacement in BASE64URL.iter().chain(b"=.+/ ").map(|b| char::from(*b)) {
            if token[i..].starts_with(replacement) {
                continue;
            }
            let mut tampered = token.clone();
            tampered.replace_range(i..=i, replacement.encode_utf8(&mut [0; 4]));
            assert_eq!(
                tokens
                    .decode(&tampered, "alice", &filter)
                    .map_err(|err| err.to_string()),
                Err(INVALID.to_owned()),
                "{tampered}"
            );
        }
    }
}
