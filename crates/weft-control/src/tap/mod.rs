//! Live tap and config dumps on the control plane's side of the discovery streams.
//!
//! ```text
//!  GET /v1/tap ─► TapHub::open ─► open taps (watch) ─► each discovery stream sends the taps its
//!                     ▲                                proxy takes part in (ProxyUpdate.taps)
//!                     │
//!  NDJSON ◄─ sink ◄── TapHub::deliver ◄── ProxyMessage.tap_events (tagged with tap ids)
//!
//!  GET /v1/proxies/{id}/config ─► TapHub::config_dump ─► that proxy's stream
//!     (ProxyUpdate.config_dump_request) ─► ProxyMessage.config_dump ─► TapHub::answer
//! ```
//! A tap ends when its [`Tap`] is dropped: the API client went away, or `max` events or
//! `seconds` passed. The streams then send their proxies the taps left (none: tapping off).

pub mod remote;

use crate::catalog::Catalog;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use weft_api::pb;
use weft_api::tap::{TapEvent, TapFilter};

/// Events queued per tap for its API client at most; more are dropped.
pub const SINK: usize = 1024;
/// How long `GET /v1/proxies/{id}/config` waits for the proxy's answer.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which proxies a tap asks: those of a namespace, a service, a workload (each empty: any).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub service: String,
    pub workload: String,
}

/// A tap as the discovery streams see it.
#[derive(Debug)]
pub struct OpenTap {
    pub id: u64,
    pub target: Target,
    pub filter: TapFilter,
    pub expires_unix_ms: u64,
}

/// One discovery stream, as taps and config dumps need it.
pub struct Stream {
    pub conn: u64,
    pub proxy_id: String,
    pub identity: String,
    pub namespace: String,
    pub workload: String,
}

type Taps = Arc<Vec<Arc<OpenTap>>>;

/// The open taps, where their events go, and the config dumps asked for.
#[derive(Clone)]
pub struct TapHub(Arc<Inner>);

struct Inner {
    next: AtomicU64,
    open: watch::Sender<Taps>,
    sinks: Mutex<HashMap<u64, mpsc::Sender<TapEvent>>>,
    /// Each stream's proxy id and where to ask it for its config.
    streams: Mutex<HashMap<u64, (String, mpsc::Sender<u64>)>>,
    dumps: Mutex<HashMap<u64, oneshot::Sender<String>>>,
    /// Events proxies said they dropped (latest count per stream).
    dropped: Mutex<HashMap<u64, u64>>,
}

impl Default for TapHub {
    fn default() -> Self {
        TapHub(Arc::new(Inner {
            next: AtomicU64::new(1),
            open: watch::Sender::new(Arc::new(vec![])),
            sinks: Default::default(),
            streams: Default::default(),
            dumps: Default::default(),
            dropped: Default::default(),
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An open tap: its events arrive on `events`; dropping it closes the tap.
pub struct Tap {
    pub id: u64,
    pub events: mpsc::Receiver<TapEvent>,
    hub: TapHub,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.hub.close(self.id);
    }
}

/// Why a config dump could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("no proxy {0:?} is connected (see `weft proxy-status` for the ids)")]
    NotConnected(String),
    #[error("proxy {0:?} did not answer within {1:?} (an older proxy, or its stream is stuck)")]
    NoAnswer(String, Duration),
    #[error("proxy {0:?} disconnected before it answered")]
    Gone(String),
}

impl TapHub {
    /// Opens a tap on the proxies of `target` for requests passing `filter`, until `expires_unix_ms`.
    pub fn open(&self, target: Target, filter: TapFilter, expires_unix_ms: u64) -> Tap {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SINK);
        lock(&self.0.sinks).insert(id, tx);
        let tap = Arc::new(OpenTap { id, target, filter, expires_unix_ms });
        self.0.open.send_modify(|v| *v = Arc::new(v.iter().cloned().chain([tap]).collect()));
        Tap { id, events: rx, hub: self.clone() }
    }

    fn close(&self, id: u64) {
        lock(&self.0.sinks).remove(&id);
        self.0.open.send_modify(|v| *v = Arc::new(v.iter().filter(|t| t.id != id).cloned().collect()));
    }

    /// The taps open now, and every change to them.
    pub fn subscribe(&self) -> watch::Receiver<Taps> {
        self.0.open.subscribe()
    }

    /// How many taps are open.
    pub fn open_count(&self) -> usize {
        self.0.open.borrow().len()
    }

    /// A discovery stream starts: config dump requests for it arrive on the receiver.
    pub fn register(&self, conn: u64, proxy_id: &str) -> mpsc::Receiver<u64> {
        let (tx, rx) = mpsc::channel(4);
        lock(&self.0.streams).insert(conn, (proxy_id.to_string(), tx));
        rx
    }

    /// A discovery stream ended.
    pub fn unregister(&self, conn: u64) {
        lock(&self.0.streams).remove(&conn);
        lock(&self.0.dropped).remove(&conn);
    }

    /// Events the connected proxies dropped (rate limit, full queue), as they last said.
    pub fn dropped(&self) -> u64 {
        lock(&self.0.dropped).values().sum()
    }

    /// Events from the proxy of `stream` (placed in `cluster`), to the taps they name.
    pub fn deliver(&self, stream: &Stream, cluster: &str, batch: pb::TapEvents) {
        lock(&self.0.dropped).insert(stream.conn, batch.dropped);
        let open = self.0.open.borrow().clone();
        let sinks = lock(&self.0.sinks);
        for e in &batch.events {
            let event = TapEvent::from_wire(e, cluster, &stream.proxy_id);
            for id in &e.taps {
                // Only taps this proxy was sent, and only what passes their filter.
                let Some(tap) = open.iter().find(|t| t.id == *id) else { continue };
                if !tap_applies(&tap.target, None, stream) || !tap.filter.matches(&event) {
                    continue;
                }
                if let Some(sink) = sinks.get(id) {
                    let _ = sink.try_send(event.clone());
                }
            }
        }
    }

    /// The effective config of proxy `proxy_id`, as it reports it (JSON).
    pub async fn config_dump(&self, proxy_id: &str) -> Result<serde_json::Value, DumpError> {
        let ask = lock(&self.0.streams).values().find(|(p, _)| p == proxy_id).map(|(_, tx)| tx.clone());
        let Some(ask) = ask else { return Err(DumpError::NotConnected(proxy_id.to_string())) };
        let request = self.0.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.0.dumps).insert(request, tx);
        let result = async {
            ask.send(request).await.map_err(|_| DumpError::Gone(proxy_id.to_string()))?;
            match tokio::time::timeout(DUMP_TIMEOUT, rx).await {
                Ok(Ok(json)) => Ok(serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json))),
                Ok(Err(_)) => Err(DumpError::Gone(proxy_id.to_string())),
                Err(_) => Err(DumpError::NoAnswer(proxy_id.to_string(), DUMP_TIMEOUT)),
            }
        }
        .await;
        lock(&self.0.dumps).remove(&request);
        result
    }

    /// A proxy's answer to config dump `request`.
    pub fn answer(&self, request: u64, json: String) {
        if let Some(tx) = lock(&self.0.dumps).remove(&request) {
            let _ = tx.send(json);
        }
    }
}

/// The `name.namespace` of each service of `stream`'s workload, by app port.
fn inbound_services(cat: &Catalog, stream: &Stream) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    for s in cat.services.values() {
        for i in &s.instances {
            if i.identity == stream.identity && (stream.workload.is_empty() || i.name == stream.workload) {
                out.entry(u32::from(i.address.port())).or_insert_with(|| format!("{}.{}", s.name, s.namespace));
            }
        }
    }
    out
}

/// Whether `target` takes in the proxy of `stream`: its namespace, one of its services (`own`:
/// the `name.namespace` of its workload's services, when known), its workload.
fn tap_applies(target: &Target, own: Option<&BTreeMap<u32, String>>, stream: &Stream) -> bool {
    if !target.namespace.is_empty() && target.namespace != stream.namespace {
        return false;
    }
    if !target.workload.is_empty() && !stream.workload.is_empty() && target.workload != stream.workload {
        return false;
    }
    if !target.service.is_empty() {
        if let Some(own) = own {
            return own.values().any(|n| {
                n.split_once('.').is_some_and(|(svc, ns)| {
                    svc == target.service && (target.namespace.is_empty() || ns == target.namespace)
                })
            });
        }
    }
    true
}

/// The taps of `open` that the proxy of `stream` takes part in, as sent to it.
pub fn for_proxy(open: &[Arc<OpenTap>], cat: &Catalog, stream: &Stream) -> Vec<pb::Tap> {
    if open.is_empty() {
        return vec![];
    }
    let own = inbound_services(cat, stream);
    // A workload target names a Workload: the proxy's own, or one running as its identity.
    let runs = |w: &str| {
        stream.workload == w
            || (stream.workload.is_empty()
                && cat
                    .services
                    .values()
                    .flat_map(|s| &s.instances)
                    .any(|i| i.name == w && i.identity == stream.identity))
    };
    open.iter()
        .filter(|t| tap_applies(&t.target, Some(&own), stream))
        .filter(|t| t.target.workload.is_empty() || runs(&t.target.workload))
        .map(|t| pb::Tap {
            id: t.id,
            src: t.filter.src.clone(),
            dst: t.filter.dst.clone(),
            path: t.filter.path.clone(),
            method: t.filter.method.clone(),
            status: t.filter.status.clone(),
            expires_unix_ms: t.expires_unix_ms,
            max_per_second: weft_api::tap::DEFAULT_PER_SECOND,
            inbound_services: own.clone().into_iter().collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogService, Instance};

    fn catalog() -> Catalog {
        let instance = |name: &str, sa: &str, port: u16| Instance {
            name: name.into(),
            address: format!("127.0.0.1:{port}").parse().unwrap(),
            sidecar: "127.0.0.1:1".parse().unwrap(),
            identity: format!("spiffe://td/ns/demo/sa/{sa}"),
            cluster: String::new(),
            network: String::new(),
            locality: String::new(),
            labels: Default::default(),
            tags: vec![],
            healthy: true,
            visibility: None,
            weight: 1,
            mtls: Default::default(),
        };
        let mut cat = Catalog::default();
        for (svc, inst) in [("api", instance("api-1", "api", 9001)), ("web", instance("web-1", "web", 9002))] {
            let s = CatalogService {
                name: svc.into(),
                namespace: "demo".into(),
                instances: vec![inst],
                ..Default::default()
            };
            cat.services.insert(("demo".into(), svc.into()), s.into());
        }
        cat
    }

    fn stream(sa: &str, workload: &str) -> Stream {
        Stream {
            conn: 1,
            proxy_id: sa.into(),
            identity: format!("spiffe://td/ns/demo/sa/{sa}"),
            namespace: "demo".into(),
            workload: workload.into(),
        }
    }

    #[test]
    fn taps_go_to_the_proxies_of_their_target_with_the_names_of_their_ports() {
        let hub = TapHub::default();
        let cat = catalog();
        let all = hub.open(Target::default(), TapFilter::default(), 0);
        let api = hub.open(Target { service: "api".into(), ..Default::default() }, TapFilter::default(), 0);
        let other_ns = hub.open(Target { namespace: "prod".into(), ..Default::default() }, TapFilter::default(), 0);
        let web_wl = hub.open(Target { workload: "web-1".into(), ..Default::default() }, TapFilter::default(), 0);
        let open = hub.subscribe().borrow().clone();
        let ids = |s: &Stream| for_proxy(&open, &cat, s).iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(ids(&stream("api", "")), [all.id, api.id]);
        assert_eq!(ids(&stream("web", "")), [all.id, web_wl.id]);
        assert_eq!(ids(&stream("web", "web-1")), [all.id, web_wl.id]);
        let sent = for_proxy(&open, &cat, &stream("api", "api-1"));
        assert_eq!(sent[0].inbound_services.get(&9001).map(String::as_str), Some("api.demo"));
        drop((api, other_ns, web_wl));
        assert_eq!(hub.open_count(), 1, "a dropped tap is closed");
        drop(all);
        assert!(hub.subscribe().borrow().is_empty());
    }

    #[tokio::test]
    async fn events_reach_the_taps_they_name_if_their_filter_passes() {
        let hub = TapHub::default();
        let mut gets = hub.open(Target::default(), TapFilter { method: "GET".into(), ..Default::default() }, 0);
        let mut all = hub.open(Target::default(), TapFilter::default(), 0);
        let event = |method: &str, taps: Vec<u64>| pb::TapEvent {
            taps,
            method: method.into(),
            direction: "inbound".into(),
            status: 200,
            ..Default::default()
        };
        let batch = pb::TapEvents {
            events: vec![event("GET", vec![gets.id, all.id]), event("POST", vec![gets.id, all.id])],
            dropped: 3,
        };
        hub.deliver(&stream("api", ""), "east", batch);
        let got = gets.events.try_recv().unwrap();
        assert_eq!((got.method.as_str(), got.cluster.as_str(), got.proxy.as_str()), ("GET", "east", "api"));
        assert!(gets.events.try_recv().is_err(), "the POST does not pass the GET tap's filter");
        assert_eq!(all.events.try_recv().unwrap().method, "GET");
        assert_eq!(all.events.try_recv().unwrap().method, "POST");
        assert_eq!(hub.dropped(), 3);
    }

    #[tokio::test]
    async fn a_config_dump_goes_to_the_proxy_and_back() {
        let hub = TapHub::default();
        assert!(matches!(hub.config_dump("nope").await, Err(DumpError::NotConnected(_))));
        let mut asks = hub.register(7, "api-1");
        let answer = {
            let hub = hub.clone();
            tokio::spawn(async move {
                let request = asks.recv().await.unwrap();
                hub.answer(request, r#"{"identity":"x"}"#.into());
            })
        };
        let v = hub.config_dump("api-1").await.unwrap();
        assert_eq!(v["identity"], "x");
        answer.await.unwrap();
    }
}
