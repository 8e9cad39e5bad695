//! `Telemetry`: what a workload's proxy records beyond its metrics (Istio's kind of the same
//! name). Today: access logs, one line per HTTP request and per TCP connection, inbound and
//! outbound (docs/observability.md, "Access logs"). Off unless a Telemetry (or the proxy's own
//! config file, `access_log`) turns it on.
//!
//! Scope, as AuthorizationPolicy's: a Telemetry in the root namespace [`ROOT_NAMESPACE`] without
//! `targetRef` covers the mesh; one in a namespace without `targetRef` covers that namespace; one
//! with `targetRef` covers one Service's workloads or one Workload. The most specific wins:
//!
//! ```text
//! Workload > Service > namespace > root namespace > the proxy config file's access_log > off
//! ```
//! (two at one level: the oldest by name wins, so the choice is stable.)

use crate::authz::TargetRef;
use crate::resource::Validate;
use crate::{valid_name, ConfigError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The namespace whose `targetRef`-less Telemetry applies to the whole mesh.
pub const ROOT_NAMESPACE: &str = "weft-system";

/// `path` value that writes to the proxy's standard output.
pub const STDOUT: &str = "stdout";

/// How an access log line is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line (the fields are listed in docs/observability.md).
    #[default]
    Json,
    /// One line in the spirit of Envoy's default format, for people reading a terminal.
    Text,
}

fn default_path() -> String {
    STDOUT.into()
}

/// `accessLogging`: whether, how and where the proxy writes its access log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogging {
    /// On or off; off when absent.
    #[serde(default)]
    pub enabled: bool,
    /// `json` (the default) or `text`.
    #[serde(default)]
    pub format: Format,
    /// `stdout` (the default) or the absolute path of a file the proxy appends to.
    #[serde(default = "default_path")]
    pub path: String,
}

impl Default for AccessLogging {
    fn default() -> Self {
        AccessLogging { enabled: false, format: Format::Json, path: default_path() }
    }
}

impl AccessLogging {
    /// Checks `path`, naming `at` (the field this value is at) on error.
    pub fn validate_at(&self, at: &str) -> Result<(), ConfigError> {
        if self.path != STDOUT && !std::path::Path::new(&self.path).is_absolute() {
            return Err(ConfigError::invalid(
                format!("{at}.path"),
                format!("{:?} is neither `stdout` nor an absolute file path; write `stdout` or a path like /var/log/weft/access.log", self.path),
            ));
        }
        if self.path.contains('\0') {
            return Err(ConfigError::invalid(format!("{at}.path"), "contains a NUL byte"));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// `{kind: Workload, name}` or `{kind: Service, name}` in the Telemetry's namespace; absent:
    /// the whole namespace (the whole mesh in `weft-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// Access logs of the selected workloads' proxies; absent: this Telemetry says nothing about
    /// them (a less specific one, or the proxy's config file, decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_logging: Option<AccessLogging>,
}

impl Validate for TelemetrySpec {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.target_ref {
            if !valid_name(&t.name) {
                return Err(ConfigError::invalid(
                    "targetRef.name",
                    format!("{:?} is not a valid name (lowercase letters, digits and '-')", t.name),
                ));
            }
        }
        if let Some(a) = &self.access_logging {
            a.validate_at("accessLogging")?;
        }
        Ok(())
    }
}

/// How specific a Telemetry is for a workload (higher wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Mesh,
    Namespace,
    Service,
    Workload,
}

/// How specific `spec` (in `namespace`) is for the workload `workload` of `service` in
/// `workload_ns`, or `None` when it does not apply to it.
pub fn scope_for(
    spec: &TelemetrySpec,
    namespace: &str,
    workload_ns: &str,
    service: &str,
    workload: &str,
) -> Option<Scope> {
    use crate::authz::TargetKind;
    match &spec.target_ref {
        None if namespace == workload_ns => Some(Scope::Namespace),
        None if namespace == ROOT_NAMESPACE => Some(Scope::Mesh),
        None => None,
        Some(t) if namespace == workload_ns => match t.kind {
            TargetKind::Service if t.name == service => Some(Scope::Service),
            TargetKind::Workload if t.name == workload => Some(Scope::Workload),
            _ => None,
        },
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::TargetKind;

    fn spec(json: &str) -> Result<TelemetrySpec, String> {
        let s: TelemetrySpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn defaults_are_off_json_stdout() {
        let s = spec(r#"{"accessLogging":{"enabled":true}}"#).unwrap();
        let a = s.access_logging.unwrap();
        assert!(a.enabled);
        assert_eq!((a.format, a.path.as_str()), (Format::Json, "stdout"));
        assert!(!AccessLogging::default().enabled);
    }

    #[test]
    fn bad_fields_are_named() {
        let e = spec(r#"{"accessLogging":{"enabled":true,"path":"rel/file.log"}}"#).unwrap_err();
        assert!(e.contains("accessLogging.path") && e.contains("absolute"), "{e}");
        let e = spec(r#"{"accessLogging":{"format":"xml"}}"#).unwrap_err();
        assert!(e.contains("xml"), "{e}");
        let e = spec(r#"{"accesLogging":{}}"#).unwrap_err();
        assert!(e.contains("accesLogging"), "{e}");
    }

    #[test]
    fn the_most_specific_scope_applies() {
        let ns = TelemetrySpec::default();
        assert_eq!(scope_for(&ns, "demo", "demo", "api", "api-1"), Some(Scope::Namespace));
        assert_eq!(scope_for(&ns, "other", "demo", "api", "api-1"), None);
        assert_eq!(scope_for(&ns, ROOT_NAMESPACE, "demo", "api", "api-1"), Some(Scope::Mesh));
        let svc = TelemetrySpec {
            target_ref: Some(TargetRef { kind: TargetKind::Service, name: "api".into() }),
            ..Default::default()
        };
        assert_eq!(scope_for(&svc, "demo", "demo", "api", "api-1"), Some(Scope::Service));
        assert_eq!(scope_for(&svc, "demo", "demo", "web", "web-1"), None);
        let wl = TelemetrySpec {
            target_ref: Some(TargetRef { kind: TargetKind::Workload, name: "api-1".into() }),
            ..Default::default()
        };
        assert_eq!(scope_for(&wl, "demo", "demo", "api", "api-1"), Some(Scope::Workload));
        assert!(Scope::Workload > Scope::Service && Scope::Service > Scope::Namespace);
    }
}
