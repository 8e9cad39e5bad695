//! The JSON Schemas in `docs/schema/` are generated from the Rust types; this test keeps them in
//! step. For each resource kind it checks two files:
//!
//! - `docs/schema/<kind>.json`: the kind's `spec` (`MeshConfigSpec`, `ServiceSpec`, `WorkloadSpec`, `LinkSpec`);
//! - `docs/schema/<kind>-resource.json`: the whole document (`apiVersion`, `kind`, `metadata`,
//!   `spec`), for editors (`# yaml-language-server: $schema=...`).
//!
//! When a type changes, regenerate them with:
//!
//! ```sh
//! WEFT_UPDATE_SCHEMA=1 cargo test -p weft-api --test schema
//! ```
//!
//! It also checks that every complete example in `docs/resources.md` and `docs/traffic.md` is
//! accepted.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use weft_api::backend_policy::BackendPolicySpec;
use weft_api::kinds::{LinkSpec, MeshConfigSpec, ServiceSpec, WorkloadSpec};
use weft_api::peer_authentication::PeerAuthenticationSpec;
use weft_api::request_authn::RequestAuthenticationSpec;
use weft_api::resilience::ResiliencePolicySpec;
use weft_api::resource::{check_references, parse_documents, Kind, Metadata, API_VERSION};
use weft_api::route::{GrpcRouteSpec, HttpRouteSpec, TcpRouteSpec};

const UPDATE_VAR: &str = "WEFT_UPDATE_SCHEMA";

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Draft 2020-12, spelled out rather than `schema_for!`'s default (which schemars may change).
fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12().into_generator()
}

/// The schema of a kind's `spec` alone.
fn spec_schema<S: JsonSchema>() -> Value {
    generator().into_root_schema_for::<S>().to_value()
}

/// The schema of a whole resource document of `kind` whose spec is `S`. `Object` (the envelope)
/// has an untyped `spec` and no `JsonSchema`, so it is assembled here from `Metadata` and `S`,
/// following `Object`'s serde attributes: camelCase, unknown fields refused, `spec` optional
/// (absent means `{}`, so it is required only when the spec has required fields).
fn resource_schema<S: JsonSchema>(kind: Kind, description: &str) -> Value {
    let mut gen = generator();
    let metadata = gen.subschema_for::<Metadata>().to_value();
    let spec = gen.subschema_for::<S>().to_value();
    let spec_required = spec_schema::<S>().get("required").and_then(Value::as_array).is_some_and(|r| !r.is_empty());
    let mut required = vec!["apiVersion", "kind", "metadata"];
    if spec_required {
        required.push("spec");
    }
    let defs = gen.take_definitions(true);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("{kind} resource"),
        "description": description,
        "type": "object",
        "properties": {
            "apiVersion": { "const": API_VERSION },
            "kind": { "const": kind.as_str() },
            "metadata": metadata,
            "spec": spec,
        },
        "required": required,
        "additionalProperties": false,
        "$defs": defs,
    })
}

/// Every file the test owns: name and content.
fn expected() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    for kind in Kind::ALL {
        let name = kind.as_str().to_ascii_lowercase();
        let (spec, resource) = match kind {
            Kind::MeshConfig => (
                spec_schema::<MeshConfigSpec>(),
                resource_schema::<MeshConfigSpec>(
                    kind,
                    "Mesh-wide settings: trust domain, this cluster's name, network and locality.",
                ),
            ),
            Kind::Service => (
                spec_schema::<ServiceSpec>(),
                resource_schema::<ServiceSpec>(
                    kind,
                    "A named service: its ports and tags. Workloads register instances of it.",
                ),
            ),
            Kind::Workload => (
                spec_schema::<WorkloadSpec>(),
                resource_schema::<WorkloadSpec>(
                    kind,
                    "One instance of a service (a registration): address, port, identity, health checks.",
                ),
            ),
            Kind::Link => (
                spec_schema::<LinkSpec>(),
                resource_schema::<LinkSpec>(
                    kind,
                    "A link to another cluster, stored by `weft link apply` from the peer's credential.",
                ),
            ),
            Kind::HTTPRoute => (
                spec_schema::<HttpRouteSpec>(),
                resource_schema::<HttpRouteSpec>(
                    kind,
                    "Gateway API HTTPRoute attached to a Service (GAMMA): matches, filters, weighted backends.",
                ),
            ),
            Kind::GRPCRoute => (
                spec_schema::<GrpcRouteSpec>(),
                resource_schema::<GrpcRouteSpec>(
                    kind,
                    "Gateway API GRPCRoute attached to a Service (GAMMA): gRPC service/method matches, weighted backends.",
                ),
            ),
            Kind::TCPRoute => (
                spec_schema::<TcpRouteSpec>(),
                resource_schema::<TcpRouteSpec>(
                    kind,
                    "Gateway API TCPRoute attached to a Service (GAMMA): weighted per-connection shifting.",
                ),
            ),
            Kind::BackendPolicy => (
                spec_schema::<BackendPolicySpec>(),
                resource_schema::<BackendPolicySpec>(
                    kind,
                    "How callers treat one Service's endpoints: load balancer, connection limits, outlier detection.",
                ),
            ),
            Kind::ResiliencePolicy => (
                spec_schema::<ResiliencePolicySpec>(),
                resource_schema::<ResiliencePolicySpec>(
                    kind,
                    "Retries with a budget, timeouts, fault injection and a local rate limit for a Service or HTTPRoute rule.",
                ),
            ),
            Kind::PeerAuthentication => (
                spec_schema::<PeerAuthenticationSpec>(),
                resource_schema::<PeerAuthenticationSpec>(
                    kind,
                    "Whether workloads require mTLS from callers (STRICT, PERMISSIVE, DISABLE): per namespace, Service, Workload or port.",
                ),
            ),
            Kind::AuthorizationPolicy => (
                spec_schema::<weft_api::authz::AuthorizationPolicySpec>(),
                resource_schema::<weft_api::authz::AuthorizationPolicySpec>(
                    kind,
                    "Who may call a workload, and what: ALLOW, DENY, AUDIT or CUSTOM rules on source identity, request and JWT.",
                ),
            ),
            Kind::RequestAuthentication => (
                spec_schema::<RequestAuthenticationSpec>(),
                resource_schema::<RequestAuthenticationSpec>(
                    kind,
                    "Which JWTs a workload accepts on inbound HTTP requests: issuers, keys (JWKS or OpenID Connect discovery), audiences.",
                ),
            ),
            Kind::Telemetry => (
                spec_schema::<weft_api::telemetry::TelemetrySpec>(),
                resource_schema::<weft_api::telemetry::TelemetrySpec>(
                    kind,
                    "What workloads' proxies record beyond metrics: access logs, on or off, JSON or text, to stdout or a file.",
                ),
            ),
        };
        files.push((format!("{name}.json"), spec));
        files.push((format!("{name}-resource.json"), resource));
    }
    files
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("a schema serializes");
    s.push('\n');
    s
}

#[test]
fn committed_schemas_match_the_types() {
    let dir = docs_dir().join("schema");
    let files = expected();
    if std::env::var_os(UPDATE_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        for (name, schema) in &files {
            let path = dir.join(name);
            std::fs::write(&path, pretty(schema)).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        return;
    }
    let mut stale = Vec::new();
    for (name, schema) in &files {
        let path = dir.join(name);
        // Compared as JSON values, not text: key order may depend on serde_json's features.
        let committed: Option<Value> =
            std::fs::read_to_string(&path).ok().and_then(|text| serde_json::from_str(&text).ok());
        if committed.as_ref() != Some(schema) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "these JSON Schemas are missing or differ from the Rust types:\n  {}\n\
         regenerate them with:\n  {UPDATE_VAR}=1 cargo test -p weft-api --test schema\n\
         and commit the result",
        stale.join("\n  ")
    );
}

/// The fenced ```yaml blocks of `docs/resources.md` that hold resources (`apiVersion:`) are
/// complete examples: each must be accepted, and together they must satisfy the cross-resource
/// rules. Examples of invalid input are written in other fences.
#[test]
fn examples_in_resources_md_are_valid() {
    examples_are_valid("resources.md");
}

/// The same for the worked examples of `docs/traffic.md` (routes and the Services they name).
#[test]
fn examples_in_traffic_md_are_valid() {
    examples_are_valid("traffic.md");
}

fn examples_are_valid(page: &str) {
    let path = docs_dir().join(page);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml") => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    let blocks: Vec<String> = blocks.into_iter().filter(|b| b.contains("apiVersion:")).collect();
    assert!(!blocks.is_empty(), "{} has no ```yaml examples", path.display());
    let mut all = Vec::new();
    for block in &blocks {
        let resources =
            parse_documents(block).unwrap_or_else(|e| panic!("example in {} is refused: {e}\n{block}", path.display()));
        all.extend(resources);
    }
    check_references(all.iter()).unwrap_or_else(|e| panic!("examples in {}: {e}", path.display()));
}
