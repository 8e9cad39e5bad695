//! Trace context in request headers: W3C Trace Context (`traceparent`, `tracestate`) and Zipkin's
//! B3 (the single `b3` header and the `X-B3-*` headers). Reading never fails: a malformed header
//! is ignored as if absent (W3C Trace Context §4.3: a bad `traceparent` restarts the trace).
//! Writing replaces the formats the caller used with this proxy's span as the parent, leaving
//! `tracestate` as it came.

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_api::trace::Propagation;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Which header formats a request's trace came in (and goes on in).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Formats {
    pub w3c: bool,
    pub b3_single: bool,
    pub b3_multi: bool,
}

/// A caller's trace, as read from a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: [u8; 16],
    /// The caller's span: the parent of the span this proxy makes.
    pub parent_id: [u8; 8],
    /// `Some(true)`/`Some(false)`: the caller decided; `None`: B3 deferred the decision to us.
    pub sampled: Option<bool>,
    pub formats: Formats,
    /// The B3 trace id was 64 bits (16 hex digits): written back the same way.
    pub b3_short: bool,
}

/// What [`extract`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// No usable trace context.
    None,
    /// A B3 header carrying only a sampling decision (`b3: 0`, `b3: 1`, `X-B3-Sampled` alone).
    DecisionOnly(bool),
    Trace(Incoming),
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Lowercase hex of exactly `N` bytes, not all zero.
fn parse_id<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = hex_val(pair[0])? << 4 | hex_val(pair[1])?;
    }
    (out != [0u8; N]).then_some(out)
}

/// A B3 trace id: 16 or 32 hex digits (case-insensitive, as B3 implementations write both); the
/// second value says it was 64 bits.
fn parse_b3_trace(s: &[u8]) -> Option<([u8; 16], bool)> {
    let lower: Vec<u8> = s.to_ascii_lowercase();
    match lower.len() {
        32 => parse_id::<16>(&lower).map(|id| (id, false)),
        16 => {
            let low = parse_id::<8>(&lower)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            Some((id, true))
        }
        _ => None,
    }
}

fn parse_b3_span(s: &[u8]) -> Option<[u8; 8]> {
    parse_id::<8>(&s.to_ascii_lowercase())
}

/// The only value of `name`; `None` when absent or repeated (an ambiguous trace is no trace).
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then(|| first.as_bytes())
}

/// `traceparent` (W3C Trace Context §3.2): `00-<32 hex>-<16 hex>-<2 hex>`; a later version may
/// append `-...` fields, which are ignored.
pub fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
    if v.len() < 55 {
        return None;
    }
    let version = hex_val(v[0])? << 4 | hex_val(v[1])?;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace = parse_id::<16>(&v[3..35])?;
    let parent = parse_id::<8>(&v[36..52])?;
    let flags = hex_val(v[53])? << 4 | hex_val(v[54])?;
    Some((trace, parent, flags & 1 == 1))
}

fn b3_sampled(v: &[u8]) -> Option<bool> {
    match v {
        b"1" | b"d" | b"true" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    }
}

/// The single `b3` header: `<trace>-<span>[-<sampled>[-<parent>]]`, or a lone sampling decision.
fn parse_b3_single(v: &[u8]) -> Found {
    if let Some(decision) = (v.len() == 1).then(|| b3_sampled(v)).flatten() {
        return Found::DecisionOnly(decision);
    }
    let mut parts = v.split(|b| *b == b'-');
    let (Some(trace), Some(span)) = (parts.next(), parts.next()) else { return Found::None };
    let (Some((trace_id, short)), Some(parent_id)) = (parse_b3_trace(trace), parse_b3_span(span)) else {
        return Found::None;
    };
    let sampled = match parts.next() {
        None => None,
        Some(s) => match b3_sampled(s) {
            Some(d) => Some(d),
            None => return Found::None,
        },
    };
    // The fourth part (the caller's parent) is not needed; more parts are malformed.
    if let Some(p) = parts.next() {
        if parse_b3_span(p).is_none() || parts.next().is_some() {
            return Found::None;
        }
    }
    let formats = Formats { b3_single: true, ..Formats::default() };
    Found::Trace(Incoming { trace_id, parent_id, sampled, formats, b3_short: short })
}

/// The `X-B3-*` headers.
fn parse_b3_multi(headers: &HeaderMap) -> Found {
    let debug = single(headers, &B3_FLAGS) == Some(b"1");
    let decision = if debug { Some(true) } else { single(headers, &B3_SAMPLED).and_then(b3_sampled) };
    let trace = single(headers, &B3_TRACE_ID).and_then(parse_b3_trace);
    let span = single(headers, &B3_SPAN_ID).and_then(parse_b3_span);
    match (trace, span) {
        (Some((trace_id, short)), Some(parent_id)) => Found::Trace(Incoming {
            trace_id,
            parent_id,
            sampled: decision,
            formats: Formats { b3_multi: true, ..Formats::default() },
            b3_short: short,
        }),
        _ => decision.map_or(Found::None, Found::DecisionOnly),
    }
}

/// The caller's trace in `headers`, read in the formats `allowed` lists: W3C first, then the
/// single `b3`, then `X-B3-*`. Every other format the caller also used (with any ids) is noted in
/// `formats`, so each is written back.
pub fn extract(headers: &HeaderMap, allowed: &[Propagation]) -> Found {
    let w3c_on = allowed.contains(&Propagation::W3c);
    let b3_on = allowed.contains(&Propagation::B3);
    let mut found = Found::None;
    if w3c_on {
        if let Some((trace_id, parent_id, sampled)) = single(headers, &TRACEPARENT).and_then(parse_traceparent) {
            found = Found::Trace(Incoming {
                trace_id,
                parent_id,
                sampled: Some(sampled),
                formats: Formats { w3c: true, ..Formats::default() },
                b3_short: false,
            });
        }
    }
    if b3_on {
        let single_b3 = single(headers, &B3).map_or(Found::None, parse_b3_single);
        let multi = if headers.contains_key(&B3_TRACE_ID) || headers.contains_key(&B3_SAMPLED) {
            parse_b3_multi(headers)
        } else {
            Found::None
        };
        for b3 in [single_b3, multi] {
            found = match (found, b3) {
                (Found::Trace(mut t), Found::Trace(b)) => {
                    t.formats.b3_single |= b.formats.b3_single;
                    t.formats.b3_multi |= b.formats.b3_multi;
                    if !t.formats.w3c {
                        t.b3_short |= b.b3_short;
                    } else {
                        t.b3_short = b.b3_short && t.trace_id[..8] == [0u8; 8];
                    }
                    Found::Trace(t)
                }
                (Found::Trace(t), _) => Found::Trace(t),
                (_, Found::Trace(b)) => Found::Trace(b),
                (Found::DecisionOnly(d), _) | (_, Found::DecisionOnly(d)) => Found::DecisionOnly(d),
                (Found::None, Found::None) => Found::None,
            };
        }
    }
    found
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

fn value(bytes: Vec<u8>) -> HeaderValue {
    // Only hex digits, '-' and '0'/'1': always a valid header value.
    HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The span the next hop is to take as its parent.
pub struct Outgoing<'a> {
    pub trace_id: &'a [u8; 16],
    pub span_id: &'a [u8; 8],
    /// This span's own parent (`X-B3-ParentSpanId`, the fourth part of `b3`).
    pub parent_id: Option<&'a [u8; 8]>,
    pub sampled: bool,
    pub b3_short: bool,
}

/// Writes `out` into `headers` in `formats`, replacing what was there (`tracestate` is left as
/// it came).
pub fn inject(headers: &mut HeaderMap, formats: Formats, out: &Outgoing<'_>) {
    let trace_b3: &[u8] = if out.b3_short { &out.trace_id[8..] } else { &out.trace_id[..] };
    if formats.w3c {
        let mut v = Vec::with_capacity(55);
        v.extend_from_slice(b"00-");
        hex(out.trace_id, &mut v);
        v.push(b'-');
        hex(out.span_id, &mut v);
        v.extend_from_slice(if out.sampled { b"-01" } else { b"-00" });
        headers.insert(TRACEPARENT, value(v));
    }
    if formats.b3_single {
        let mut v = Vec::with_capacity(68);
        hex(trace_b3, &mut v);
        v.push(b'-');
        hex(out.span_id, &mut v);
        v.extend_from_slice(if out.sampled { b"-1" } else { b"-0" });
        if let Some(p) = out.parent_id {
            v.push(b'-');
            hex(p, &mut v);
        }
        headers.insert(B3, value(v));
    }
    if formats.b3_multi {
        let mut t = Vec::with_capacity(32);
        hex(trace_b3, &mut t);
        headers.insert(B3_TRACE_ID, value(t));
        let mut s = Vec::with_capacity(16);
        hex(out.span_id, &mut s);
        headers.insert(B3_SPAN_ID, value(s));
        match out.parent_id {
            Some(p) => {
                let mut v = Vec::with_capacity(16);
                hex(p, &mut v);
                headers.insert(B3_PARENT_SPAN_ID, value(v));
            }
            None => {
                headers.remove(B3_PARENT_SPAN_ID);
            }
        }
        // A debug flag implies sampled; written as the plain decision from here on.
        headers.remove(B3_FLAGS);
        headers.insert(B3_SAMPLED, HeaderValue::from_static(if out.sampled { "1" } else { "0" }));
    }
}

/// A new trace this proxy did not sample: only the decision, so that the next proxies do not
/// sample it again.
pub fn inject_unsampled(headers: &mut HeaderMap, allowed: &[Propagation], trace_id: &[u8; 16]) {
    if allowed.contains(&Propagation::W3c) {
        let span_id: [u8; 8] = trace_id[8..].try_into().unwrap_or([1; 8]);
        let mut v = Vec::with_capacity(55);
        v.extend_from_slice(b"00-");
        hex(trace_id, &mut v);
        v.push(b'-');
        hex(&span_id, &mut v);
        v.extend_from_slice(b"-00");
        headers.insert(TRACEPARENT, value(v));
    }
    if allowed.contains(&Propagation::B3) {
        headers.insert(B3, HeaderValue::from_static("0"));
    }
}

/// The formats a trace this proxy starts is written in: W3C, and B3 as `X-B3-*` (what Envoy and
/// most B3 libraries read).
pub fn new_trace_formats(allowed: &[Propagation]) -> Formats {
    Formats { w3c: allowed.contains(&Propagation::W3c), b3_single: false, b3_multi: allowed.contains(&Propagation::B3) }
}

/// Lowercase hex, for logs and tests.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut v = Vec::with_capacity(bytes.len() * 2);
    hex(bytes, &mut v);
    String::from_utf8(v).unwrap_or_default()
}
