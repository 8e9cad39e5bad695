//! Distributed tracing (docs/observability.md, "Tracing"): MeshConfig `tracing` and the proxy
//! config file's `tracing`, the same type in both. Absent: tracing is off, and the proxy's request
//! path pays one branch.
//!
//! ```yaml
//! tracing:
//!   sampling: 1.0            # percent of the traces a proxy starts, 0 to 100
//!   otlp:
//!     endpoint: http://otel-collector.example:4317
//!     timeout: 5s
//!   propagation: [w3c, b3]
//! ```

use crate::{ConfigError, Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The percent of new traces sampled when `sampling` is not given (Istio's default).
pub const DEFAULT_SAMPLING: f64 = 1.0;
/// How long one export call may take when `otlp.timeout` is not given.
pub const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `otlp.timeout` accepted.
pub const MAX_OTLP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where spans go and how a trace is sampled and carried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingSpec {
    /// Percent (0 to 100) of the requests that arrive without a trace for which a proxy starts a
    /// sampled one. A request that carries a trace keeps its caller's decision.
    #[serde(default = "default_sampling")]
    pub sampling: f64,
    /// The OTLP/gRPC collector the proxies export their spans to.
    pub otlp: OtlpExporter,
    /// The header formats a proxy reads a caller's trace from and writes a new trace in: `w3c`
    /// (`traceparent`/`tracestate`) and `b3` (`b3`, `X-B3-*`). A caller's trace is forwarded in
    /// the formats it came in.
    #[serde(default = "default_propagation")]
    pub propagation: Vec<Propagation>,
}

/// An OTLP/gRPC collector (`opentelemetry.proto.collector.trace.v1.TraceService/Export`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OtlpExporter {
    /// `http://host:port` of the collector's gRPC port (4317 by convention), in plaintext.
    pub endpoint: String,
    /// How long one export call may take, connecting included.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

/// A trace header format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    /// W3C Trace Context: `traceparent` and `tracestate`.
    W3c,
    /// Zipkin's B3: the single `b3` header and the multiple `X-B3-*` headers.
    B3,
}

fn default_sampling() -> f64 {
    DEFAULT_SAMPLING
}
fn default_timeout() -> Duration {
    DEFAULT_OTLP_TIMEOUT
}
fn default_propagation() -> Vec<Propagation> {
    vec![Propagation::W3c, Propagation::B3]
}

impl TracingSpec {
    /// Checks the spec; `field` is where it was read (`tracing`).
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if !self.sampling.is_finite() || !(0.0..=100.0).contains(&self.sampling) {
            return Err(ConfigError::invalid(
                format!("{field}.sampling"),
                format!("{} is not a percent; give 0 to 100, e.g. 1.0 for one request in a hundred", self.sampling),
            ));
        }
        self.otlp.validate(&format!("{field}.otlp"))?;
        if self.propagation.is_empty() {
            return Err(ConfigError::invalid(
                format!("{field}.propagation"),
                "is empty; list at least one of w3c, b3 (or remove it for both)",
            ));
        }
        Ok(())
    }

    /// Whether the proxy reads and writes `format`.
    pub fn propagates(&self, format: Propagation) -> bool {
        self.propagation.contains(&format)
    }
}

impl OtlpExporter {
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let rest = self.endpoint.strip_prefix("http://").ok_or_else(|| {
            ConfigError::invalid(
                format!("{field}.endpoint"),
                format!(
                    "{:?} must start with http:// (OTLP/gRPC in plaintext), e.g. http://127.0.0.1:4317",
                    self.endpoint
                ),
            )
        })?;
        let hostport = rest.trim_end_matches('/');
        let ok = hostport.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !ok {
            return Err(ConfigError::invalid(
                format!("{field}.endpoint"),
                format!("{:?} must be http://host:port, e.g. http://127.0.0.1:4317", self.endpoint),
            ));
        }
        if self.timeout < Duration::from_millis(1) || self.timeout > MAX_OTLP_TIMEOUT {
            return Err(ConfigError::invalid(
                format!("{field}.timeout"),
                format!("{} is out of range; give 1ms to {MAX_OTLP_TIMEOUT}, e.g. 5s", self.timeout),
            ));
        }
        Ok(())
    }

    /// `host:port` of the endpoint (validated).
    pub fn address(&self) -> &str {
        self.endpoint.trim_start_matches("http://").trim_end_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<TracingSpec, String> {
        let t: TracingSpec = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        t.validate("tracing").map_err(|e| e.to_string())?;
        Ok(t)
    }

    #[test]
    fn defaults_and_errors_name_the_field() {
        let t = parse("otlp: { endpoint: http://127.0.0.1:4317 }").unwrap();
        assert_eq!(t.sampling, DEFAULT_SAMPLING);
        assert_eq!(t.propagation, vec![Propagation::W3c, Propagation::B3]);
        assert_eq!(t.otlp.address(), "127.0.0.1:4317");
        let e = parse("sampling: 101\notlp: { endpoint: http://a:1 }").unwrap_err();
        assert!(e.contains("tracing.sampling"), "{e}");
        let e = parse("otlp: { endpoint: 'a:4317' }").unwrap_err();
        assert!(e.contains("tracing.otlp.endpoint") && e.contains("http://"), "{e}");
        let e = parse("otlp: { endpoint: 'http://a' }").unwrap_err();
        assert!(e.contains("tracing.otlp.endpoint"), "{e}");
        let e = parse("otlp: { endpoint: 'http://a:1' }\npropagation: []").unwrap_err();
        assert!(e.contains("tracing.propagation"), "{e}");
        let e = parse("otlp: { endpoint: 'http://a:1' }\npropagation: [jaeger]").unwrap_err();
        assert!(e.contains("jaeger") || e.contains("propagation"), "{e}");
    }
}
