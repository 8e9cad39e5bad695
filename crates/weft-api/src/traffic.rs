//! Traffic between clusters and outlier detection: the settings shared by the proxy config
//! (`outlier_detection`, a service's `failover` / `cluster_weights`) and the Service resource
//! (`failover`, `clusterWeights`). What they do is in docs/multicluster.md, "Failover between
//! clusters"; the proxy applies them in `weft-proxy`'s `balance` and `outlier` modules.

use crate::{valid_name, ConfigError, Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Consecutive failed connects (refused, timed out, TLS handshake failed, or a pooled connection
/// whose peer stopped answering, 504 `peer-unresponsive`) that eject an endpoint (Envoy's
/// `consecutive_local_origin_failure`).
pub const DEFAULT_CONSECUTIVE_CONNECT_FAILURES: u32 = 5;
/// Consecutive 5xx responses (the peer's, or 502/503/504 the proxy answered for it) that eject an
/// endpoint (Envoy's and Istio's `consecutive5xxErrors`).
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// First ejection's length; the n-th in a row lasts n times this (Envoy's and Istio's default).
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
/// No ejection lasts longer (Envoy's default).
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// Share of a service's endpoints that may be ejected at once. Envoy's default is 10%; weft's
/// is 100% because ejecting every endpoint of a dead cluster is what moves traffic to the next
/// one, and a service whose every endpoint is ejected is balanced over all of them anyway.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 100;
/// A tier keeps all its traffic while `healthy share × 1.4 ≥ 100%` (Envoy's overprovisioning
/// factor): with 5 endpoints, one may be ejected before the next tier gets any.
pub const OVERPROVISIONING_FACTOR: f64 = 1.4;
/// Consecutive gateway errors (502, 503, 504, or a request that failed after it was sent) that
/// eject an endpoint; 0 (the default): off, as `consecutive_5xx` already counts them.
pub const DEFAULT_CONSECUTIVE_GATEWAY_ERRORS: u32 = 0;
/// How often success rates are compared (Envoy's and Istio's `interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Success-rate ejection: endpoints with at least this many requests in an interval count...
pub const DEFAULT_SUCCESS_RATE_REQUEST_VOLUME: u32 = 100;
/// ...and at least this many of them are needed to compare (Envoy's defaults).
pub const DEFAULT_SUCCESS_RATE_MINIMUM_HOSTS: u32 = 5;
/// An endpoint whose success rate is below `mean − factor/1000 × stdev` is ejected.
pub const DEFAULT_SUCCESS_RATE_STDEV_FACTOR: u32 = 1900;

/// Success-rate based ejection (Envoy's): each `interval`, among endpoints with at least
/// `requestVolume` requests in it, when there are at least `minimumHosts` of them, those whose
/// success rate is below `mean − stdevFactor/1000 × stdev` are ejected (within the max percent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuccessRate {
    #[serde(default = "d_sr_hosts", alias = "minimum_hosts")]
    pub minimum_hosts: u32,
    #[serde(default = "d_sr_volume", alias = "request_volume")]
    pub request_volume: u32,
    #[serde(default = "d_sr_factor", alias = "stdev_factor")]
    pub stdev_factor: u32,
}

impl Default for SuccessRate {
    fn default() -> Self {
        SuccessRate { minimum_hosts: d_sr_hosts(), request_volume: d_sr_volume(), stdev_factor: d_sr_factor() }
    }
}

fn d_sr_hosts() -> u32 {
    DEFAULT_SUCCESS_RATE_MINIMUM_HOSTS
}
fn d_sr_volume() -> u32 {
    DEFAULT_SUCCESS_RATE_REQUEST_VOLUME
}
fn d_sr_factor() -> u32 {
    DEFAULT_SUCCESS_RATE_STDEV_FACTOR
}
fn d_gw() -> u32 {
    DEFAULT_CONSECUTIVE_GATEWAY_ERRORS
}
fn d_interval() -> Duration {
    DEFAULT_INTERVAL
}

impl SuccessRate {
    fn check(&self, f: &str) -> Result<(), ConfigError> {
        if self.minimum_hosts == 0 || self.request_volume == 0 {
            return Err(ConfigError::invalid(f, "minimumHosts and requestVolume must be at least 1"));
        }
        Ok(())
    }
}

/// The proxy config's `outlier_detection` (every field optional; 0 turns a detector off).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default = "d_connect")]
    pub consecutive_connect_failures: u32,
    #[serde(default = "d_5xx")]
    pub consecutive_5xx: u32,
    #[serde(default = "d_base")]
    pub base_ejection_time: Duration,
    #[serde(default = "d_max")]
    pub max_ejection_time: Duration,
    #[serde(default = "d_pct")]
    pub max_ejection_percent: u32,
    #[serde(default = "d_gw")]
    pub consecutive_gateway_errors: u32,
    #[serde(default = "d_interval")]
    pub interval: Duration,
    /// Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRate>,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_connect_failures: d_connect(),
            consecutive_5xx: d_5xx(),
            base_ejection_time: d_base(),
            max_ejection_time: d_max(),
            max_ejection_percent: d_pct(),
            consecutive_gateway_errors: d_gw(),
            interval: d_interval(),
            success_rate: None,
        }
    }
}

fn d_connect() -> u32 {
    DEFAULT_CONSECUTIVE_CONNECT_FAILURES
}
fn d_5xx() -> u32 {
    DEFAULT_CONSECUTIVE_5XX
}
fn d_base() -> Duration {
    DEFAULT_BASE_EJECTION_TIME
}
fn d_max() -> Duration {
    DEFAULT_MAX_EJECTION_TIME
}
fn d_pct() -> u32 {
    DEFAULT_MAX_EJECTION_PERCENT
}

impl OutlierDetection {
    /// Rules between the fields; `field` is where this block sits (`outlier_detection`).
    pub fn check(&self, field: &str) -> Result<(), ConfigError> {
        if self.max_ejection_percent > 100 {
            return Err(ConfigError::invalid(
                format!("{field}.max_ejection_percent"),
                format!("{} must be 0-100", self.max_ejection_percent),
            ));
        }
        if self.base_ejection_time < Duration::from_millis(1) {
            return Err(ConfigError::invalid(format!("{field}.base_ejection_time"), "must be at least 1ms"));
        }
        if self.interval < Duration::from_millis(10) {
            return Err(ConfigError::invalid(format!("{field}.interval"), "must be at least 10ms"));
        }
        if let Some(sr) = &self.success_rate {
            sr.check(&format!("{field}.success_rate"))?;
        }
        if self.max_ejection_time < self.base_ejection_time {
            return Err(ConfigError::invalid(
                format!("{field}.max_ejection_time"),
                format!(
                    "{} is shorter than base_ejection_time {}; make it at least as long",
                    self.max_ejection_time, self.base_ejection_time
                ),
            ));
        }
        Ok(())
    }
}

/// A service's own outlier detection settings: each field set replaces the proxy's
/// `outlier_detection` value for that service (proxy config form, snake_case).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_connect_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRate>,
}

/// The Service resource's `outlierDetection` (camelCase); the same fields as
/// [`OutlierOverrides`], which it converts into.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceOutlierDetection {
    /// Consecutive failed connects that eject an endpoint (0: never). Proxy default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_connect_failures: Option<u32>,
    /// Consecutive 5xx that eject an endpoint (0: never). Proxy default 5.
    #[serde(default, rename = "consecutive5xx", skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    /// First ejection's length; the n-th in a row lasts n times it. Proxy default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// No ejection lasts longer. Proxy default 300s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Duration>,
    /// Share of the service's endpoints that may be out at once (0-100). Proxy default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    /// Consecutive gateway errors (502, 503, 504, or a request that failed after it was sent)
    /// that eject an endpoint (0: never). Proxy default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// How often success rates are compared. Proxy default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Success-rate based ejection (off unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRate>,
}

impl From<&ServiceOutlierDetection> for OutlierOverrides {
    fn from(s: &ServiceOutlierDetection) -> Self {
        OutlierOverrides {
            consecutive_connect_failures: s.consecutive_connect_failures,
            consecutive_5xx: s.consecutive_5xx,
            base_ejection_time: s.base_ejection_time,
            max_ejection_time: s.max_ejection_time,
            max_ejection_percent: s.max_ejection_percent,
            consecutive_gateway_errors: s.consecutive_gateway_errors,
            interval: s.interval,
            success_rate: s.success_rate,
        }
    }
}

impl ServiceOutlierDetection {
    /// The rules that hold whatever the proxy's own settings (`outlierDetection.*`).
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.max_ejection_percent.is_some_and(|p| p > 100) {
            return Err(ConfigError::invalid("outlierDetection.maxEjectionPercent", "must be 0-100"));
        }
        if self.base_ejection_time.is_some_and(|d| d < Duration::from_millis(1)) {
            return Err(ConfigError::invalid("outlierDetection.baseEjectionTime", "must be at least 1ms"));
        }
        if self.interval.is_some_and(|d| d < Duration::from_millis(10)) {
            return Err(ConfigError::invalid("outlierDetection.interval", "must be at least 10ms"));
        }
        if let Some(sr) = &self.success_rate {
            sr.check("outlierDetection.successRate")?;
        }
        if let (Some(base), Some(max)) = (self.base_ejection_time, self.max_ejection_time) {
            if max < base {
                return Err(ConfigError::invalid(
                    "outlierDetection.maxEjectionTime",
                    format!("{max} is shorter than baseEjectionTime {base}; make it at least as long"),
                ));
            }
        }
        Ok(())
    }
}

impl OutlierDetection {
    /// These settings with a service's overrides applied.
    pub fn with(&self, o: &OutlierOverrides) -> OutlierDetection {
        OutlierDetection {
            consecutive_connect_failures: o.consecutive_connect_failures.unwrap_or(self.consecutive_connect_failures),
            consecutive_5xx: o.consecutive_5xx.unwrap_or(self.consecutive_5xx),
            base_ejection_time: o.base_ejection_time.unwrap_or(self.base_ejection_time),
            max_ejection_time: o.max_ejection_time.unwrap_or(self.max_ejection_time),
            max_ejection_percent: o.max_ejection_percent.unwrap_or(self.max_ejection_percent),
            consecutive_gateway_errors: o.consecutive_gateway_errors.unwrap_or(self.consecutive_gateway_errors),
            interval: o.interval.unwrap_or(self.interval),
            success_rate: o.success_rate.or(self.success_rate),
        }
    }
}

impl ServiceOutlierDetection {
    /// `over`'s fields where set, else these (a BackendPolicy's over its Service's).
    pub fn overlaid(&self, over: &ServiceOutlierDetection) -> ServiceOutlierDetection {
        ServiceOutlierDetection {
            consecutive_connect_failures: over.consecutive_connect_failures.or(self.consecutive_connect_failures),
            consecutive_5xx: over.consecutive_5xx.or(self.consecutive_5xx),
            base_ejection_time: over.base_ejection_time.or(self.base_ejection_time),
            max_ejection_time: over.max_ejection_time.or(self.max_ejection_time),
            max_ejection_percent: over.max_ejection_percent.or(self.max_ejection_percent),
            consecutive_gateway_errors: over.consecutive_gateway_errors.or(self.consecutive_gateway_errors),
            interval: over.interval.or(self.interval),
            success_rate: over.success_rate.or(self.success_rate),
        }
    }
}

/// Checks a service's `failover` list and cluster weights; `f` names each field as the file
/// spells it (`failover`, `clusterWeights` / `cluster_weights`).
pub fn check_cluster_policy(
    failover: (&str, &[String]),
    weights: (&str, &BTreeMap<String, u32>),
) -> Result<(), ConfigError> {
    let (ff, failover) = failover;
    let (wf, weights) = weights;
    let mut seen = HashSet::new();
    for (i, c) in failover.iter().enumerate() {
        if !valid_name(c) {
            return Err(ConfigError::invalid(
                format!("{ff}[{i}]"),
                format!("{c:?} must be a cluster name (a DNS label)"),
            ));
        }
        if !seen.insert(c) {
            return Err(ConfigError::invalid(
                format!("{ff}[{i}]"),
                format!("cluster {c:?} is listed twice; list each cluster once, in the order to fail over to"),
            ));
        }
    }
    for (c, w) in weights {
        if !valid_name(c) {
            return Err(ConfigError::invalid(format!("{wf}.{c}"), "must be a cluster name (a DNS label)"));
        }
        if *w > 1_000_000 {
            return Err(ConfigError::invalid(format!("{wf}.{c}"), format!("{w} must be 0-1000000")));
        }
    }
    if !weights.is_empty() && weights.values().all(|w| *w == 0) {
        return Err(ConfigError::invalid(
            wf,
            "every weight is 0, so no cluster would get traffic; give at least one cluster a weight above 0 (or remove the field)",
        ));
    }
    if !weights.is_empty() && !failover.is_empty() {
        return Err(ConfigError::invalid(
            ff,
            format!("set either `{ff}` (ordered failover) or `{wf}` (a fixed split), not both"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(failover: &[&str], weights: &[(&str, u32)]) -> Result<(), String> {
        let f: Vec<String> = failover.iter().map(|s| s.to_string()).collect();
        let w: BTreeMap<String, u32> = weights.iter().map(|(c, w)| (c.to_string(), *w)).collect();
        check_cluster_policy(("failover", &f), ("clusterWeights", &w)).map_err(|e| e.to_string())
    }

    #[test]
    fn cluster_policy_errors_name_the_field() {
        assert!(check(&["west", "central"], &[]).is_ok());
        assert!(check(&[], &[("east", 90), ("west", 10), ("central", 0)]).is_ok());
        assert!(check(&["west", "west"], &[])
            .unwrap_err()
            .starts_with("failover[1]: cluster \"west\" is listed twice"));
        assert!(check(&["West"], &[]).unwrap_err().starts_with("failover[0]"));
        assert!(check(&[], &[("east", 0), ("west", 0)]).unwrap_err().starts_with("clusterWeights: every weight is 0"));
        assert!(check(&[], &[("East", 1)]).unwrap_err().starts_with("clusterWeights.East"));
        assert!(check(&["west"], &[("east", 1)]).unwrap_err().starts_with("failover: set either"));
    }

    #[test]
    fn service_overrides_replace_only_what_they_set() {
        let o = OutlierOverrides { consecutive_5xx: Some(2), ..Default::default() };
        let merged = OutlierDetection::default().with(&o);
        assert_eq!(merged.consecutive_5xx, 2);
        assert_eq!(merged.base_ejection_time, DEFAULT_BASE_EJECTION_TIME);
        let bad = ServiceOutlierDetection { max_ejection_percent: Some(150), ..Default::default() };
        assert!(bad.check().unwrap_err().to_string().starts_with("outlierDetection.maxEjectionPercent"));
        let bad = ServiceOutlierDetection {
            base_ejection_time: Some(Duration::from_secs(10)),
            max_ejection_time: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().to_string().starts_with("outlierDetection.maxEjectionTime"));
    }

    #[test]
    fn outlier_rules() {
        assert!(OutlierDetection::default().check("outlier_detection").is_ok());
        let o = OutlierDetection { max_ejection_percent: 101, ..Default::default() };
        assert!(o
            .check("outlier_detection")
            .unwrap_err()
            .to_string()
            .starts_with("outlier_detection.max_ejection_percent"));
        let o = OutlierDetection { max_ejection_time: Duration::from_secs(1), ..Default::default() };
        assert!(o
            .check("outlier_detection")
            .unwrap_err()
            .to_string()
            .starts_with("outlier_detection.max_ejection_time"));
    }
}
