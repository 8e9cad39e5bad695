//! The weft control plane.
//!
//! ```text
//!   sources (file, HTTP registrations, applied resources) ──► registry ──► catalog (watch)
//!                                                                           │
//!        proxies ◄── Discovery.Stream (gRPC, versioned pushes, acks) ◄──────┤
//!        proxies ──► Identity.Sign (CSR + bootstrap token) ──► CA            │
//!        CLI/UI  ──► HTTP API (tokens)                                       └─► DNS
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod api_tls;
pub mod audit;
pub mod authz;
pub mod ca;
pub mod catalog;
pub mod consul;
pub mod dashboard;
pub mod datadir;
pub mod diagnose;
pub mod discovery;
pub mod federation;
pub mod grpc_tls;
pub mod health;
pub mod http_serve;
pub mod links;
pub mod loglimit;
pub mod metrics;
pub mod naming;
pub mod policies;
pub mod registry;
pub mod remote;
pub mod request_authn;
pub mod resilience;
pub mod rotation;
pub mod routes_api;
pub mod security_status;
pub mod server;
pub mod signer;
pub mod stats;
pub mod stats_api;
pub mod tap;
pub mod tap_api;
pub mod telemetry;
pub mod token_store;
pub mod tokens;
pub mod tokens_api;
pub mod vips;

pub use server::{ControlConfig, ControlError, ControlPlane};
