//! Envoy's HTTP `ext_authz` service semantics: the request's method and path (after
//! `pathPrefix`) go to the service with `host`, `authorization` and the headers the provider
//! lists, and no body. A 2xx answer allows the request (copying `headersToUpstreamOnAllow` onto
//! it); a 5xx is a failed check; any other answer is the denial returned to the caller, with its
//! status, body and (`headersToDownstreamOnDeny`, else all) headers.

use super::connect::Connector;
use super::CheckError;
use crate::authz::custom::{Allow, Decision, Denial};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use weft_api::ext_authz::{ExtensionProvider, FRAMING_HEADERS};

/// The largest denial body passed to the caller.
const MAX_BODY: usize = 64 << 10;

/// Headers always sent, whatever the provider lists (Envoy's: `:authority` as `host`, and
/// `authorization`).
const ALWAYS_SENT: &[&str] = &["authorization"];

pub struct HttpClient {
    client: Client<Connector, Empty<Bytes>>,
    authority: http::uri::Authority,
}

impl HttpClient {
    pub fn new(spec: &ExtensionProvider, connector: Connector) -> Self {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build(connector);
        // Validated as host:port, so it is an authority.
        let authority = spec.address.parse().unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        HttpClient { client, authority }
    }

    pub async fn check(&self, spec: &ExtensionProvider, req: &http::request::Parts) -> Result<Decision, CheckError> {
        let check = self.request(spec, req)?;
        let answer = self.client.request(check).await.map_err(|e| CheckError::Unreachable {
            address: spec.address.clone(),
            reason: crate::control::causes(&e),
        })?;
        let (parts, body) = answer.into_parts();
        if parts.status.is_success() {
            return Ok(Decision::Allow(allow(spec, &parts.headers)));
        }
        if parts.status.is_server_error() {
            return Err(CheckError::Failed(format!("HTTP {}", parts.status)));
        }
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| CheckError::Malformed(format!("reading the denial's body: {e}")))?
            .to_bytes();
        Ok(Decision::Deny(deny(spec, parts.status, &parts.headers, body)))
    }

    /// The check request for `req`.
    fn request(
        &self,
        spec: &ExtensionProvider,
        req: &http::request::Parts,
    ) -> Result<Request<Empty<Bytes>>, CheckError> {
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path}", spec.path_prefix))
            .build()
            .map_err(|e| CheckError::Malformed(format!("the check request's URI: {e}")))?;
        let mut check = Request::builder().method(req.method.clone()).uri(uri);
        let host = req
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string));
        if let Some(host) = host {
            check = check.header(http::header::HOST, host);
        }
        let mut check = check.body(Empty::new()).map_err(|e| CheckError::Malformed(e.to_string()))?;
        let sent = ALWAYS_SENT.iter().copied().chain(spec.include_request_headers_in_check.iter().map(String::as_str));
        for name in sent {
            if name == "host" {
                continue;
            }
            for v in req.headers.get_all(name) {
                if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                    check.headers_mut().append(n, v.clone());
                }
            }
        }
        Ok(check)
    }
}

fn allow(spec: &ExtensionProvider, answer: &HeaderMap) -> Allow {
    let mut out = Allow::default();
    for name in &spec.headers_to_upstream_on_allow {
        let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else { continue };
        for (i, v) in answer.get_all(&n).iter().enumerate() {
            // The first value replaces the request's; further ones are added beside it.
            out.headers.push((n.clone(), v.clone(), i > 0));
        }
    }
    out
}

fn deny(spec: &ExtensionProvider, status: StatusCode, answer: &HeaderMap, body: Bytes) -> Denial {
    let wanted = |n: &HeaderName| {
        !FRAMING_HEADERS.contains(&n.as_str())
            && n != http::header::HOST
            && (spec.headers_to_downstream_on_deny.is_empty()
                || spec.headers_to_downstream_on_deny.iter().any(|w| w == n.as_str()))
    };
    let mut headers = HeaderMap::new();
    for (n, v) in answer.iter().filter(|(n, _)| wanted(n)) {
        headers.append(n.clone(), v.clone());
    }
    Denial {
        status,
        headers,
        body,
        reason: format!("extension provider {:?} denied the request (HTTP {status})", spec.name),
        failed: false,
    }
}
