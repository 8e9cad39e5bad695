//! Clients of external authorizers (MeshConfig `extensionProviders`), as the control plane sends
//! them: one [`Provider`] per name, kept across updates while its spec is unchanged (so its
//! connections are reused), swapped atomically when it changes.
//!
//! ```text
//!  inbound request ──► custom::check(provider) ──► Provider ──http──► HTTP authorizer (2xx: allow)
//!                                                          └─grpc──► Authorization/Check (OK: allow)
//! ```
//!
//! Every failure (unreachable, timed out, a malformed answer, a 5xx of an HTTP service) fails
//! closed, denying with the provider's `statusOnError`, unless the provider sets `failOpen`.

pub(crate) mod connect;
mod grpc;
mod http;

use crate::authz::custom::{CheckContext, Decision};
use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_api::ext_authz::{ExtensionProvider, ProviderKind};
use weft_api::ConfigError;

/// Why a check failed (not a denial: the authorizer gave no usable answer).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("cannot reach {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("answered with an error: {0}")]
    Failed(String),
    #[error("answered something that is not a decision: {0}")]
    Malformed(String),
}

/// One external authorizer: its spec and its client.
pub struct Provider {
    spec: ExtensionProvider,
    client: Client,
}

enum Client {
    Http(http::HttpClient),
    Grpc(grpc::GrpcClient),
}

impl Provider {
    /// A client for `spec` (already validated); `mark` is the SO_MARK of its connections (see
    /// `outbound.mark`), so that in transparent mode they are not intercepted by this proxy.
    pub fn new(spec: ExtensionProvider, mark: u32) -> Result<Self, ConfigError> {
        let connector = connect::Connector::new(&spec.address, mark, spec.timeout.into());
        let client = match spec.kind {
            ProviderKind::Http => Client::Http(http::HttpClient::new(&spec, connector)),
            ProviderKind::Grpc => Client::Grpc(grpc::GrpcClient::new(&spec, connector)?),
        };
        Ok(Provider { spec, client })
    }

    pub fn spec(&self) -> &ExtensionProvider {
        &self.spec
    }

    /// Asks the authorizer about `req`, within the provider's timeout. `Err`: no decision (the
    /// caller applies `failOpen`).
    pub async fn ask(&self, ctx: &CheckContext<'_>, req: &::http::request::Parts) -> Result<Decision, CheckError> {
        let timeout: std::time::Duration = self.spec.timeout.into();
        let call = async {
            match &self.client {
                Client::Http(c) => c.check(&self.spec, req).await,
                Client::Grpc(c) => c.check(ctx, req).await,
            }
        };
        tokio::time::timeout(timeout, call).await.unwrap_or(Err(CheckError::Timeout(timeout)))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub provider: String,
    /// `allow`, `deny` (the authorizer's answers), `failed_closed` (no usable answer, or no such
    /// provider: denied), `failed_open` (no usable answer, `failOpen`: allowed).
    pub result: &'static str,
}

/// `weft_ext_authz_checks_total{provider,result}`.
#[derive(Clone, Default)]
pub struct Metrics {
    pub checks: Family<CheckLabels, Counter>,
}

impl Metrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Metrics::default();
        reg.sub_registry_with_prefix("weft").register(
            "ext_authz_checks",
            "Checks of external authorizers (CUSTOM authorization), by provider and result",
            m.checks.clone(),
        );
        m
    }
}

/// The providers this proxy knows, by name.
pub struct Providers {
    mark: u32,
    by_name: ArcSwap<BTreeMap<String, Arc<Provider>>>,
    metrics: Metrics,
}

impl Providers {
    /// No provider yet; the metrics counted but registered nowhere (see [`Providers::with_metrics`]).
    pub fn new(mark: u32) -> Self {
        Providers::with_metrics(mark, Metrics::default())
    }

    pub fn with_metrics(mark: u32, metrics: Metrics) -> Self {
        Providers { mark, by_name: ArcSwap::from_pointee(BTreeMap::new()), metrics }
    }

    /// Counts one check of `provider`.
    pub(crate) fn count(&self, provider: &str, result: &'static str) {
        self.metrics.checks.get_or_create(&CheckLabels { provider: provider.to_string(), result }).inc();
    }

    /// The provider called `name`, if the mesh declares one.
    pub fn get(&self, name: &str) -> Option<Arc<Provider>> {
        self.by_name.load().get(name).cloned()
    }

    /// Names of the providers known, in order.
    pub fn names(&self) -> Vec<String> {
        self.by_name.load().keys().cloned().collect()
    }

    /// The specs of the providers known, in name order (for `/config_dump`).
    pub fn specs(&self) -> Vec<ExtensionProvider> {
        self.by_name.load().values().map(|p| p.spec.clone()).collect()
    }

    /// Replaces the providers with `specs` (validated): all or none. A provider whose spec did
    /// not change keeps its client and connections.
    pub fn update(&self, specs: &[ExtensionProvider]) -> Result<(), ConfigError> {
        let now = self.by_name.load();
        let mut next = BTreeMap::new();
        for (i, spec) in specs.iter().enumerate() {
            spec.validate(&format!("extension_providers[{i}]"))?;
            let p = match now.get(&spec.name) {
                Some(p) if p.spec == *spec => p.clone(),
                _ => Arc::new(Provider::new(spec.clone(), self.mark)?),
            };
            next.insert(spec.name.clone(), p);
        }
        self.by_name.store(Arc::new(next));
        Ok(())
    }
}

/// The providers of a discovery update, each checked as MeshConfig checks it; the first bad one
/// is named.
pub fn providers_from(update: &weft_api::pb::ProxyUpdate) -> Result<Vec<ExtensionProvider>, ConfigError> {
    let specs: Vec<ExtensionProvider> = update
        .extension_providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let field = format!("extension_providers[{i}]");
            let spec: ExtensionProvider = serde_json::from_str(&p.json)
                .map_err(|e| ConfigError::invalid(&field, format!("not an extension provider: {e}")))?;
            spec.validate(&field)?;
            Ok(spec)
        })
        .collect::<Result<_, ConfigError>>()?;
    weft_api::ext_authz::validate_providers(&specs)?;
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::pb;

    fn update(json: &[&str]) -> pb::ProxyUpdate {
        pb::ProxyUpdate {
            extension_providers: json.iter().map(|j| pb::ExtensionProvider { json: j.to_string() }).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_bad_provider_in_an_update_is_named_and_rejects_it() {
        let ok = r#"{"name":"opa","kind":"grpc","address":"127.0.0.1:9191"}"#;
        assert_eq!(providers_from(&update(&[ok])).unwrap()[0].name, "opa");
        let e = providers_from(&update(&[ok, "{}"])).unwrap_err().to_string();
        assert!(e.contains("extension_providers[1]") && e.contains("not an extension provider"), "{e}");
        let e = providers_from(&update(&[r#"{"name":"opa","kind":"grpc","address":"x"}"#])).unwrap_err().to_string();
        assert!(e.contains("extension_providers[0].address"), "{e}");
        let e = providers_from(&update(&[ok, ok])).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[tokio::test]
    async fn an_unchanged_provider_keeps_its_client() {
        let providers = Providers::new(0);
        let specs = providers_from(&update(&[r#"{"name":"opa","kind":"grpc","address":"127.0.0.1:9191"}"#])).unwrap();
        providers.update(&specs).unwrap();
        let before = providers.get("opa").unwrap();
        providers.update(&specs).unwrap();
        assert!(Arc::ptr_eq(&before, &providers.get("opa").unwrap()));
        providers.update(&[]).unwrap();
        assert!(providers.get("opa").is_none());
    }
}
