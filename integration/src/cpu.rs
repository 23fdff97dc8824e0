//! CPU time of the sandbox's processes, read from Linux's `/proc`: what a bench spent per
//! event in each process (the service, its sidecar, the broker), a figure that moves much
//! less than rates do on a shared machine.

use std::process::Command;

/// Named processes whose CPU time a bench reads before and after a stretch of work.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    processes: Vec<(String, Option<u32>)>,
    ticks_per_second: f64,
}

/// The CPU seconds of a meter's processes at one moment, in the meter's order.
#[derive(Debug, Clone)]
pub struct CpuReading(Vec<f64>);

impl CpuMeter {
    /// `processes`: a name for the table and the pid (`None` counts as 0: e.g. a process
    /// that is not running).
    pub fn new(processes: Vec<(String, Option<u32>)>) -> Self {
        Self {
            processes,
            ticks_per_second: ticks_per_second(),
        }
    }

    /// This bench's own process, under `name`.
    pub fn this_process(name: &str) -> (String, Option<u32>) {
        (name.to_owned(), Some(std::process::id()))
    }

    pub fn read(&self) -> CpuReading {
        CpuReading(
            self.processes
                .iter()
                .map(|(_, pid)| {
                    pid.map_or(0.0, |pid| cpu_ticks(pid) as f64 / self.ticks_per_second)
                })
                .collect(),
        )
    }

    /// Microseconds of CPU per event in each process between `before` and now.
    pub fn per_event_us(&self, before: &CpuReading, events: f64) -> Vec<(String, f64)> {
        let now = self.read();
        self.processes
            .iter()
            .zip(now.0.iter().zip(&before.0))
            .map(|((name, _), (now, before))| {
                (name.clone(), (now - before) * 1e6 / events.max(1.0))
            })
            .collect()
    }
}

/// `name 41 µs, name 30 µs, ...`, with the total: for a bench's table.
pub fn describe(per_event: &[(String, f64)]) -> String {
    let total: f64 = per_event.iter().map(|(_, us)| us).sum();
    let parts: Vec<String> = per_event
        .iter()
        .map(|(name, us)| format!("{name} {us:.1}"))
        .collect();
    format!("{} (total {total:.1}) µs/event", parts.join(", "))
}

/// The kernel's clock ticks per second, the unit of `/proc`'s CPU times.
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// `pid`'s parent and its user plus system ticks, all its threads (living and ended);
/// `None` when it is gone.
pub fn stat(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from its end.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // ppid is field 4 of the line, utime and stime 14 and 15: 1, 11 and 12 after the name.
    let parent = u32::try_from(field(1)?).ok()?;
    Some((parent, field(11)? + field(12)?))
}

fn cpu_ticks(pid: u32) -> u64 {
    stat(pid).map_or(0, |(_, ticks)| ticks)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn counts_the_cpu_this_process_spends() {
        // On a busy machine 300 ms of spinning may get far less of a core: spin until the
        // meter has counted 200 ms (it never does if it counts nothing), then sleep and
        // check that sleeping is not counted (it is if it counts wall time).
        let meter = CpuMeter::new(vec![CpuMeter::this_process("bench")]);
        let before = meter.read();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut x = 0u64;
        let spent = loop {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            let spent = meter.per_event_us(&before, 1.0)[0].1;
            if spent >= 200_000.0 {
                break spent;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "counted {spent} us in 30 s"
            );
        };
        std::hint::black_box(x);
        let rested = meter.read();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let asleep = meter.per_event_us(&rested, 1.0)[0].1;
        assert!(asleep < 100_000.0, "{asleep} us counted while asleep");
        assert!(spent < 30_000_000.0, "{spent} us");
    }
}
