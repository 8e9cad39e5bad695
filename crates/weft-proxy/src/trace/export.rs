//! The export task: finished spans from a bounded queue, in batches (up to [`MAX_BATCH`], or what
//! came within [`BATCH_DELAY`] of the first), to the collector's
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` over a lazy tonic channel dialled
//! with the proxy's SO_MARK (never intercepted). The task ends when the tracer it serves is
//! replaced or turned off (its queue's sender is dropped), after sending what was queued.

use super::{kv, s, Metrics, Resource, QUEUE_SPANS};
use crate::authz::ext::connect::Connector;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;
use weft_api::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use weft_api::otlp::collector::trace::v1::ExportTraceServiceRequest;
use weft_api::otlp::common::v1::InstrumentationScope;
use weft_api::otlp::resource::v1::Resource as OtlpResource;
use weft_api::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use weft_api::trace::OtlpExporter;

/// The most spans in one export call.
pub const MAX_BATCH: usize = 512;
/// How long the task waits for more spans after the first of a batch.
pub const BATCH_DELAY: Duration = Duration::from_millis(500);

/// Starts the export task for `spec`; returns its queue.
pub(super) fn spawn(spec: &OtlpExporter, mark: u32, resource: &Resource, metrics: Metrics) -> mpsc::Sender<Span> {
    let (tx, rx) = mpsc::channel(QUEUE_SPANS);
    let timeout: Duration = spec.timeout.into();
    // The endpoint was validated as http://host:port.
    let ep = Endpoint::from_shared(spec.endpoint.clone())
        .unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:4317"))
        .timeout(timeout)
        .connect_timeout(timeout);
    let channel = ep.connect_with_connector_lazy(Connector::new(spec.address(), mark, timeout));
    let client = TraceServiceClient::new(channel);
    let resource = OtlpResource {
        attributes: vec![
            kv("service.name", s(resource.service_account.as_str())),
            kv("service.namespace", s(resource.namespace.as_str())),
            kv("weft.identity", s(resource.identity.as_str())),
            kv("weft.cluster", s(resource.cluster.as_str())),
        ],
        dropped_attributes_count: 0,
    };
    tokio::spawn(run(rx, client, resource, metrics, spec.endpoint.clone()));
    tx
}

async fn run(
    mut rx: mpsc::Receiver<Span>,
    client: TraceServiceClient<tonic::transport::Channel>,
    resource: OtlpResource,
    metrics: Metrics,
    endpoint: String,
) {
    let mut failing = false;
    loop {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        let mut closed = false;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "weft-proxy".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: batch,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        match client.clone().export(req).await {
            Ok(answer) => {
                let rejected = answer.into_inner().partial_success.map_or(0, |p| p.rejected_spans.max(0) as u64);
                metrics.count("exported", n.saturating_sub(rejected));
                if rejected > 0 {
                    metrics.count("failed", rejected);
                }
                if failing {
                    tracing::info!(%endpoint, "tracing: exporting spans again");
                    failing = false;
                }
            }
            Err(status) => {
                metrics.count("failed", n);
                // One line per failure streak, not one per batch.
                if !failing {
                    tracing::warn!(%endpoint, code = ?status.code(), error = %crate::control::causes(&status),
                        "tracing: the OTLP collector did not take {n} spans (check tracing.otlp.endpoint)");
                    failing = true;
                }
            }
        }
        if closed {
            return;
        }
    }
}
