//! Fault injection at the caller's proxy: a fixed delay before the request is sent and an abort
//! answered at once without sending it (an HTTP status, or a gRPC status in a trailers-only
//! response), each for a percentage of the requests its match selects. The first fault whose
//! match fits the request applies.

use crate::httputil::{self as h, Body};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use std::time::Duration;
use weft_api::resilience::{Fault, GrpcCode};

pub struct Rule {
    path_prefix: Option<String>,
    headers: Vec<(HeaderName, String)>,
    delay: Option<(Duration, f64)>,
    abort: Option<(Abort, f64)>,
}

enum Abort {
    Http(StatusCode),
    Grpc(GrpcCode),
}

/// What a fault does to one request.
pub enum Injected {
    /// Nothing (no match, or the dice said no).
    None,
    /// Hold the request this long, then send it (or abort, if `abort` is set).
    Delay(Duration, Option<Response<Body>>),
    Abort(Response<Body>),
}

impl Rule {
    pub fn new(f: &Fault) -> Self {
        let m = f.matches.clone().unwrap_or_default();
        Rule {
            path_prefix: m.path_prefix.map(|p| p.trim_end_matches('/').to_string()),
            // Validated: names are tokens.
            headers: m
                .headers
                .iter()
                .filter_map(|(n, v)| Some((HeaderName::try_from(n.as_str()).ok()?, v.clone())))
                .collect(),
            delay: f.delay.as_ref().map(|d| (d.fixed.into(), d.percent)),
            abort: f.abort.as_ref().map(|a| {
                let what = match (a.http_status, a.grpc_status) {
                    (_, Some(code)) => Abort::Grpc(code),
                    (Some(s), None) => Abort::Http(StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)),
                    (None, None) => Abort::Http(StatusCode::SERVICE_UNAVAILABLE),
                };
                (what, a.percent)
            }),
        }
    }

    /// Whether the request is one this fault is for: its path under the prefix (at a `/`
    /// boundary) and every listed header present with its value.
    pub fn matches<B>(&self, req: &Request<B>) -> bool {
        if let Some(prefix) = &self.path_prefix {
            let path = req.uri().path();
            let under = path.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if !under {
                return false;
            }
        }
        self.headers.iter().all(|(n, v)| req.headers().get_all(n).iter().any(|got| got.as_bytes() == v.as_bytes()))
    }

    /// Rolls the dice for a matching request.
    pub fn roll(&self) -> Injected {
        let delay = self.delay.as_ref().filter(|(_, p)| super::chance(*p)).map(|(d, _)| *d);
        let abort = self.abort.as_ref().filter(|(_, p)| super::chance(*p)).map(|(a, _)| a.response());
        match (delay, abort) {
            (Some(d), abort) => Injected::Delay(d, abort),
            (None, Some(resp)) => Injected::Abort(resp),
            (None, None) => Injected::None,
        }
    }
}

impl Abort {
    fn response(&self) -> Response<Body> {
        let mut resp = match self {
            Abort::Http(status) => {
                let mut r = Response::new(h::full("weft-proxy: fault injected (ResiliencePolicy faults)\n"));
                *r.status_mut() = *status;
                r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                r
            }
            // Trailers-only: the status in the headers of a response with no body.
            Abort::Grpc(code) => {
                let mut r = Response::new(h::full(""));
                let headers = r.headers_mut();
                headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                headers.insert("grpc-status", HeaderValue::from(u16::from(code.0)));
                headers.insert("grpc-message", HeaderValue::from_static("fault injected"));
                r
            }
        };
        resp.headers_mut().insert(h::PROXY_ERROR, HeaderValue::from_static("fault-abort"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Rule {
        Rule::new(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn matches_by_path_prefix_at_a_boundary_and_headers() {
        let r = rule(
            r#"{"match":{"pathPrefix":"/pay/","headers":{"x-canary":"1"}},"abort":{"httpStatus":503,"percent":100}}"#,
        );
        let req = |path: &str, canary: Option<&str>| {
            let mut b = Request::builder().uri(path);
            if let Some(c) = canary {
                b = b.header("x-canary", c);
            }
            b.body(()).unwrap()
        };
        assert!(r.matches(&req("/pay", Some("1"))));
        assert!(r.matches(&req("/pay/x", Some("1"))));
        assert!(!r.matches(&req("/payment", Some("1"))));
        assert!(!r.matches(&req("/pay/x", Some("2"))));
        assert!(!r.matches(&req("/pay/x", None)));
        let Injected::Abort(resp) = r.roll() else { panic!("100 % abort") };
        assert_eq!(resp.status(), 503);
        let g = rule(r#"{"abort":{"grpcStatus":"unavailable","percent":100}}"#);
        let Injected::Abort(resp) = g.roll() else { panic!("100 % abort") };
        assert_eq!((resp.status().as_u16(), resp.headers()["grpc-status"].to_str().unwrap()), (200, "14"));
    }
}
