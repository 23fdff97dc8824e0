//! Ports and readiness.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago, for a server started later.
///
/// Not one the OS picks (port 0): those come from the ephemeral range, where every
/// outgoing connection (daprd to Redis and Kafka, clients to sidecars) also takes its
/// source port, and one of them took such a port before the server bound it (seen as
/// "Address already in use"). Below that range only other servers compete, and a counter
/// spread by the process id keeps concurrent test processes apart.
pub fn free_port() -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = ephemeral_low().clamp(LOWEST + 1_000, 32_768);
    let span = high - LOWEST;
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..span.min(500) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + seed.wrapping_add(n.wrapping_mul(7_919)) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

const LOWEST: u32 = 15_000;

/// The first port of the kernel's ephemeral range (32768 unless configured otherwise).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing listens on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
