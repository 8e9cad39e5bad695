//! Generates the gRPC types of proto/ with a vendored protoc: no system package needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts run single-threaded; PROTOC is how prost-build finds protoc.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/weft/mesh/v1/mesh.proto",
            "proto/envoy/service/auth/v3/external_auth.proto",
            "proto/opentelemetry/proto/collector/trace/v1/trace_service.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
