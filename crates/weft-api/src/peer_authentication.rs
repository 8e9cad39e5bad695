//! `PeerAuthentication`: whether a workload's proxy requires mTLS from its callers (Istio's kind
//! of the same name). MeshConfig `mtls.mode` is the mesh default; a policy in the root namespace
//! [`ROOT_NAMESPACE`] without `targetRef` overrides it mesh-wide; one in a namespace without
//! `targetRef` covers that namespace; one with `targetRef` covers one Service's workloads or one
//! Workload; `portLevelMtls` overrides a policy's mode for one port. The most specific wins:
//!
//! ```text
//! port of the Workload policy > Workload policy > port of the Service policy > Service policy
//!   > namespace policy > root-namespace policy > MeshConfig mtls.mode > STRICT
//! ```
//! (a level that leaves `mtls.mode` unset, or `UNSET`, passes to the next.) The control plane
//! resolves this per workload port ([`resolve`]) and sends each proxy its ports' modes; callers'
//! proxies get every endpoint whose mode is `DISABLE` marked plaintext.

use crate::backend_policy::TargetRef;
use crate::resource::Validate;
use crate::{valid_name, ConfigError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The namespace whose `targetRef`-less PeerAuthentication applies to the whole mesh.
pub const ROOT_NAMESPACE: &str = "weft-system";

/// What a workload's proxy accepts from callers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// mTLS only; plaintext is refused (counted, and logged naming the source address).
    #[default]
    Strict,
    /// mTLS and plaintext on the same port (the proxy looks at the first bytes), so a workload
    /// can join the mesh while callers outside it still reach it.
    Permissive,
    /// Plaintext only: callers' proxies send plaintext to the workload's address.
    Disable,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Strict => "STRICT",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Disable => "DISABLE",
        }
    }

    /// Reads the wire form (`STRICT`, `PERMISSIVE`, `DISABLE`; empty: STRICT).
    pub fn parse(s: &str) -> Option<MtlsMode> {
        match s {
            "" | "STRICT" => Some(MtlsMode::Strict),
            "PERMISSIVE" => Some(MtlsMode::Permissive),
            "DISABLE" => Some(MtlsMode::Disable),
            _ => None,
        }
    }
}

/// A mode that may be left to the level above (`UNSET` or absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsSetting {
    /// Inherit from the next less specific level.
    #[default]
    Unset,
    Strict,
    Permissive,
    Disable,
}

impl MtlsSetting {
    pub fn mode(self) -> Option<MtlsMode> {
        match self {
            MtlsSetting::Unset => None,
            MtlsSetting::Strict => Some(MtlsMode::Strict),
            MtlsSetting::Permissive => Some(MtlsMode::Permissive),
            MtlsSetting::Disable => Some(MtlsMode::Disable),
        }
    }
}

/// `mtls: {mode: ...}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mtls {
    #[serde(default)]
    pub mode: MtlsSetting,
}

/// MeshConfig `mtls`: the mesh's default mode (STRICT when absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshMtls {
    #[serde(default)]
    pub mode: MtlsMode,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    /// `{kind: Workload, name}` or `{kind: Service, name}` in the policy's namespace; absent: the
    /// whole namespace (the whole mesh in `weft-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// The mode for the selected workloads; unset: the next less specific level's.
    #[serde(default)]
    pub mtls: Mtls,
    /// Per workload port (the port number as a string key, as Istio writes it): overrides
    /// `mtls` for that port. Only with a `targetRef`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<String, Mtls>,
}

/// What a policy selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Root-namespace policy without targetRef.
    Mesh,
    Namespace,
    Service,
    Workload,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Mesh => "mesh",
            Scope::Namespace => "namespace",
            Scope::Service => "service",
            Scope::Workload => "workload",
        }
    }
}

impl PeerAuthenticationSpec {
    /// The scope of a policy in `namespace`.
    pub fn scope(&self, namespace: &str) -> Scope {
        match &self.target_ref {
            Some(t) if t.kind == "Workload" => Scope::Workload,
            Some(_) => Scope::Service,
            None if namespace == ROOT_NAMESPACE => Scope::Mesh,
            None => Scope::Namespace,
        }
    }

    /// This policy's mode for `port`: the port's own, else the policy's.
    pub fn mode_for(&self, port: u16) -> Option<MtlsMode> {
        self.port_level_mtls.get(&port.to_string()).and_then(|m| m.mode.mode()).or(self.mtls.mode.mode())
    }
}

impl Validate for PeerAuthenticationSpec {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.target_ref {
            if !t.group.is_empty() && t.group != "weft.io" {
                return Err(ConfigError::invalid("targetRef.group", "must be empty or weft.io"));
            }
            if t.kind != "Workload" && t.kind != "Service" {
                return Err(ConfigError::invalid(
                    "targetRef.kind",
                    format!(
                        "{:?} cannot be targeted; use Workload or Service (or no targetRef for the namespace)",
                        t.kind
                    ),
                ));
            }
            if !valid_name(&t.name) {
                return Err(ConfigError::invalid(
                    "targetRef.name",
                    "must be the name of a Workload or Service (a DNS label)",
                ));
            }
        } else if !self.port_level_mtls.is_empty() {
            return Err(ConfigError::invalid(
                "portLevelMtls",
                "applies only to a policy with a targetRef (a Workload or Service); add one, or set mtls.mode for the namespace",
            ));
        }
        for (k, m) in &self.port_level_mtls {
            let f = format!("portLevelMtls.{k}");
            match k.parse::<u16>() {
                Ok(p) if p > 0 => {}
                _ => return Err(ConfigError::invalid(f, "the key must be a port number (1-65535)")),
            }
            if m.mode == MtlsSetting::Unset {
                return Err(ConfigError::invalid(
                    format!("{f}.mode"),
                    "must be STRICT, PERMISSIVE or DISABLE (leave the port out to inherit)",
                ));
            }
        }
        Ok(())
    }
}

/// One PeerAuthentication as [`resolve`] reads it.
pub struct Policy<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// Orders policies of one scope: the oldest wins (creation revision, then name).
    pub created: u64,
    pub spec: &'a PeerAuthenticationSpec,
}

/// The mode of the workload `workload` (of Service `service`) in `namespace` on `port`, given the
/// mesh default and every PeerAuthentication (see the module docs for the order). Of two
/// policies with the same scope, the oldest applies.
pub fn resolve(
    mesh: MtlsMode,
    policies: &[Policy<'_>],
    namespace: &str,
    service: &str,
    workload: &str,
    port: u16,
) -> MtlsMode {
    resolve_with_source(mesh, policies, namespace, service, workload, port).0
}

/// [`resolve`], with the policy that set the mode and its scope (`None`: the mesh default), for
/// `weft describe`.
pub fn resolve_with_source<'p>(
    mesh: MtlsMode,
    policies: &'p [Policy<'p>],
    namespace: &str,
    service: &str,
    workload: &str,
    port: u16,
) -> (MtlsMode, Option<(&'p Policy<'p>, Scope)>) {
    let mut applicable: Vec<(&Policy<'_>, Scope)> = policies
        .iter()
        .filter_map(|p| {
            let scope = p.spec.scope(p.namespace);
            let applies = match scope {
                Scope::Mesh => true,
                Scope::Namespace => p.namespace == namespace,
                Scope::Service => {
                    p.namespace == namespace && p.spec.target_ref.as_ref().is_some_and(|t| t.name == service)
                }
                Scope::Workload => {
                    p.namespace == namespace && p.spec.target_ref.as_ref().is_some_and(|t| t.name == workload)
                }
            };
            applies.then_some((p, scope))
        })
        .collect();
    // Most specific first; within a scope, the oldest first.
    applicable.sort_by(|(a, sa), (b, sb)| sb.cmp(sa).then(a.created.cmp(&b.created)).then(a.name.cmp(b.name)));
    let mut seen = None;
    for (p, scope) in applicable {
        if seen == Some(scope) {
            continue; // an older policy of this scope already had its say
        }
        seen = Some(scope);
        if let Some(m) = p.spec.mode_for(port) {
            return (m, Some((p, scope)));
        }
    }
    (mesh, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PeerAuthenticationSpec {
        let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_most_specific_level_wins() {
        let mesh = spec("mtls: {mode: PERMISSIVE}");
        let ns = spec("mtls: {mode: STRICT}");
        let svc = spec(
            "targetRef: {kind: Service, name: api}\nmtls: {mode: UNSET}\nportLevelMtls: {'9090': {mode: DISABLE}}",
        );
        let wl = spec("targetRef: {kind: Workload, name: api-1}\nportLevelMtls: {'8080': {mode: PERMISSIVE}}");
        let p = |namespace, name, spec| Policy { namespace, name, created: 1, spec };
        let all = [p(ROOT_NAMESPACE, "m", &mesh), p("shop", "n", &ns), p("shop", "s", &svc), p("shop", "w", &wl)];
        let r = |ns, svc, wl, port| resolve(MtlsMode::Strict, &all, ns, svc, wl, port);
        assert_eq!(r("shop", "api", "api-1", 8080), MtlsMode::Permissive, "workload port");
        assert_eq!(r("shop", "api", "api-1", 9090), MtlsMode::Disable, "service port beats namespace");
        assert_eq!(r("shop", "api", "api-2", 8080), MtlsMode::Strict, "namespace beats mesh");
        assert_eq!(r("other", "api", "api-1", 8080), MtlsMode::Permissive, "mesh-wide policy");
        assert_eq!(resolve(MtlsMode::Disable, &[], "x", "y", "z", 1), MtlsMode::Disable, "MeshConfig default");
    }

    #[test]
    fn the_source_names_the_policy_and_level_that_set_the_mode() {
        let ns = spec("mtls: {mode: PERMISSIVE}");
        let svc = spec("targetRef: {kind: Service, name: api}\nportLevelMtls: {'9090': {mode: DISABLE}}");
        let all = [
            Policy { namespace: "shop", name: "n", created: 1, spec: &ns },
            Policy { namespace: "shop", name: "s", created: 1, spec: &svc },
        ];
        let r = |port| {
            let (mode, source) = resolve_with_source(MtlsMode::Strict, &all, "shop", "api", "api-1", port);
            (mode, source.map(|(p, scope)| (p.name, scope.as_str())))
        };
        assert_eq!(r(9090), (MtlsMode::Disable, Some(("s", "service"))));
        assert_eq!(
            r(8080),
            (MtlsMode::Permissive, Some(("n", "namespace"))),
            "the service policy says nothing of 8080"
        );
        assert_eq!(resolve_with_source(MtlsMode::Strict, &all, "other", "a", "b", 1).0, MtlsMode::Strict);
        assert!(resolve_with_source(MtlsMode::Strict, &all, "other", "a", "b", 1).1.is_none(), "the mesh default");
    }

    #[test]
    fn the_oldest_policy_of_a_scope_applies() {
        let a = spec("mtls: {mode: DISABLE}");
        let b = spec("mtls: {mode: PERMISSIVE}");
        let all = [
            Policy { namespace: "ns", name: "young", created: 9, spec: &a },
            Policy { namespace: "ns", name: "old", created: 3, spec: &b },
        ];
        assert_eq!(resolve(MtlsMode::Strict, &all, "ns", "s", "w", 80), MtlsMode::Permissive);
    }

    #[test]
    fn bad_specs_name_the_field() {
        for (yaml, field) in [
            ("portLevelMtls: {'80': {mode: STRICT}}", "portLevelMtls"),
            ("targetRef: {kind: Gateway, name: g}", "targetRef.kind"),
            ("targetRef: {kind: Workload, name: w}\nportLevelMtls: {http: {mode: STRICT}}", "portLevelMtls.http"),
            ("targetRef: {kind: Workload, name: w}\nportLevelMtls: {'80': {}}", "portLevelMtls.80.mode"),
        ] {
            match spec(yaml).validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{yaml}"),
                other => panic!("{yaml}: {other:?}"),
            }
        }
    }
}
