//! Envoy's gRPC external authorization API as a client: `envoy.service.auth.v3.Authorization/
//! Check` (the subset in `weft-api/proto/envoy/`). The request is described as Envoy describes
//! it (source and destination peers with their SPIFFE IDs, method, path, host, every header
//! with the pseudo-headers, no body); `status.code` OK allows it, with the headers of
//! `ok_response` set on it; any other code denies it with `denied_response` (403 when it gives
//! no status).

use super::connect::Connector;
use super::CheckError;
use crate::authz::custom::{Allow, CheckContext, Decision, Denial};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::collections::HashMap;
use tonic::transport::{Channel, Endpoint};
use weft_api::envoy_auth as pb;
use weft_api::envoy_auth::authorization_client::AuthorizationClient;
use weft_api::ext_authz::{ExtensionProvider, FRAMING_HEADERS};
use weft_api::ConfigError;

/// The largest CheckResponse read.
const MAX_RESPONSE: usize = 1 << 20;

pub struct GrpcClient {
    name: String,
    address: String,
    client: AuthorizationClient<Channel>,
}

impl GrpcClient {
    pub fn new(spec: &ExtensionProvider, connector: Connector) -> Result<Self, ConfigError> {
        let ep = Endpoint::from_shared(format!("http://{}", spec.address))
            .map_err(|e| ConfigError::invalid("address", format!("{:?}: {e}", spec.address)))?
            .timeout(spec.timeout.into())
            .connect_timeout(spec.timeout.into());
        // Connected on the first check, and again after the connection fails.
        let channel = ep.connect_with_connector_lazy(connector);
        let client = AuthorizationClient::new(channel).max_decoding_message_size(MAX_RESPONSE);
        Ok(GrpcClient { name: spec.name.clone(), address: spec.address.clone(), client })
    }

    pub async fn check(&self, ctx: &CheckContext<'_>, req: &http::request::Parts) -> Result<Decision, CheckError> {
        let answer = self.client.clone().check(check_request(ctx, req)).await.map_err(|s| match s.code() {
            tonic::Code::Unavailable => {
                CheckError::Unreachable { address: self.address.clone(), reason: crate::control::causes(&s) }
            }
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => CheckError::Failed(s.message().to_string()),
            _ => CheckError::Failed(format!("{:?}: {}", s.code(), s.message())),
        })?;
        Ok(decision(&self.name, answer.into_inner()))
    }
}

fn peer(addr: std::net::SocketAddr, principal: Option<&str>) -> pb::attribute_context::Peer {
    pb::attribute_context::Peer {
        address: Some(pb::Address {
            address: Some(pb::address::Address::SocketAddress(pb::SocketAddress {
                protocol: 0,
                address: addr.ip().to_string(),
                port_specifier: Some(pb::socket_address::PortSpecifier::PortValue(addr.port().into())),
            })),
        }),
        principal: principal.unwrap_or_default().to_string(),
        ..Default::default()
    }
}

/// The CheckRequest Envoy would send for `req`.
fn check_request(ctx: &CheckContext<'_>, req: &http::request::Parts) -> pb::CheckRequest {
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .unwrap_or_default();
    let scheme = req.uri.scheme_str().unwrap_or("http").to_string();
    let mut headers: HashMap<String, String> = HashMap::new();
    for (n, v) in &req.headers {
        let v = String::from_utf8_lossy(v.as_bytes());
        headers.entry(n.as_str().to_string()).and_modify(|e| *e = format!("{e},{v}")).or_insert_with(|| v.into());
    }
    headers.insert(":method".into(), req.method.as_str().into());
    headers.insert(":path".into(), path.clone());
    headers.insert(":authority".into(), host.clone());
    headers.insert(":scheme".into(), scheme.clone());
    let size =
        req.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<i64>().ok()).unwrap_or(-1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let protocol = match req.version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    };
    pb::CheckRequest {
        attributes: Some(pb::AttributeContext {
            source: Some(peer(ctx.source, ctx.source_principal)),
            destination: Some(peer(ctx.destination, ctx.destination_principal)),
            request: Some(pb::attribute_context::Request {
                time: Some(pb::Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 }),
                http: Some(pb::attribute_context::HttpRequest {
                    id: req.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().into(),
                    method: req.method.as_str().into(),
                    headers,
                    path,
                    host,
                    scheme,
                    size,
                    protocol: protocol.into(),
                    ..Default::default()
                }),
            }),
            context_extensions: HashMap::new(),
            tls_session: None,
        }),
    }
}

/// A header the authorizer sets; `None` for one that is not a valid header or that frames the
/// message (the proxy's own: an authorizer's `content-length` would reframe the request).
fn header(o: &pb::HeaderValueOption) -> Option<(HeaderName, HeaderValue, bool)> {
    let h = o.header.as_ref()?;
    let name = HeaderName::from_bytes(h.key.as_bytes()).ok()?;
    if FRAMING_HEADERS.contains(&name.as_str()) {
        return None;
    }
    let raw = if h.raw_value.is_empty() { h.value.as_bytes() } else { &h.raw_value };
    let value = HeaderValue::from_bytes(raw).ok()?;
    // Envoy: in these messages `append` defaults to false (the value replaces the request's).
    Some((name, value, o.append.as_ref().is_some_and(|a| a.value)))
}

/// The decision a CheckResponse says.
fn decision(provider: &str, r: pb::CheckResponse) -> Decision {
    let code = r.status.as_ref().map_or(0, |s| s.code);
    if code == 0 {
        let mut allow = Allow::default();
        if let Some(pb::check_response::HttpResponse::OkResponse(ok)) = &r.http_response {
            allow.headers = ok.headers.iter().filter_map(header).collect();
            allow.remove = ok
                .headers_to_remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .filter(|n| !FRAMING_HEADERS.contains(&n.as_str()))
                .collect();
            allow.response_headers =
                ok.response_headers_to_add.iter().filter_map(header).map(|(n, v, _)| (n, v)).collect();
        }
        return Decision::Allow(allow);
    }
    let message = r.status.as_ref().map(|s| s.message.clone()).unwrap_or_default();
    let mut status = StatusCode::FORBIDDEN;
    let mut headers = HeaderMap::new();
    let mut body = bytes::Bytes::new();
    if let Some(pb::check_response::HttpResponse::DeniedResponse(d)) = r.http_response {
        if let Some(s) = d.status.and_then(|s| u16::try_from(s.code).ok()).and_then(|c| StatusCode::from_u16(c).ok()) {
            // An enum value 0 (Empty) or a non-error code keeps the default 403.
            if s.as_u16() >= 400 {
                status = s;
            }
        }
        for (n, v, _) in d.headers.iter().filter_map(header) {
            headers.append(n, v);
        }
        body = d.body.into();
    }
    let why = if message.is_empty() { String::new() } else { format!(": {message}") };
    Decision::Deny(Denial {
        status,
        headers,
        body,
        reason: format!("extension provider {provider:?} denied the request (gRPC code {code}{why})"),
        failed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_without_a_status_is_403_and_ok_with_headers_allows() {
        let deny = pb::CheckResponse {
            status: Some(pb::Status { code: 7, message: "no".into() }),
            http_response: Some(pb::check_response::HttpResponse::DeniedResponse(pb::DeniedHttpResponse {
                status: Some(pb::HttpStatus { code: 0 }),
                headers: vec![],
                body: "go away".into(),
            })),
        };
        let Decision::Deny(d) = decision("opa", deny) else { panic!("allowed") };
        assert_eq!(d.status, StatusCode::FORBIDDEN);
        assert_eq!(d.body, "go away");
        assert!(d.reason.contains("code 7: no"), "{}", d.reason);
        let ok = pb::CheckResponse {
            status: Some(pb::Status { code: 0, message: String::new() }),
            http_response: Some(pb::check_response::HttpResponse::OkResponse(pb::OkHttpResponse {
                headers: vec![
                    pb::HeaderValueOption {
                        header: Some(pb::HeaderValue { key: "x-user".into(), value: "ann".into(), raw_value: vec![] }),
                        append: None,
                        append_action: 0,
                    },
                    pb::HeaderValueOption {
                        header: Some(pb::HeaderValue {
                            key: "content-length".into(),
                            value: "0".into(),
                            raw_value: vec![],
                        }),
                        append: None,
                        append_action: 0,
                    },
                ],
                headers_to_remove: vec!["authorization".into(), "transfer-encoding".into()],
                response_headers_to_add: vec![],
            })),
        };
        let Decision::Allow(a) = decision("opa", ok) else { panic!("denied") };
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("mallory"));
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        h.insert("content-length", HeaderValue::from_static("5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        a.apply(&mut h);
        assert_eq!(h["content-length"], "5", "an authorizer does not reframe the request");
        assert_eq!(h["transfer-encoding"], "chunked");
        assert_eq!(h.get_all("x-user").iter().collect::<Vec<_>>(), ["ann"]);
        assert!(h.get("authorization").is_none());
    }
}
