//! The proxy's rate-limited warnings: what a remote party can trigger at will (a port scan, a
//! client retrying a bad certificate, an app that is down) is written at most once per kind and
//! source per [`EVERY`], with the count left out on the next line (`suppressed=N`); the limiter
//! itself is shared with the control plane ([`weft_api::loglimit`]). The proxy's own task flushes
//! counts no later line would report, every [`EVERY`].

pub use weft_api::loglimit::DEFAULT_EVERY as EVERY;
pub(crate) use weft_api::warn_limited;

/// The rate limits of one proxy.
pub type LogLimits = weft_api::loglimit::LogLimits<Kind>;

/// What went wrong, as the `kind` of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An inbound TLS handshake that failed or timed out.
    Handshake,
    /// A request the proxy answered 502.
    BadGateway,
    /// The server sidecar could not connect to its app.
    AppRefused,
    /// A client that did not send its request head (HTTP/1) or preface (HTTP/2) within
    /// `timeouts.header_read`.
    HeaderRead,
    /// A listener stopped accepting at `limits.max_connections`.
    ConnectionLimit,
    /// The gateway refused a connection, for this reason (its metric label).
    GatewayRefusal(&'static str),
    /// Outlier detection ejected an endpoint (source: the endpoint's proxy host).
    Ejection,
    /// Plaintext refused by an inbound port whose mTLS mode is STRICT.
    Plaintext,
}

impl weft_api::loglimit::LogKind for Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Handshake => "handshake",
            Kind::BadGateway => "bad-gateway",
            Kind::AppRefused => "app-refused",
            Kind::HeaderRead => "header-read-timeout",
            Kind::ConnectionLimit => "connection-limit",
            Kind::GatewayRefusal(reason) => reason,
            Kind::Ejection => "ejection",
            Kind::Plaintext => "plaintext",
        }
    }
    /// The gateway logs its refusals at info (anyone can send it a wrong SNI), except a caller
    /// reaching for an endpoint it may not (see `gateway::refuse`).
    fn quiet(self) -> bool {
        matches!(self, Kind::GatewayRefusal(reason) if reason != "endpoint-not-allowed")
    }
}
