//! Authorization of inbound requests.
//!
//! - [`custom`]: CUSTOM rules delegate the decision to an external authorizer
//!   ([`custom::check`]).
//! - [`ext`]: the clients of those authorizers (MeshConfig `extensionProviders`): Envoy's HTTP
//!   `ext_authz` service semantics and its gRPC `envoy.service.auth.v3.Authorization/Check`.

pub mod custom;
pub mod ext;
