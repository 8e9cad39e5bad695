//! `ResiliencePolicy`: retries with a budget, timeouts, fault injection and a local rate limit for
//! one Service (or one HTTPRoute or GRPCRoute, or one of its rules), attached Gateway-API style through `spec.targetRef`.
//!
//! One kind with four sections rather than four kinds: they apply to the same requests in one
//! fixed order (rate limit at the server's proxy; then fault, request timeout, tries with their
//! per-try timeout, retry, at the caller's), a reader sees the whole behaviour of a target in
//! one place, and the proxy looks up one compiled object per request instead of four. Each
//! section is optional; an empty section is refused (it would do nothing).
//!
//! What each field does, with a worked example, is in docs/traffic.md; the proxy applies it in
//! `weft-proxy`'s `resilience` module. The same type is the proxy config file's
//! `services[].resilience` and what the control plane sends (as JSON, checked again by the proxy).

use crate::{valid_name, ConfigError, Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default number of retries after the first try (Istio's default).
pub const DEFAULT_ATTEMPTS: u32 = 2;
/// Default first backoff; the n-th retry waits up to `base × 2ⁿ⁻¹` (full jitter), at most `max`.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Retry budget defaults (Linkerd's): retries may add 20 % to the requests of the last 10 s, plus
/// 10 retries per second whatever the traffic.
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Largest request body buffered so the request can be sent again. A larger body (or one that
/// turns out larger while it streams) is sent once, never retried.
pub const DEFAULT_MAX_RETRY_BODY_BYTES: u64 = 64 * 1024;
/// Upper bound of `maxBodyBytes`: every retryable request in flight may hold this much.
pub const MAX_RETRY_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// Most callers a per-caller rate limit tracks; beyond it new callers share one bucket.
pub const MAX_RATE_LIMIT_CALLERS: usize = 10_000;

/// The kinds a policy may attach to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TargetKind {
    Service,
    /// A Gateway API HTTPRoute, or one of its rules (`sectionName`: the rule's name).
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    /// A Gateway API GRPCRoute, or one of its rules (`sectionName`: the rule's name).
    #[serde(rename = "GRPCRoute")]
    GrpcRoute,
}

impl TargetKind {
    /// The kind as written in `targetRef.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Service => "Service",
            TargetKind::HttpRoute => "HTTPRoute",
            TargetKind::GrpcRoute => "GRPCRoute",
        }
    }

    /// A route kind (its rules are sections a policy may name).
    pub fn is_route(self) -> bool {
        matches!(self, TargetKind::HttpRoute | TargetKind::GrpcRoute)
    }
}

/// What the policy attaches to, in the policy's namespace (Gateway API `LocalPolicyTargetReference`
/// plus `sectionName`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    /// `Service`, `HTTPRoute` or `GRPCRoute`.
    pub kind: TargetKind,
    pub name: String,
    /// With `kind: HTTPRoute` or `GRPCRoute`: the name of one rule of the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResiliencePolicySpec {
    pub target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Faults injected at the caller's proxy: the first entry whose match fits the request applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// The resilience settings a proxy applies to one service: a [`ResiliencePolicySpec`] without
/// its target (the proxy config's `services[].resilience`, and what the control plane sends).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resilience {
    /// The policy's `namespace/name` (for `/config_dump` and logs); empty in a local config.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

impl ResiliencePolicySpec {
    /// What a proxy applies, for the policy `namespace/name`.
    pub fn resilience(&self, policy: String) -> Resilience {
        Resilience {
            policy,
            retry: self.retry.clone(),
            timeouts: self.timeouts.clone(),
            faults: self.faults.clone(),
            rate_limit: self.rate_limit.clone(),
        }
    }
}

/// Conditions a try's outcome is retried on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RetryOn {
    /// Any 5xx response, a reset, a failed connect or a per-try timeout.
    #[serde(rename = "5xx")]
    Status5xx,
    /// 502, 503, 504, a failed connect or a per-try timeout.
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// No connection could be opened to any endpoint (nothing was sent).
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The stream or connection was reset before the response came.
    #[serde(rename = "reset")]
    Reset,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retry {
    /// Retries after the first try (Istio's `attempts`): 2 means at most 3 tries. At least 1.
    #[serde(default = "d_attempts")]
    pub attempts: u32,
    /// Conditions retried on: `5xx`, `gateway-error`, `connect-failure`, `reset`. Default
    /// `[connect-failure, gateway-error, reset]`.
    #[serde(default = "d_retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// Response statuses retried on besides `retryOn` (e.g. `[409]`), 100-599.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u16>,
    /// gRPC statuses retried on (the `grpc-status` of a trailers-only response), by name
    /// (`unavailable`, `resource-exhausted`, `deadline-exceeded`...) or number. A gRPC call is
    /// retried on these whatever `methods` says (gRFC A6); a status in real trailers, after a
    /// response head, is never retried (the call is committed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_status_codes: Vec<GrpcCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Largest request body kept for replay (bytes): buffered when its length is known, copied
    /// as it streams when not (then retried only if it had ended). Default 65536, at most 16 MiB.
    #[serde(default = "d_max_body", rename = "maxBodyBytes")]
    pub max_body_bytes: u64,
    /// Methods retried. Default: the idempotent ones (GET, HEAD, OPTIONS, TRACE, PUT, DELETE).
    /// List POST here only when the service makes it safe to repeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

fn d_attempts() -> u32 {
    DEFAULT_ATTEMPTS
}
fn d_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure, RetryOn::GatewayError, RetryOn::Reset]
}
fn d_max_body() -> u64 {
    DEFAULT_MAX_RETRY_BODY_BYTES
}

/// Exponential backoff with full jitter: the n-th retry waits a random time in `[0, min(max, base × 2ⁿ⁻¹)]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backoff {
    #[serde(default = "d_base")]
    pub base: Duration,
    #[serde(default = "d_max")]
    pub max: Duration,
}

fn d_base() -> Duration {
    DEFAULT_BACKOFF_BASE
}
fn d_max() -> Duration {
    DEFAULT_BACKOFF_MAX
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: d_base(), max: d_max() }
    }
}

/// The retry budget (Finagle's and Linkerd's): over the last `window`, retries may be at most
/// `ratio` × the requests plus `minPerSecond` × the window's seconds. A retry past it is not made
/// and the try's own answer goes back. So under a full outage retries add at most `ratio` to
/// the load, not `attempts` times it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Budget {
    /// Extra load retries may add, as a share of requests (0.2 = 20 %), 0-1.
    #[serde(default = "d_ratio")]
    pub ratio: f64,
    /// Retries allowed per second whatever the traffic (so a quiet service can still retry).
    #[serde(default = "d_min")]
    pub min_per_second: u32,
    /// How far back requests and retries are counted, 1s-60s.
    #[serde(default = "d_window")]
    pub window: Duration,
}

fn d_ratio() -> f64 {
    DEFAULT_BUDGET_RATIO
}
fn d_min() -> u32 {
    DEFAULT_BUDGET_MIN_PER_SECOND
}
fn d_window() -> Duration {
    DEFAULT_BUDGET_WINDOW
}

impl Default for Budget {
    fn default() -> Self {
        Budget { ratio: d_ratio(), min_per_second: d_min(), window: d_window() }
    }
}

/// Timeouts of a request at the caller's proxy. Each unset one: no limit of its own (`connect`:
/// the proxy's `timeouts.connect`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    /// The whole request until its response head, every try and backoff included; past it: 504
    /// `request-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// One try until its response head; past it the try is abandoned (and retried if `retry`
    /// says so: it counts as a gateway error), else 504 `per-try-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try: Option<Duration>,
    /// The response body: no data for this long and the response is cut (reset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
    /// A new connection to an endpoint's proxy (TCP + TLS), replacing the proxy's `timeouts.connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Duration>,
}

/// Which requests a fault applies to: all of the listed conditions hold (none listed: all).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultMatch {
    /// The path starts with this (at a `/` boundary or the whole path), e.g. `/checkout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Request headers that must be present with exactly these values (names case-insensitive).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fault {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<FaultMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
}

/// Hold the request this long before sending it, for `percent` of the matching requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Delay {
    pub fixed: Duration,
    /// 0-100, fractions allowed (0.1 = one request in a thousand).
    pub percent: f64,
}

/// Answer at once, without sending, for `percent` of the matching requests: an HTTP status, or a
/// gRPC status (HTTP 200, `grpc-status` in a trailers-only response).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Abort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<GrpcCode>,
    pub percent: f64,
}

/// A token bucket at the target's own proxies (the server side): `maxTokens` requests at once,
/// `tokensPerFill` more every `fillInterval`. A request finding the bucket empty is answered 429
/// and never reaches the app. `perCaller`: one bucket per caller identity (SPIFFE ID).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_fill: Option<u32>,
    pub fill_interval: Duration,
    #[serde(default)]
    pub per_caller: bool,
}

impl RateLimit {
    /// `tokensPerFill`, defaulting to `maxTokens`.
    pub fn tokens_per_fill(&self) -> u32 {
        self.tokens_per_fill.unwrap_or(self.max_tokens)
    }
}

/// A gRPC status code, written by name (`unavailable`, `UNAVAILABLE`, `resource-exhausted`...)
/// or number (`14`); always written back as its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrpcCode(pub u8);

pub const GRPC_CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid-argument",
    "deadline-exceeded",
    "not-found",
    "already-exists",
    "permission-denied",
    "resource-exhausted",
    "failed-precondition",
    "aborted",
    "out-of-range",
    "unimplemented",
    "internal",
    "unavailable",
    "data-loss",
    "unauthenticated",
];

impl std::str::FromStr for GrpcCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.parse::<u8>() {
            return if (n as usize) < GRPC_CODES.len() {
                Ok(GrpcCode(n))
            } else {
                Err(format!("gRPC status {n} does not exist; codes are 0-16"))
            };
        }
        let norm = s.to_ascii_lowercase().replace('_', "-");
        GRPC_CODES.iter().position(|c| *c == norm).map(|i| GrpcCode(i as u8)).ok_or_else(|| {
            format!("unknown gRPC status {s:?}; use a number 0-16 or a name such as unavailable, resource-exhausted")
        })
    }
}

impl<'de> Deserialize<'de> for GrpcCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => u8::try_from(n)
                .ok()
                .filter(|n| (*n as usize) < GRPC_CODES.len())
                .map(GrpcCode)
                .ok_or_else(|| serde::de::Error::custom(format!("gRPC status {n} does not exist; codes are 0-16"))),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for GrpcCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

impl JsonSchema for GrpcCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GrpcCode".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut names: Vec<serde_json::Value> = GRPC_CODES.iter().map(|c| (*c).into()).collect();
        names.extend(GRPC_CODES.iter().map(|c| c.to_ascii_uppercase().replace('-', "_").into()));
        schemars::json_schema!({
            "description": "A gRPC status code: its number (0-16) or its name.",
            "oneOf": [
                { "type": "integer", "minimum": 0, "maximum": 16 },
                { "type": "string", "enum": names }
            ]
        })
    }
}

fn percent(field: &str, p: f64) -> Result<(), ConfigError> {
    if !(0.0..=100.0).contains(&p) || p.is_nan() {
        return Err(ConfigError::invalid(field, format!("{p} is not a percentage; use 0-100")));
    }
    Ok(())
}

fn positive(field: &str, d: Duration) -> Result<(), ConfigError> {
    if d.0.is_zero() {
        return Err(ConfigError::invalid(field, "must be more than 0 (e.g. 500ms); leave it out for no limit"));
    }
    Ok(())
}

impl Resilience {
    /// The rules across fields (errors name the field below the section).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.retry.is_none() && self.timeouts.is_none() && self.faults.is_empty() && self.rate_limit.is_none() {
            return Err(ConfigError::invalid(
                "retry",
                "the policy sets nothing; set at least one of retry, timeouts, faults, rateLimit",
            ));
        }
        if let Some(r) = &self.retry {
            r.validate()?;
        }
        if let Some(t) = &self.timeouts {
            for (f, d) in [("request", t.request), ("perTry", t.per_try), ("idle", t.idle), ("connect", t.connect)] {
                if let Some(d) = d {
                    positive(&format!("timeouts.{f}"), d)?;
                }
            }
            if t.request.is_none() && t.per_try.is_none() && t.idle.is_none() && t.connect.is_none() {
                return Err(ConfigError::invalid("timeouts", "sets no timeout; set request, perTry, idle or connect"));
            }
            if let (Some(r), Some(p)) = (t.request, t.per_try) {
                if p > r {
                    return Err(ConfigError::invalid(
                        "timeouts.perTry",
                        format!("{p} is longer than timeouts.request ({r}): no try could use it; make it shorter"),
                    ));
                }
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            let at = |k: &str| format!("faults[{i}].{k}");
            if f.delay.is_none() && f.abort.is_none() {
                return Err(ConfigError::invalid(at("delay"), "a fault needs a delay, an abort or both"));
            }
            if let Some(d) = &f.delay {
                positive(&at("delay.fixed"), d.fixed)?;
                percent(&at("delay.percent"), d.percent)?;
            }
            if let Some(a) = &f.abort {
                percent(&at("abort.percent"), a.percent)?;
                match (a.http_status, a.grpc_status) {
                    (Some(s), None) if !(200..=599).contains(&s) => {
                        return Err(ConfigError::invalid(at("abort.httpStatus"), format!("{s} is not 200-599")))
                    }
                    (Some(_), None) => {}
                    (None, Some(GrpcCode(0))) => {
                        return Err(ConfigError::invalid(at("abort.grpcStatus"), "0 (ok) is not an error"))
                    }
                    (None, Some(_)) => {}
                    _ => return Err(ConfigError::invalid(at("abort"), "set exactly one of httpStatus, grpcStatus")),
                }
            }
            if let Some(m) = &f.matches {
                if let Some(p) = &m.path_prefix {
                    if !p.starts_with('/') {
                        return Err(ConfigError::invalid(at("match.pathPrefix"), format!("{p:?} must start with '/'")));
                    }
                }
                for (name, value) in &m.headers {
                    if http_token(name).is_err() {
                        return Err(ConfigError::invalid(
                            at(&format!("match.headers.{name}")),
                            "is not a valid header name",
                        ));
                    }
                    if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                        return Err(ConfigError::invalid(
                            at(&format!("match.headers.{name}")),
                            "the value has control characters",
                        ));
                    }
                }
            }
        }
        if let Some(rl) = &self.rate_limit {
            if rl.max_tokens == 0 {
                return Err(ConfigError::invalid(
                    "rateLimit.maxTokens",
                    "must be at least 1 (0 would refuse every request)",
                ));
            }
            if rl.tokens_per_fill == Some(0) {
                return Err(ConfigError::invalid("rateLimit.tokensPerFill", "must be at least 1"));
            }
            positive("rateLimit.fillInterval", rl.fill_interval)?;
        }
        Ok(())
    }
}

fn http_token(name: &str) -> Result<(), ()> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

impl Retry {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.attempts == 0 {
            return Err(ConfigError::invalid(
                "retry.attempts",
                "must be at least 1 (retries after the first try); remove `retry` for none",
            ));
        }
        if self.attempts > 10 {
            return Err(ConfigError::invalid("retry.attempts", format!("{} is more than 10", self.attempts)));
        }
        if self.retry_on.is_empty() && self.status_codes.is_empty() && self.grpc_status_codes.is_empty() {
            return Err(ConfigError::invalid(
                "retry.retryOn",
                "nothing would be retried; list 5xx, gateway-error, connect-failure or reset (or statusCodes)",
            ));
        }
        for (i, s) in self.status_codes.iter().enumerate() {
            if !(100..=599).contains(s) {
                return Err(ConfigError::invalid(format!("retry.statusCodes[{i}]"), format!("{s} is not 100-599")));
            }
        }
        if let Some(b) = &self.backoff {
            positive("retry.backoff.base", b.base)?;
            if b.max < b.base {
                return Err(ConfigError::invalid(
                    "retry.backoff.max",
                    format!("{} is shorter than retry.backoff.base ({})", b.max, b.base),
                ));
            }
        }
        if let Some(b) = &self.budget {
            if !(0.0..=1.0).contains(&b.ratio) || b.ratio.is_nan() {
                return Err(ConfigError::invalid(
                    "retry.budget.ratio",
                    format!("{} is not 0-1 (0.2 lets retries add 20 % to the load)", b.ratio),
                ));
            }
            if b.window.0 < std::time::Duration::from_secs(1) || b.window.0 > std::time::Duration::from_secs(60) {
                return Err(ConfigError::invalid("retry.budget.window", format!("{} is not 1s-60s", b.window)));
            }
        }
        if self.max_body_bytes > MAX_RETRY_BODY_BYTES {
            return Err(ConfigError::invalid(
                "retry.maxBodyBytes",
                format!("{} is more than {MAX_RETRY_BODY_BYTES}", self.max_body_bytes),
            ));
        }
        for (i, m) in self.methods.iter().enumerate() {
            if http_token(m).is_err() || m.bytes().any(|b| b.is_ascii_lowercase()) {
                return Err(ConfigError::invalid(
                    format!("retry.methods[{i}]"),
                    format!("{m:?} is not a method in capitals (GET, POST...)"),
                ));
            }
        }
        Ok(())
    }
}

impl crate::resource::Validate for ResiliencePolicySpec {
    fn validate(&self) -> Result<(), ConfigError> {
        if !valid_name(&self.target_ref.name) {
            return Err(ConfigError::invalid("targetRef.name", "must be a DNS label"));
        }
        match (&self.target_ref.kind, &self.target_ref.section_name) {
            (TargetKind::Service, Some(_)) => {
                return Err(ConfigError::invalid(
                    "targetRef.sectionName",
                    "only an HTTPRoute or a GRPCRoute has sections (rules); remove it or target the route",
                ))
            }
            (_, Some(s)) if !valid_name(s) => {
                return Err(ConfigError::invalid("targetRef.sectionName", "must be a DNS label (a rule's name)"))
            }
            _ => {}
        }
        if self.target_ref.kind.is_route() && self.rate_limit.is_some() {
            return Err(ConfigError::invalid(
                "rateLimit",
                "applies at the target Service's own proxies; attach it to the Service (targetRef.kind: Service)",
            ));
        }
        self.resilience(String::new()).validate()
    }
}

#[cfg(test)]
mod tests {
    use crate::resource::{parse_documents, Resource};

    fn policy(spec: &str) -> Result<Vec<Resource>, crate::ConfigError> {
        parse_documents(&format!(
            "apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{ name: p }}\nspec: {{ targetRef: {{ kind: Service, name: api }}, {spec} }}\n"
        ))
    }

    #[test]
    fn a_full_policy_reads_with_defaults() {
        let rs = policy(
            "retry: { attempts: 3, retryOn: [5xx, reset], statusCodes: [409], grpcStatusCodes: [unavailable, 8] }, \
             timeouts: { request: 2s, perTry: 500ms }, \
             faults: [{ match: { pathPrefix: /x }, delay: { fixed: 10ms, percent: 5 }, abort: { grpcStatus: UNAVAILABLE, percent: 0.1 } }], \
             rateLimit: { maxTokens: 10, fillInterval: 1s, perCaller: true }",
        )
        .unwrap();
        let Resource::ResiliencePolicy(p) = &rs[0] else { panic!() };
        let r = p.spec.retry.as_ref().unwrap();
        assert_eq!(r.grpc_status_codes, vec![super::GrpcCode(14), super::GrpcCode(8)]);
        assert_eq!(r.max_body_bytes, super::DEFAULT_MAX_RETRY_BODY_BYTES);
        assert_eq!(p.spec.rate_limit.as_ref().unwrap().tokens_per_fill(), 10);
    }

    #[test]
    fn bad_values_name_the_field() {
        for (spec, field) in [
            ("retry: { attempts: 0 }", "spec.retry.attempts"),
            ("retry: { attempts: -1 }", "spec.retry.attempts"),
            ("retry: { retryOn: [5xx, teapot] }", "spec.retry.retryOn"),
            ("retry: { statusCodes: [700] }", "spec.retry.statusCodes[0]"),
            ("retry: { grpcStatusCodes: [sad] }", "spec.retry.grpcStatusCodes"),
            ("retry: { budget: { ratio: 2 } }", "spec.retry.budget.ratio"),
            ("retry: { budget: { ratio: -0.1 } }", "spec.retry.budget.ratio"),
            ("retry: { backoff: { base: 0ms } }", "spec.retry.backoff.base"),
            ("retry: { methods: [post] }", "spec.retry.methods[0]"),
            ("timeouts: { request: 0s }", "spec.timeouts.request"),
            ("timeouts: { request: 1s, perTry: 2s }", "spec.timeouts.perTry"),
            ("faults: [{ abort: { httpStatus: 503, percent: 101 } }]", "spec.faults[0].abort.percent"),
            ("faults: [{ delay: { fixed: 1s, percent: -5 } }]", "spec.faults[0].delay.percent"),
            ("faults: [{ abort: { percent: 5 } }]", "spec.faults[0].abort"),
            (
                "faults: [{ match: { pathPrefix: x }, abort: { httpStatus: 500, percent: 5 } }]",
                "spec.faults[0].match.pathPrefix",
            ),
            ("faults: [{}]", "spec.faults[0].delay"),
            ("rateLimit: { maxTokens: 0, fillInterval: 1s }", "spec.rateLimit.maxTokens"),
            ("rateLimit: { maxTokens: 5, fillInterval: 0s }", "spec.rateLimit.fillInterval"),
        ] {
            let err = policy(spec).unwrap_err().to_string();
            assert!(err.starts_with(&format!("ResiliencePolicy default/p: {field}")), "{spec}: {err}");
        }
        let err = parse_documents(
            "apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: p }\nspec: { targetRef: { kind: Service, name: api } }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sets nothing"), "{err}");
        let err = parse_documents(
            "apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: p }\nspec: { targetRef: { kind: Gateway, name: api }, retry: {} }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("spec.targetRef.kind"), "{err}");
    }
}
