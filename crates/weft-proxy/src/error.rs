//! Errors of the data path, classified so that metrics, logs and responses treat them alike.

use http::StatusCode;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("no endpoint available for service {0}")]
    NoEndpoint(String),
    /// The service is not in this proxy's routing table (yet): the control plane has not sent
    /// it, or it is not applied. Answered like [`ProxyError::NoEndpoint`] (`503 no-endpoint`).
    #[error("this proxy has no config for service {0} yet (is the Service applied, and has the control plane reached this proxy?)")]
    NoConfig(String),
    #[error("connect to {addr} failed: {source}")]
    Connect { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("connect to {0} timed out; is the peer proxy running and reachable?")]
    ConnectTimeout(std::net::SocketAddr),
    /// A pooled connection's PING went unanswered (`timeouts.peer_keepalive_timeout`).
    #[error("peer proxy at {0} stopped answering (no PONG within timeouts.peer_keepalive_timeout); is the network between the clusters partitioned?")]
    PeerUnresponsive(std::net::SocketAddr),
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("peer at {addr} is {got}, expected {expected}")]
    WrongIdentity { addr: std::net::SocketAddr, expected: String, got: String },
    #[error("upstream: {0}")]
    Upstream(#[source] crate::httputil::BoxError),
    #[error("local app: {0}")]
    App(String),
    /// A bound in `limits` was reached; the request was not forwarded and may be retried.
    #[error("overloaded: {0}; retry later")]
    Overloaded(&'static str),
    #[error("CONNECT to app port {0} is not allowed; set `allow_connect: true` on the port (inbound.ports, or `allowConnect` on the Service port) if its app is a forward proxy")]
    ConnectNotAllowed(u16),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A BackendPolicy `connectionLimits` limit of the service was reached (circuit breaking):
    /// not forwarded.
    #[error("the service's {} limit (BackendPolicy connectionLimits) is reached; retry later", .0.as_str())]
    Overflow(crate::balance::limits::Limit),
    /// A ResiliencePolicy's `timeouts.request` passed before the response head.
    #[error("no response within {0:?} (ResiliencePolicy timeouts.request)")]
    RequestTimeout(std::time::Duration),
    /// A ResiliencePolicy's `timeouts.perTry` passed before the response head (and no retry).
    #[error("no response within {0:?} (ResiliencePolicy timeouts.perTry)")]
    PerTryTimeout(std::time::Duration),
}

impl ProxyError {
    /// The HTTP status a client sees for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoEndpoint(_)
            | ProxyError::NoConfig(_)
            | ProxyError::Overloaded(_)
            | ProxyError::Overflow(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectTimeout(_)
            | ProxyError::PeerUnresponsive(_)
            | ProxyError::RequestTimeout(_)
            | ProxyError::PerTryTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ConnectNotAllowed(_) => StatusCode::FORBIDDEN,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short stable name, used as a metric label and in the `x-weft-error` header.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoEndpoint(_) | ProxyError::NoConfig(_) => "no-endpoint",
            ProxyError::Connect { .. } => "connect",
            ProxyError::ConnectTimeout(_) => "connect-timeout",
            ProxyError::PeerUnresponsive(_) => "peer-unresponsive",
            ProxyError::Tls { .. } => "tls",
            ProxyError::WrongIdentity { .. } => "wrong-identity",
            ProxyError::Upstream(_) => "upstream",
            ProxyError::App(_) => "app",
            ProxyError::Overloaded(_) => "overloaded",
            ProxyError::ConnectNotAllowed(_) => "connect-not-allowed",
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::Overflow(_) => "overflow",
            ProxyError::RequestTimeout(_) => "request-timeout",
            ProxyError::PerTryTimeout(_) => "per-try-timeout",
        }
    }
}
