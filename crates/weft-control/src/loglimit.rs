//! The control plane's rate-limited log lines: what a remote party can trigger at will (a port
//! scan of the gRPC port, a client retrying a bad certificate, a proxy reconnecting again and
//! again with a Hello the control plane refuses) is written at most once per kind and source IP
//! per [`DEFAULT_EVERY`], and the next line of that kind and source carries how many were left out
//! (`suppressed=N`). The limiter is shared with the proxy ([`weft_api::loglimit`]); a task of the
//! control plane flushes, every interval, counts no later line would report.

pub use weft_api::loglimit::DEFAULT_EVERY;

/// The control plane's rate limits (one per control plane, shared by its listeners).
pub type LogLimits = weft_api::loglimit::LogLimits<Kind>;

/// What a line is about, as its `kind` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A gRPC connection whose TLS handshake failed (logged at info: anyone can open one).
    GrpcRefused,
    /// A gRPC connection that did not finish its handshake and HTTP/2 preface in time (info).
    GrpcSlow,
    /// A proxy's discovery stream refused after its Hello (for instance a cluster its token or
    /// the MeshConfig does not allow): the proxy retries, so each retry would be a line.
    ProxyRefused,
}

impl weft_api::loglimit::LogKind for Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::GrpcRefused => "grpc-refused",
            Kind::GrpcSlow => "grpc-handshake-timeout",
            Kind::ProxyRefused => "proxy-refused",
        }
    }
    fn quiet(self) -> bool {
        matches!(self, Kind::GrpcRefused | Kind::GrpcSlow)
    }
}

/// Writes, every interval until the control plane stops, the counts held back that no later
/// line reported.
pub async fn flush(limits: std::sync::Arc<LogLimits>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(limits.every());
    loop {
        tokio::select! {
            _ = tick.tick() => weft_api::flush_limited!(limits),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
