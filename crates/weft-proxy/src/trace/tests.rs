use super::propagation::*;
use super::*;
use http::HeaderMap;
use weft_api::trace::{OtlpExporter, Propagation};

const BOTH: &[Propagation] = &[Propagation::W3c, Propagation::B3];
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    h
}

fn trace(found: Found) -> Incoming {
    match found {
        Found::Trace(t) => t,
        other => panic!("no trace: {other:?}"),
    }
}

#[test]
fn w3c_traceparent_is_read() {
    let t = trace(extract(&headers(&[("traceparent", TP)]), BOTH));
    assert_eq!(to_hex(&t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(to_hex(&t.parent_id), "00f067aa0ba902b7");
    assert_eq!(t.sampled, Some(true));
    assert!(t.formats.w3c && !t.formats.b3_single && !t.formats.b3_multi);
    let t = trace(extract(&headers(&[("traceparent", &TP.replace("-01", "-00"))]), BOTH));
    assert_eq!(t.sampled, Some(false));
    // A later version may add fields after a '-'.
    let later = format!("cc{}-what-comes-next", &TP[2..]);
    assert!(matches!(extract(&headers(&[("traceparent", &later)]), BOTH), Found::Trace(_)));
}

#[test]
fn malformed_traceparent_is_ignored_not_a_panic() {
    let bad = [
        "",
        "00",
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ];
    for v in bad {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, http::HeaderValue::from_bytes(v.as_bytes()).unwrap());
        assert_eq!(extract(&h, BOTH), Found::None, "{v:?}");
    }
    // Two traceparent headers: ambiguous, ignored.
    assert_eq!(extract(&headers(&[("traceparent", TP), ("traceparent", TP)]), BOTH), Found::None);
    // Not read when W3C is not configured.
    assert_eq!(extract(&headers(&[("traceparent", TP)]), &[Propagation::B3]), Found::None);
}

#[test]
fn b3_single_and_multi_are_read() {
    let t = trace(extract(
        &headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")]),
        BOTH,
    ));
    assert_eq!(to_hex(&t.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(to_hex(&t.parent_id), "e457b5a2e4d86bd1");
    assert_eq!((t.sampled, t.formats.b3_single, t.b3_short), (Some(true), true, false));
    // 64-bit trace id, no decision (deferred).
    let t = trace(extract(&headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1")]), BOTH));
    assert_eq!(to_hex(&t.trace_id), "000000000000000064fe8b2a57d3eff7");
    assert_eq!((t.sampled, t.b3_short), (None, true));
    assert_eq!(extract(&headers(&[("b3", "0")]), BOTH), Found::DecisionOnly(false));
    assert_eq!(extract(&headers(&[("b3", "d")]), BOTH), Found::DecisionOnly(true));
    for bad in ["x", "64fe8b2a57d3eff7", "64fe8b2a57d3eff7-", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-7", "a-b-c-d-e"] {
        assert_eq!(extract(&headers(&[("b3", bad)]), BOTH), Found::None, "{bad:?}");
    }
    let t = trace(extract(
        &headers(&[
            ("X-B3-TraceId", "80F198EE56343BA864FE8B2A57D3EFF7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-Sampled", "1"),
        ]),
        BOTH,
    ));
    assert_eq!((to_hex(&t.parent_id).as_str(), t.sampled, t.formats.b3_multi), ("e457b5a2e4d86bd1", Some(true), true));
    let t = trace(extract(
        &headers(&[("X-B3-TraceId", "64fe8b2a57d3eff7"), ("X-B3-SpanId", "e457b5a2e4d86bd1"), ("X-B3-Flags", "1")]),
        BOTH,
    ));
    assert_eq!(t.sampled, Some(true), "debug implies sampled");
    assert_eq!(extract(&headers(&[("X-B3-Sampled", "0")]), BOTH), Found::DecisionOnly(false));
    assert_eq!(extract(&headers(&[("X-B3-TraceId", "zz"), ("X-B3-SpanId", "e457b5a2e4d86bd1")]), BOTH), Found::None);
    assert_eq!(extract(&headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1")]), &[Propagation::W3c]), Found::None);
}

#[test]
fn w3c_wins_and_every_format_the_caller_used_is_noted() {
    let t = trace(extract(
        &headers(&[("traceparent", TP), ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]),
        BOTH,
    ));
    assert_eq!(to_hex(&t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(t.formats.w3c && t.formats.b3_single && !t.formats.b3_multi);
}

#[test]
fn inject_round_trips_in_every_format() {
    let (tid, sid, pid) = ([7u8; 16], [9u8; 8], [3u8; 8]);
    let out = Outgoing { trace_id: &tid, span_id: &sid, parent_id: Some(&pid), sampled: true, b3_short: false };
    let mut h = headers(&[("x-b3-flags", "1"), ("tracestate", "a=b")]);
    inject(&mut h, Formats { w3c: true, b3_single: true, b3_multi: true }, &out);
    assert_eq!(h["traceparent"], "00-07070707070707070707070707070707-0909090909090909-01");
    assert_eq!(h["b3"], "07070707070707070707070707070707-0909090909090909-1-0303030303030303");
    assert_eq!(h["x-b3-spanid"], "0909090909090909");
    assert_eq!(h["x-b3-parentspanid"], "0303030303030303");
    assert_eq!(h["x-b3-sampled"], "1");
    assert!(!h.contains_key("x-b3-flags"));
    assert_eq!(h["tracestate"], "a=b", "left as it came");
    for one in [Formats { w3c: true, ..Default::default() }, Formats { b3_single: true, ..Default::default() }] {
        let mut h = HeaderMap::new();
        inject(&mut h, one, &out);
        let t = trace(extract(&h, BOTH));
        assert_eq!((t.trace_id, t.parent_id, t.sampled), (tid, sid, Some(true)));
    }
    // A 64-bit B3 trace id goes on as 64 bits.
    let short = [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let out = Outgoing { trace_id: &short, span_id: &sid, parent_id: None, sampled: false, b3_short: true };
    let mut h = HeaderMap::new();
    inject(&mut h, Formats { b3_multi: true, ..Default::default() }, &out);
    assert_eq!(h["x-b3-traceid"], "0102030405060708");
    assert_eq!(h["x-b3-sampled"], "0");
}

fn tracer(sampling: f64) -> Arc<Tracer> {
    tracer_with(sampling, BOTH)
}

fn tracer_with(sampling: f64, propagation: &[Propagation]) -> Arc<Tracer> {
    let spec = TracingSpec {
        sampling,
        otlp: OtlpExporter { endpoint: "http://127.0.0.1:9".into(), timeout: weft_api::Duration::from_secs(1) },
        propagation: propagation.to_vec(),
    };
    let (queue, rx) = tokio::sync::mpsc::channel(1);
    std::mem::forget(rx);
    Arc::new(Tracer {
        threshold: threshold(sampling),
        spec,
        queue,
        metrics: Metrics::default(),
        cluster: "east".into(),
    })
}

fn request(pairs: &[(&str, &str)]) -> Request<()> {
    let mut r = Request::get("http://api.demo/items?x=1").body(()).unwrap();
    *r.headers_mut() = headers(pairs);
    r
}

#[test]
fn a_caller_trace_is_continued_with_this_span_as_parent() {
    let t = tracer(0.0);
    let mut req = request(&[
        ("traceparent", TP),
        ("X-B3-TraceId", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("X-B3-SpanId", "00f067aa0ba902b7"),
    ]);
    let span = t.start(Kind::Client, &mut req).expect("the caller sampled it: kept even at 0 %");
    assert_eq!(to_hex(span.trace_id()), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.parent_id, Some(*b"\x00\xf0\x67\xaa\x0b\xa9\x02\xb7"));
    let next = trace(extract(req.headers(), BOTH));
    assert_eq!(next.parent_id, *span.span_id(), "the next hop's parent is this span");
    assert_eq!(req.headers()["x-b3-spanid"], to_hex(span.span_id()).as_str(), "B3 rewritten too");
    assert_eq!(req.headers()["x-b3-parentspanid"], "00f067aa0ba902b7");
    assert_eq!((span.method.as_str(), span.path.as_str(), span.authority.as_str()), ("GET", "/items", "api.demo"));

    // Not sampled by the caller: no span, headers untouched.
    let unsampled = TP.replace("-01", "-00");
    let mut req = request(&[("traceparent", &unsampled)]);
    assert!(tracer(100.0).start(Kind::Server, &mut req).is_none());
    assert_eq!(req.headers()["traceparent"], unsampled.as_str());
}

#[test]
fn a_new_trace_is_sampled_per_the_rate_and_carries_its_decision() {
    let mut req = request(&[]);
    let span = tracer(100.0).start(Kind::Client, &mut req).expect("100 % samples every request");
    assert_eq!(span.parent_id, None);
    let next = trace(extract(req.headers(), BOTH));
    assert_eq!((next.trace_id, next.parent_id, next.sampled), (*span.trace_id(), *span.span_id(), Some(true)));
    assert!(next.formats.w3c && next.formats.b3_multi);

    // A bad traceparent starts a new trace, and its tracestate goes with it.
    let mut req = request(&[("traceparent", "00-zz"), ("tracestate", "k=v")]);
    let span = tracer(100.0).start(Kind::Client, &mut req).unwrap();
    assert_eq!(span.parent_id, None);
    assert!(!req.headers().contains_key("tracestate"));

    let mut req = request(&[]);
    assert!(tracer(0.0).start(Kind::Client, &mut req).is_none());
    assert_eq!(trace(extract(req.headers(), BOTH)).sampled, Some(false), "the next hop keeps the decision");
    assert_eq!(req.headers()["b3"], "0", "B3's deny-only form");
    assert!(!req.headers().contains_key("x-b3-traceid"));
    let mut b3_only = request(&[]);
    assert!(tracer_with(0.0, &[Propagation::B3]).start(Kind::Client, &mut b3_only).is_none());
    assert_eq!(extract(b3_only.headers(), BOTH), Found::DecisionOnly(false));

    let sampled = (0..10_000).filter(|_| tracer(10.0).start(Kind::Client, &mut request(&[])).is_some()).count();
    assert!((500..1500).contains(&sampled), "about 10 % of 10,000: {sampled}");
    // Ids differ from request to request.
    let a = tracer(100.0).start(Kind::Client, &mut request(&[])).unwrap();
    let b = tracer(100.0).start(Kind::Client, &mut request(&[])).unwrap();
    assert_ne!(a.trace_id(), b.trace_id());
}

#[test]
fn a_full_queue_drops_and_counts() {
    let t = tracer(100.0);
    for _ in 0..3 {
        t.start(Kind::Server, &mut request(&[])).unwrap().end(200);
    }
    assert_eq!(t.metrics.spans.get_or_create(&SpanOutcome { outcome: "dropped" }).get(), 2);
}
