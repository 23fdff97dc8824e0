//! Fail points: places where a test can make the process die as if SIGKILLed, chosen by
//! environment, so that "killed in the middle of an event" is a fault a test can aim at
//! rather than hope to hit. Off unless `TASKMESH_FAILPOINTS` is set.
//!
//! `TASKMESH_FAILPOINTS=record-written=3,next-created` aborts on the third pass through
//! `record-written` and on the first through `next-created`. The process aborts (no
//! destructors, no flushing, no answer to the sidecar): what a SIGKILL leaves behind.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const ENV: &str = "TASKMESH_FAILPOINTS";

/// After a consumer's record write succeeded, before the delivery is answered.
pub const RECORD_WRITTEN: &str = "record-written";
/// After recurring-service created a next occurrence, before the delivery is answered.
pub const NEXT_CREATED: &str = "next-created";

struct Armed {
    /// Abort on this pass (1-based).
    on_pass: u64,
    passes: AtomicU64,
}

fn armed() -> &'static HashMap<String, Armed> {
    static ARMED: OnceLock<HashMap<String, Armed>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var(ENV)
            .map(|spec| parse(&spec))
            .unwrap_or_default()
    })
}

fn parse(spec: &str) -> HashMap<String, Armed> {
    spec.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .filter_map(|part| {
            let (name, on_pass) = match part.split_once('=') {
                Some((name, n)) => (name.trim(), n.trim().parse().ok().filter(|n| *n > 0)?),
                None => (part, 1),
            };
            Some((
                name.to_owned(),
                Armed {
                    on_pass,
                    passes: AtomicU64::new(0),
                },
            ))
        })
        .collect()
}

/// Passes the fail point `name`: aborts the process if it is armed for this pass.
pub fn hit(name: &str) {
    if let Some(point) = armed().get(name)
        && point.passes.fetch_add(1, Ordering::SeqCst) + 1 == point.on_pass
    {
        tracing::error!(failpoint = name, "fail point reached: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_passes_and_ignores_what_it_cannot_read() {
        let armed = parse(" record-written=3 , next-created,bad=0,worse=x,,");
        assert_eq!(armed.len(), 2);
        assert_eq!(armed["record-written"].on_pass, 3);
        assert_eq!(armed["next-created"].on_pass, 1);
    }

    #[test]
    fn an_unarmed_point_passes() {
        // The test process does not set TASKMESH_FAILPOINTS.
        hit("record-written");
        hit("no-such-point");
    }
}
