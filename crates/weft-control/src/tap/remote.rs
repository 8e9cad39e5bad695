//! Live tap across links (`GET /v1/tap?cluster=<peer>|all`): `Federation.Tap`.
//!
//! ```text
//!  importer API ── open() ── TLS (peer's roots, control identity) + link secret ──► exporter
//!                                                                     serve(): TapHub::open
//!  NDJSON ◄── events ◄──────────────── stream of TapEvents ◄────────── its proxies' events
//! ```
//! The exporter checks the importer's link secret as `Trusts` does, and applies the same limits
//! and filters as its own `GET /v1/tap`.

use super::{TapHub, Target};
use crate::federation::Federation;
use crate::tokens::{Grant, Tokens};
use futures_util::Stream;
use std::pin::Pin;
use std::time::{Duration, SystemTime};
use tonic::{Request, Response, Status};
use weft_api::pb;
use weft_api::tap::{TapEvent, TapFilter, MAX_EVENTS, MAX_SECONDS};

pub type TapStream = Pin<Box<dyn Stream<Item = Result<pb::TapEvents, Status>> + Send>>;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The exporter's side of `Federation.Tap`: a tap on this cluster's proxies for a linked cluster.
pub fn serve(
    tokens: &Tokens,
    federation: &Federation,
    hub: &TapHub,
    local_cluster: &str,
    req: Request<pb::FederationTapRequest>,
) -> Result<Response<TapStream>, Status> {
    let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
    let r = req.get_ref();
    // As `Trusts`: the credential's secret (before the link's own replaces it) or this importer's.
    let (establishing, issued_ms) = match tokens.verify_header(header) {
        Ok(Grant::Link { issued_ms }) => (true, issued_ms),
        Ok(Grant::LinkStream { cluster, issued_ms }) if cluster == r.cluster => (false, issued_ms),
        Ok(_) => return Err(Status::permission_denied("Tap needs this importer's link secret")),
        Err(e) => return Err(Status::unauthenticated(format!("link secret: {e}"))),
    };
    federation.check_revoked(&r.cluster, issued_ms, establishing).map_err(Status::permission_denied)?;
    if !weft_api::valid_name(&r.cluster) {
        return Err(Status::invalid_argument("FederationTapRequest.cluster must be the linking cluster's name"));
    }
    let filter = r.filter.as_ref().map(TapFilter::from).unwrap_or_default();
    filter.validate().map_err(|e| Status::invalid_argument(format!("filter.{e}")))?;
    let target = Target { namespace: r.namespace.clone(), service: r.service.clone(), workload: r.workload.clone() };
    for (name, v) in [("namespace", &target.namespace), ("service", &target.service), ("workload", &target.workload)] {
        if !v.is_empty() && !weft_api::valid_name(v) {
            return Err(Status::invalid_argument(format!("{name}: {v:?} is not a name")));
        }
    }
    let (max, seconds) = (r.max.clamp(1, MAX_EVENTS), r.seconds.clamp(1, MAX_SECONDS));
    let tap = hub.open(target, filter, now_ms() + seconds * 1000);
    tracing::info!(importer = %r.cluster, tap = tap.id, max, seconds, "tap opened for a linked cluster");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let cluster = local_cluster.to_string();
    let stream =
        futures_util::stream::unfold((tap, max, deadline, cluster), |(mut tap, left, deadline, cluster)| async move {
            if left == 0 {
                return None;
            }
            let e = tokio::time::timeout_at(deadline, tap.events.recv()).await.ok().flatten()?;
            let mut wire = e.to_wire();
            if wire.cluster.is_empty() {
                wire.cluster = cluster.clone();
            }
            let batch = pb::TapEvents { events: vec![wire], dropped: 0 };
            Some((Ok(batch), (tap, left - 1, deadline, cluster)))
        });
    Ok(Response::new(Box::pin(stream)))
}

/// What the importer needs to reach a linked cluster's control plane.
pub struct Peer {
    pub cluster: String,
    pub spec: weft_api::kinds::LinkSpec,
    pub roots: Vec<Vec<u8>>,
}

/// The Links stored in `store` (the clusters this one imports from), by cluster name.
pub fn peers(store: &weft_store::Store, federation: &Federation) -> Vec<Peer> {
    use weft_api::resource::{Kind, Resource};
    let links = store.list(Some(Kind::Link), None).unwrap_or_default();
    links
        .into_iter()
        .filter_map(|r| match r {
            Resource::Link(l) => Some(Peer {
                roots: federation.peer_roots(&l.metadata.name),
                cluster: l.metadata.name.clone(),
                spec: l.spec,
            }),
            _ => None,
        })
        .collect()
}

/// Opens a tap on `peer`'s proxies (`Federation.Tap`, with this cluster's link secret) and sends
/// its events to `out` until it ends, `out` closes, or the peer fails (said on `out` as an error).
pub async fn follow(
    peer: Peer,
    local_cluster: String,
    mut req: pb::FederationTapRequest,
    out: tokio::sync::mpsc::Sender<Result<TapEvent, String>>,
) {
    let name = peer.cluster.clone();
    req.cluster = local_cluster;
    let run = async {
        let mut last = String::new();
        for address in peer.spec.dial_addresses() {
            // Dialled and verified as the link stream does it.
            let client =
                crate::federation::import::federation_client(&name, &peer.spec, peer.roots.clone(), &address).await;
            let mut client = match client {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let mut call = Request::new(req.clone());
            let bearer = format!("Bearer {}", peer.spec.secret).parse().map_err(|_| "the link secret is malformed")?;
            call.metadata_mut().insert("authorization", bearer);
            let mut stream = client.tap(call).await.map_err(|s| s.message().to_string())?.into_inner();
            loop {
                tokio::select! {
                    next = stream.message() => match next {
                        Ok(Some(batch)) => {
                            for e in &batch.events {
                                let event = TapEvent::from_wire(e, &e.cluster, &e.proxy);
                                if out.send(Ok(event)).await.is_err() {
                                    return Ok(());
                                }
                            }
                        }
                        Ok(None) => return Ok(()),
                        Err(s) => return Err(s.message().to_string()),
                    },
                    _ = out.closed() => return Ok(()),
                }
            }
        }
        Err(last)
    };
    if let Err(e) = run.await {
        let _ = out.send(Err(format!("cluster {name}: {e}"))).await;
    }
}
