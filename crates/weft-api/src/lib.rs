//! weft's typed configuration:
//! - the proxy's config file ([`proxy::ProxyConfig`]);
//! - the control plane's declarative resources ([`resource::Resource`]: MeshConfig, Service,
//!   Workload with its health checks), Kubernetes-shaped, with JSON Schema from the Rust types.
//!
//! Everything is read with unknown fields refused and checked by `validate()`; errors name the
//! field path and the fix. Wire types live here; domain types in the crates that use them.
#![forbid(unsafe_code)]

mod duration;
/// gRPC types of `proto/weft/mesh/v1/mesh.proto`: the proxy ↔ control plane API.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("weft.mesh.v1");
}
pub mod authz;
/// gRPC types of `proto/envoy/service/auth/v3/external_auth.proto`: the subset of Envoy's
/// external authorization API that the proxy calls (`Authorization/Check`).
pub mod envoy_auth {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("envoy.service.auth.v3");
}
/// gRPC types of `proto/opentelemetry/`: the subset of OTLP's trace export that the proxy's span
/// exporter speaks (`opentelemetry.proto.collector.trace.v1.TraceService/Export`).
pub mod otlp {
    #![allow(clippy::all, missing_docs)]
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.common.v1");
        }
    }
    pub mod resource {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.resource.v1");
        }
    }
    pub mod trace {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.trace.v1");
        }
    }
    pub mod collector {
        pub mod trace {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
            }
        }
    }
}
pub mod backend_policy;
pub mod ca;
pub mod ext_authz;
pub mod kinds;
pub mod link;
pub mod loglimit;
pub mod peer_authentication;
pub mod proxy;
pub mod request_authn;
pub mod resilience;
pub mod resource;
pub mod route;
pub mod tap;
pub mod telemetry;
pub mod token;
pub mod trace;
pub mod traffic;

pub use duration::Duration;

/// A configuration error: where it is (a field path or file position) and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML did not parse or did not match the schema (the message carries line and column).
    #[error("{0}")]
    Parse(String),
    /// A rule across fields was broken.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// A DNS-label-like name: lowercase letters, digits and '-', 1..=63 chars, no leading or
/// trailing '-'. Names of resources, namespaces, clusters, tags.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { field: field.into(), message: message.into() }
    }

    /// The same error with its field path under `prefix` (`prefix.field`); a parse error is left
    /// as it is. For validators of a part of a larger document.
    pub fn under(self, prefix: impl std::fmt::Display) -> Self {
        self.map_field(|field| format!("{prefix}.{field}"))
    }

    /// The same error with its field path rewritten by `f`; a parse error is left as it is.
    pub fn map_field(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            ConfigError::Invalid { field, message } => ConfigError::Invalid { field: f(field), message },
            other => other,
        }
    }
}
