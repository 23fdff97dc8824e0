//! The fault matrix (issue 17): the real system (task-service on PostgreSQL,
//! notification-, recurring- and analytics-service, each with its own daprd) under steady
//! mixed load, one fault at a time, on Redis Streams and on Kafka with SASL/SCRAM over TLS.
//! task-service runs as two replicas on one database (the relay's leader and a standby),
//! so that `leader-stall` can stop the leader and see the standby take over.
//! After each fault every consumer must show exactly the effects the committed events
//! imply: none lost, none doubled (see `taskmesh_integration::faults`).
//!
//! `TASKMESH_FAULTS=broker-kill,consumer-kill` runs only those faults.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use taskmesh_integration::faults::{BrokerChoice, Fault, FaultStack, RunOptions};

/// The two tests run the same app ids, which mDNS resolves host-wide: they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn chosen() -> Vec<Fault> {
    let only = std::env::var("TASKMESH_FAULTS").unwrap_or_default();
    Fault::ALL
        .into_iter()
        .filter(|f| only.is_empty() || only.split(',').any(|n| n.trim() == f.name()))
        .collect()
}

async fn matrix(choice: BrokerChoice) {
    let _turn = SERIAL.lock().await;
    let mut stack = FaultStack::start(choice).await.unwrap();
    let options = RunOptions::default();
    let mut failed = Vec::new();
    let mut done = Vec::new();
    for fault in chosen() {
        let report = match stack.run(fault, &options).await {
            Ok(report) => report,
            Err(err) => {
                failed.push(format!("{} on {}: {err:#}", fault.name(), choice.name()));
                continue;
            }
        };
        println!("{}", report.line());
        println!("{}", report.details());
        let c = &report.counts;
        let mut wrong = Vec::new();
        if c.events == 0 || c.applied.contains(&0) {
            wrong.push(format!("nothing to count: {:?}", c.applied));
        }
        if c.lost != 0 || c.duplicated != 0 || c.unpublished != 0 {
            wrong.push(format!(
                "lost {} duplicated {} unpublished {}: {:?}",
                c.lost,
                c.duplicated,
                c.unpublished,
                &c.problems[..c.problems.len().min(20)]
            ));
        }
        if fault == Fault::PostgresRestart {
            // While PostgreSQL is down the API says so, and says it is worth retrying.
            let other: Vec<_> = report
                .load
                .failures
                .keys()
                .filter(|code| *code != "Unavailable")
                .collect();
            if !report.load.failures.contains_key("Unavailable") {
                wrong.push("no call reached the API while PostgreSQL was down".to_owned());
            }
            if !other.is_empty() {
                wrong.push(format!(
                    "the API answered {:?} while PostgreSQL was down",
                    report.load.failures
                ));
            }
        }
        if fault == Fault::LeaderStall {
            // The load calls the replica that was not stopped: it answers throughout.
            if !report.load.failures.is_empty() {
                wrong.push(format!(
                    "the replica that was not stopped failed calls: {:?}",
                    report.load.failures
                ));
            }
            if report.takeover.is_none() {
                wrong.push("no takeover measured".to_owned());
            }
        }
        if !wrong.is_empty() {
            failed.push(format!(
                "{}\n{}\n{}",
                report.line(),
                wrong.join("\n"),
                stack.logs()
            ));
        }
        done.push(report);
    }
    // Redis Streams hands a delivery whose acknowledgement was lost to the consumer again
    // only after its processing timeout (15 s): every run is counted once more at the end,
    // after that, so a late redelivery applied twice shows as a duplicate.
    tokio::time::sleep(Duration::from_secs(20)).await;
    for report in &done {
        let again = stack.count(&report.users, &report.load).await.unwrap();
        if again.lost != 0 || again.duplicated != 0 {
            failed.push(format!(
                "{} counted again at the end: lost {} duplicated {}: {:?}",
                report.fault.name(),
                again.lost,
                again.duplicated,
                &again.problems[..again.problems.len().min(20)]
            ));
        }
    }
    println!(
        "recount after the matrix on {}: {} runs, none lost or duplicated since: {}",
        choice.name(),
        done.len(),
        failed.is_empty()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_on_redis_streams() {
    matrix(BrokerChoice::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_on_kafka_with_sasl_and_tls() {
    matrix(BrokerChoice::KafkaSaslTls).await;
}
