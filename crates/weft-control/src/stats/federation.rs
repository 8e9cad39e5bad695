//! `cluster=all` across linked clusters: `Federation.Stats`, served by each cluster for the
//! clusters it exports to (their link secret, as `Trusts`), and asked by this one of every
//! cluster it links to (`weft link apply`), over the link's verified TLS.

use super::query::{Edge, Query, Row};
use serde::Serialize;
use std::time::Duration;
use tonic::Status;
use weft_api::pb;
use weft_api::resource::{Kind, Resource};

/// How long a linked cluster may take to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// A linked cluster as `/v1/stats` lists it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ClusterState {
    pub name: String,
    pub reachable: bool,
    pub error: Option<String>,
}

/// What a linked cluster answered.
pub enum PeerAnswer {
    Rows(Vec<Row>),
    Edges(Vec<Edge>),
}

/// Asks every linked cluster (or only `only`) for its part of `req`.
pub async fn fan_out(
    store: &weft_store::Store,
    federation: &crate::federation::Federation,
    local_cluster: &str,
    req: pb::StatsRequest,
    only: Option<&str>,
) -> Vec<(ClusterState, Option<PeerAnswer>)> {
    let links: Vec<_> = match store.list(Some(Kind::Link), None) {
        Ok(v) => v
            .into_iter()
            .filter_map(|r| match r {
                Resource::Link(l) => Some(l),
                _ => None,
            })
            .filter(|l| only.is_none_or(|c| c == l.metadata.name))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "stats: cannot list links");
            vec![]
        }
    };
    let calls = links.into_iter().map(|l| {
        let mut req = req.clone();
        req.cluster = local_cluster.to_string();
        let roots = federation.peer_roots(&l.metadata.name);
        async move {
            let name = l.metadata.name.clone();
            let answer = tokio::time::timeout(PEER_TIMEOUT, ask(&name, &l.spec, roots, req)).await;
            let answer = match answer {
                Ok(r) => r,
                Err(_) => Err(format!("cluster {name} did not answer within {PEER_TIMEOUT:?}")),
            };
            match answer {
                Ok(a) => (ClusterState { name, reachable: true, error: None }, Some(a)),
                Err(e) => (ClusterState { name, reachable: false, error: Some(e) }, None),
            }
        }
    });
    futures_util::future::join_all(calls).await
}

async fn ask(
    name: &str,
    spec: &weft_api::kinds::LinkSpec,
    roots: Vec<Vec<u8>>,
    req: pb::StatsRequest,
) -> Result<PeerAnswer, String> {
    let mut last = format!("cluster {name}: no address to dial");
    for address in spec.dial_addresses() {
        let mut client = match crate::federation::import::federation_client(name, spec, roots.clone(), &address).await {
            Ok(c) => c,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let mut r = tonic::Request::new(req.clone());
        let bearer =
            format!("Bearer {}", spec.secret).parse().map_err(|_| "the link secret is malformed".to_string())?;
        r.metadata_mut().insert("authorization", bearer);
        let reply = match client.stats(r).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                return Err(format!("cluster {name} runs a weft without Federation.Stats; upgrade it"))
            }
            Err(s) => return Err(format!("cluster {name} refused: {}", s.message())),
        };
        let parsed = if req.query == "edges" {
            serde_json::from_str(&reply.json).map(PeerAnswer::Edges)
        } else {
            serde_json::from_str(&reply.json).map(PeerAnswer::Rows)
        };
        return parsed.map_err(|e| format!("cluster {name} answered unreadable stats: {e}"));
    }
    Err(last)
}

/// Linked clusters by trust domain: those this one links to (`store`'s Links, when given) and
/// those that import from it.
pub fn domains(store: Option<&weft_store::Store>, federation: &crate::federation::Federation) -> super::query::Domains {
    let mut out: super::query::Domains =
        federation.importers().into_iter().map(|i| (i.trust_domain, i.cluster)).collect();
    if let Some(Ok(links)) = store.map(|s| s.list(Some(Kind::Link), None)) {
        for r in links {
            if let Resource::Link(l) = r {
                out.insert(l.spec.trust_domain.clone(), l.metadata.name.clone());
            }
        }
    }
    out
}

/// This cluster's answer to a linked cluster's `Federation.Stats` (its caller already
/// authenticated).
pub async fn serve(
    stats: &super::Stats,
    cat: &crate::catalog::Catalog,
    domains: &super::query::Domains,
    req: &pb::StatsRequest,
) -> Result<pb::StatsReply, Status> {
    let window = req.window_seconds.clamp(10, 3600);
    let now = super::unix_now();
    let namespace = (!req.namespace.is_empty()).then(|| req.namespace.clone());
    let json = match req.query.as_str() {
        "edges" => {
            let edges = match &stats.prometheus {
                Some(p) => p.edges(cat, domains, window, namespace.as_deref()).await.map_err(Status::unavailable)?,
                None => stats.with(|i| super::query::edges(i, cat, domains, window, namespace.as_deref(), now)),
            };
            serde_json::to_string(&edges)
        }
        "stats" => {
            let by = super::query::By::parse(&req.by).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "StatsRequest.by {:?} is not service, workload, route or cluster",
                    req.by
                ))
            })?;
            let q = Query { by, window, namespace, history: req.history };
            let rows = match &stats.prometheus {
                Some(p) => p.rows(cat, &q).await.map_err(Status::unavailable)?,
                None => stats.with(|i| super::query::rows(i, cat, domains, &q, now)),
            };
            serde_json::to_string(&rows)
        }
        other => return Err(Status::invalid_argument(format!("StatsRequest.query {other:?} must be stats or edges"))),
    }
    .map_err(|e| Status::internal(e.to_string()))?;
    Ok(pb::StatsReply { json })
}
