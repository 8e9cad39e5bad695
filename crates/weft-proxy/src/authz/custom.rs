//! CUSTOM policies: the extension provider named by the policy decides (Envoy ext_authz, HTTP
//! or gRPC). The client is slice S3's (`authz::ext`); until it is wired in, every check fails
//! closed with a reason that says so.

use crate::httputil::Body;
use crate::Ctx;
use http::{HeaderMap, Method, Response, Uri};

/// What the provider is asked about.
pub struct CheckRequest<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The caller's verified SPIFFE ID, if any.
    pub principal: Option<&'a str>,
    pub source: std::net::SocketAddr,
}

/// The provider's answer.
pub enum Decision {
    Allow,
    /// Denied: `reason` for logs; `response`, when the provider gave one, is what the caller gets
    /// (Envoy's HTTP ext_authz semantics), else the proxy's own 403 / PERMISSION_DENIED.
    Deny {
        reason: String,
        response: Option<Response<Body>>,
    },
}

/// Asks `provider` about `req`. Fails closed.
pub async fn check(_ctx: &Ctx, provider: &str, _req: &CheckRequest<'_>) -> Decision {
    Decision::Deny {
        reason: format!(
            "extension provider {provider:?} cannot be called: no ext_authz client in this build (fail closed)"
        ),
        response: None,
    }
}
