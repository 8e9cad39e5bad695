//! CUSTOM authorization: the decision on a request is delegated to an external authorizer named
//! by MeshConfig `extensionProviders` (see [`super::ext`]). [`check`] is the one entry point:
//! it never fails, it decides. A provider that is not declared, not reachable, too slow, or
//! answers garbage denies the request (fail closed) unless that provider sets `failOpen`.

use super::ext::Providers;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::net::SocketAddr;

/// What a check knows of the request besides its head: the connection it came on.
pub struct CheckContext<'a> {
    pub providers: &'a Providers,
    /// The caller's address, as this proxy accepted it.
    pub source: SocketAddr,
    /// The address the caller reached (this proxy's inbound listener, or the original
    /// destination in transparent mode).
    pub destination: SocketAddr,
    /// The caller's SPIFFE ID, verified from its certificate; `None` for plaintext.
    pub source_principal: Option<&'a str>,
    /// This proxy's own SPIFFE ID.
    pub destination_principal: Option<&'a str>,
}

/// The authorizer's decision.
#[derive(Debug)]
pub enum Decision {
    /// The request goes on, after [`Allow::apply`].
    Allow(Allow),
    /// The request is refused with this answer.
    Deny(Denial),
}

/// What an allowing authorizer changes.
#[derive(Debug, Default, Clone)]
pub struct Allow {
    /// Headers for the request sent on to the app: `(name, value, append)`; `append` false
    /// replaces the request's values of that name.
    pub headers: Vec<(HeaderName, HeaderValue, bool)>,
    /// Headers removed from the request sent on to the app.
    pub remove: Vec<HeaderName>,
    /// Headers added to the response returned to the caller.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Allow {
    /// Applies the header changes to the request's headers: removals, then replacements, then
    /// additions, in the authorizer's order.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        let mut replaced: Vec<&HeaderName> = vec![];
        for (n, v, append) in &self.headers {
            if *append || replaced.contains(&n) {
                headers.append(n.clone(), v.clone());
            } else {
                headers.insert(n.clone(), v.clone());
                replaced.push(n);
            }
        }
    }
}

/// A refusal: the answer for the caller, and why (for logs and metrics).
#[derive(Debug, Clone)]
pub struct Denial {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub reason: String,
    /// The check failed (no usable answer) rather than the authorizer saying no.
    pub failed: bool,
}

impl Denial {
    /// The HTTP answer for the caller.
    pub fn response(&self) -> http::Response<Bytes> {
        let mut r = http::Response::new(self.body.clone());
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers.clone();
        r
    }

    fn failed(status: StatusCode, reason: String) -> Denial {
        Denial { status, headers: HeaderMap::new(), body: Bytes::new(), reason, failed: true }
    }
}

/// Asks `provider` whether the request with head `req` may go on.
pub async fn check(ctx: &CheckContext<'_>, provider: &str, req: &http::request::Parts) -> Decision {
    let Some(p) = ctx.providers.get(provider) else {
        let reason = format!(
            "no extension provider named {provider:?} (known: {:?}); declare it in MeshConfig `extensionProviders`",
            ctx.providers.names()
        );
        tracing::warn!(provider, "CUSTOM authorization denied the request: {reason}");
        ctx.providers.count(provider, "failed_closed");
        return Decision::Deny(Denial::failed(StatusCode::FORBIDDEN, reason));
    };
    match p.ask(ctx, req).await {
        Ok(d) => {
            ctx.providers.count(provider, if matches!(d, Decision::Allow(_)) { "allow" } else { "deny" });
            d
        }
        Err(e) => {
            let spec = p.spec();
            let reason = format!("extension provider {provider:?} at {} failed: {e}", spec.address);
            if spec.fail_open {
                tracing::warn!(provider, "{reason}; allowing the request (failOpen)");
                ctx.providers.count(provider, "failed_open");
                Decision::Allow(Allow::default())
            } else {
                tracing::warn!(provider, "{reason}; denying the request (fail closed)");
                ctx.providers.count(provider, "failed_closed");
                let status = StatusCode::from_u16(spec.status_on_error).unwrap_or(StatusCode::FORBIDDEN);
                Decision::Deny(Denial::failed(status, reason))
            }
        }
    }
}
