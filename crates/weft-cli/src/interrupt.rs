//! Ctrl-C and SIGTERM for `weft up`, listened for from the moment `weft up` starts, before it
//! creates anything (a network namespace, a bridge, a process), and remembered: a signal that
//! arrives while `weft up` is still starting ends the start ([`Interrupt::unless_interrupted`])
//! and everything made so far is stopped and removed, instead of the default action of SIGTERM
//! killing the process and leaving namespaces and veths behind. Once up, the demo traffic and the
//! wait for the end ([`Interrupt::wait`]) see the same signal, even one that came in between.
//!
//! ```text
//! signal ─► listener task ─► watch: true ─┬─► starting: the start is dropped, cleanup runs
//!                                         └─► running: demo traffic / wait ends, cleanup runs
//! ```

use tokio::sync::watch;

/// The signal, once it has come. Cheap to clone; every clone sees it.
#[derive(Clone)]
pub struct Interrupt(watch::Receiver<bool>);

/// What [`Interrupt::unless_interrupted`] fails with when the signal came first.
pub const INTERRUPTED: &str =
    "stopped by Ctrl-C/SIGTERM while starting; everything started so far was stopped and removed";

/// The next signal of `s`; never, when it could not be listened for.
async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

impl Interrupt {
    /// Installs the handlers (SIGINT and SIGTERM no longer end the process by themselves) and
    /// starts listening. Call from within the runtime, before creating anything.
    pub fn listen() -> Interrupt {
        use tokio::signal::unix::{signal, SignalKind};
        let (tx, rx) = watch::channel(false);
        // Registered here, synchronously: a signal from now on is caught even before the task
        // below first runs.
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        tokio::spawn(async move {
            tokio::select! {
                _ = recv(&mut term) => {}
                _ = recv(&mut int) => {}
            }
            tx.send_replace(true);
            // Stay registered: a second signal is caught too, while the cleanup runs.
            std::future::pending::<()>().await;
        });
        Interrupt(rx)
    }

    /// Whether the signal has come.
    pub fn interrupted(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the signal has come (at once if it already has).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|s| *s).await.is_err() {
            // The listener is gone (the runtime is shutting down): never resolves by itself.
            std::future::pending::<()>().await;
        }
    }

    /// Runs `start` (a part of starting up) unless the signal comes first (or came already): then
    /// `start` is dropped where it stands and the error [`INTERRUPTED`] returned, so the caller cleans up
    /// what was made so far.
    pub async fn unless_interrupted<T>(
        &self,
        start: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        if self.interrupted() {
            anyhow::bail!(INTERRUPTED);
        }
        tokio::select! {
            biased;
            _ = self.wait() => Err(anyhow::anyhow!(INTERRUPTED)),
            r = start => r,
        }
    }
}
