//! The signals that stop a service.

use std::future::Future;

/// Resolves on the first SIGTERM or Ctrl-C (SIGINT).
///
/// The handlers are installed by this call, not when the future is first polled: call it
/// before binding the listeners. A SIGTERM that arrives after the port is open but before
/// the server awaits this would otherwise take the default action and kill the process
/// without a graceful shutdown. Must be called on a Tokio runtime.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(err) => {
                tracing::error!(%err, "cannot listen for {name}");
                None
            }
        };
        let mut interrupt = listen(SignalKind::interrupt(), "Ctrl-C");
        let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
        async move {
            tokio::select! {
                () = next(&mut interrupt) => tracing::info!("received Ctrl-C"),
                () = next(&mut terminate) => tracing::info!("received SIGTERM"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("received Ctrl-C");
    }
}

/// The next signal on `stream`; never, if it could not be listened for.
#[cfg(unix)]
async fn next(stream: &mut Option<tokio::signal::unix::Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    /// The handler is in place as soon as `signal()` returns, before anything polls it:
    /// without that, this SIGTERM would kill the test process.
    #[tokio::test]
    async fn sigterm_before_the_first_poll_is_caught() {
        let stop = super::signal();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()));
        let caught = tokio::time::timeout(Duration::from_secs(5), stop).await;
        assert!(caught.is_ok(), "SIGTERM not seen within 5 s");
    }
}
