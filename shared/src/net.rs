//! Accepting gRPC connections.

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// Connections from a bound listener with Nagle's algorithm off. With it on, a small
/// response can wait for the peer's delayed ACK (about 40 ms on Linux): invisible under
/// concurrency, but it caps a sequential caller, like daprd delivering one Kafka
/// partition's messages in order, at about 25 calls per second.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
