//! The proxy's side of the control plane: get a certificate for a key made here (bootstrap token
//! → CSR → Identity.Sign), renew it at half-life, and follow Discovery.Stream — applying each
//! versioned update atomically and acknowledging it. While the control plane is away the proxy
//! keeps serving with its last good config and certificate, and reconnects with backoff.

use crate::routes::Routes;
use crate::Ctx;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;
use weft_api::pb;
use weft_api::proxy::{Control, Protocol, Service};
use weft_api::ConfigError;
use weft_identity::control::ControlTrust;
use weft_identity::{CertStore, Leaf, LeafKey, TrustBundle};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest discovery update accepted: every update is a complete snapshot, and one holding
/// every service of a large mesh (a gateway, a sidecar in transparent mode) passes tonic's
/// default of 4 MiB at about 45,000 endpoints. The control plane is trusted (TLS, pinned root).
pub const MAX_UPDATE_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control plane at {addr} unreachable: {} (is `weft control` running?)", causes(.source))]
    Connect { addr: SocketAddr, source: tonic::transport::Error },
    #[error("control plane refused: {}", .0.message())]
    Refused(tonic::Status),
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    #[error("identity: {0}")]
    Identity(#[from] weft_identity::Error),
    /// A delta update that does not apply on top of what the stream sent before.
    #[error("{0}")]
    Resync(String),
}

/// An error with its causes, `a: b: c` (tonic's transport error alone says only "transport error").
pub(crate) fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

impl From<tonic::Status> for ControlError {
    fn from(s: tonic::Status) -> Self {
        ControlError::Refused(s)
    }
}

/// How this proxy verifies the control plane's TLS certificate: the roots in `control.ca_file`,
/// else, once it has a trust bundle from the control plane (`known`), that bundle's roots (so a
/// root rotation carries it along), else the root fingerprint its bootstrap token carries.
fn trust(control: &Control, token: &str, known: Option<&CertStore>) -> Result<ControlTrust, ControlError> {
    if let Some(f) = &control.ca_file {
        let pem = std::fs::read_to_string(f)
            .map_err(|e| ConfigError::invalid("control.ca_file", format!("cannot read {f}: {e}")))?;
        let bundle =
            TrustBundle::from_pem(&pem).map_err(|e| ConfigError::invalid("control.ca_file", format!("{f}: {e}")))?;
        return Ok(ControlTrust::Roots(bundle));
    }
    if let Some(store) = known {
        return Ok(ControlTrust::Roots((*store.bundle()).clone()));
    }
    match weft_api::token::ca_pin(token) {
        Some(pin) => Ok(ControlTrust::Pin(pin)),
        None => Err(ConfigError::invalid(
            "control.ca_file",
            "the bootstrap token carries no CA fingerprint, so the control plane cannot be verified: set `ca_file` to the mesh's root (`weft ca --pem > root.pem`), or use a token from `weft token create`",
        )
        .into()),
    }
}

/// Dials the control plane over TLS (verified per [`trust`]) with the proxy's SO_MARK, so that in
/// transparent mode its own connection is not redirected back into its outbound listener.
#[derive(Clone)]
struct ControlConnector {
    addr: SocketAddr,
    mark: u32,
    /// The SNI sent: the reserved name of the token's control plane when the token names its
    /// cluster (an east-west gateway in front of it forwards that name), else `control.weft`.
    sni: String,
    tls: tokio_rustls::TlsConnector,
}

type ControlIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower_service::Service<http::Uri> for ControlConnector {
    type Response = ControlIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let ControlConnector { addr, mark, sni, tls } = self.clone();
        Box::pin(async move {
            let tcp = crate::net::tcp_connect(addr, mark, CONNECT_TIMEOUT).await?;
            let name = rustls_pki_types::ServerName::try_from(sni)?;
            let handshake = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, tcp));
            match handshake.await {
                Ok(Ok(s)) => Ok(hyper_util::rt::TokioIo::new(s)),
                Ok(Err(e)) => Err(format!("TLS with the control plane: {e}").into()),
                Err(_) => Err("TLS with the control plane: timed out".into()),
            }
        })
    }
}

/// The trust domain whose control identity this proxy expects: the one its bootstrap token names.
fn trust_domain(token: &str) -> Result<String, ControlError> {
    weft_api::token::trust_domain(token).ok_or_else(|| {
        ConfigError::invalid(
            "control.token",
            "the bootstrap token names no trust domain (`td`; tokens made before weft reserved the control plane's identity), so the proxy cannot tell which control plane to expect: create a new one with `weft token create --identity <ns>/<sa>`",
        )
        .into()
    })
}

/// A channel to `control.address`, verified per [`trust`] for this `token`; presenting the
/// proxy's certificate once it has one (`certs`), so the control plane lists the verified identity.
async fn channel(
    control: &Control,
    token: &str,
    mark: u32,
    certs: Option<&CertStore>,
    known: Option<&CertStore>,
) -> Result<Channel, ControlError> {
    let addr = control.address;
    let tls = weft_identity::control::client_config(trust(control, token, known)?, &trust_domain(token)?, certs)?;
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| ControlError::Connect { addr, source })?
        .connect_timeout(CONNECT_TIMEOUT)
        // A control plane that vanished without closing (host down, partition) is noticed within
        // ~40 s by HTTP/2 PINGs, and the proxy reconnects, instead of waiting forever on a dead stream.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    // The TLS checks do not depend on the SNI: the control plane is verified by its root (pin or
    // `ca_file`), its control identity and marker, also through a gateway.
    let sni = weft_api::token::control_cluster(token)
        .map_or_else(|| weft_identity::control::CONTROL_SERVER_NAME.to_string(), |c| weft_api::link::control_sni(&c));
    let connector = ControlConnector { addr, mark, sni, tls: tokio_rustls::TlsConnector::from(Arc::new(tls)) };
    ep.connect_with_connector(connector).await.map_err(|source| ControlError::Connect { addr, source })
}

fn with_token<T>(msg: T, token: &str) -> Result<Request<T>, ControlError> {
    let mut req = Request::new(msg);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| ConfigError::invalid("control.token", "contains characters not allowed in a header"))?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

/// A gRPC channel to the control plane, TLS verified as the proxy does it (`control.ca_file`, else
/// the pin in `control`'s token), for tools and tests that speak the protocol themselves.
pub async fn connect(control: &Control, mark: u32) -> Result<Channel, ControlError> {
    channel(control, &control.read_token()?, mark, None, None).await
}

/// The certificate to present to the control plane, unless it has expired (the control plane
/// would refuse the handshake; the token alone still opens the stream while renewal catches up).
fn presentable(certs: &CertStore) -> Option<&CertStore> {
    (!certs.leaf().remaining().is_zero()).then_some(certs)
}

/// As [`connect`], presenting `certs` (this proxy's certificate) as the discovery stream does.
pub async fn connect_presenting(control: &Control, mark: u32, certs: &CertStore) -> Result<Channel, ControlError> {
    channel(control, &control.read_token()?, mark, Some(certs), Some(certs)).await
}

/// Gets a new certificate: key made here, CSR sent, chain and bundle back. `mark` is the
/// proxy's SO_MARK (`outbound.mark`; 0 for none), so interception rules let the call through.
pub async fn sign(control: &Control, mark: u32) -> Result<(Leaf, TrustBundle), ControlError> {
    sign_knowing(control, mark, None).await
}

/// As [`sign`], verifying the control plane against `known`'s bundle when given.
async fn sign_knowing(
    control: &Control,
    mark: u32,
    known: Option<&CertStore>,
) -> Result<(Leaf, TrustBundle), ControlError> {
    let token = control.read_token()?;
    let mut key = LeafKey::generate_unnamed()?;
    let mut client = pb::identity_client::IdentityClient::new(channel(control, &token, mark, None, known).await?);
    let resp = match client.sign(with_token(pb::SignRequest { csr_der: key.csr_der()? }, &token)?).await {
        Ok(r) => r.into_inner(),
        // An external CA copies the identity from the CSR: name the one the control plane says
        // this token may have, in a CSR for a new key (which still never leaves this process).
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            let named = s.metadata().get(weft_api::ca::CSR_IDENTITY_METADATA).and_then(|v| v.to_str().ok());
            let Some(id) = named.and_then(|u| u.parse::<weft_identity::SpiffeId>().ok()) else {
                return Err(s.into());
            };
            key = LeafKey::generate(&id)?;
            client.sign(with_token(pb::SignRequest { csr_der: key.csr_der()? }, &token)?).await?.into_inner()
        }
        Err(s) => return Err(s.into()),
    };
    let bundle = bundle_from(&resp.bundles, &resp.bundle_der).map_err(ControlError::Config)?;
    let chain = resp.chain_der.into_iter().map(Into::into).collect();
    Ok((key.into_leaf(chain)?, bundle))
}

/// The first certificate, retried with backoff until the control plane answers (a proxy without
/// an identity cannot serve). A refusal (bad token) is final.
pub async fn bootstrap(control: &Control, mark: u32) -> Result<CertStore, ControlError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match sign(control, mark).await {
            Ok((leaf, bundle)) => return Ok(CertStore::new(leaf, bundle)?),
            // Unreachable, or its CA (an external one) cannot sign yet: both pass.
            Err(e) if passing(&e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "waiting for the control plane");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a failed first signing is worth retrying: the control plane is unreachable, or it
/// answers UNAVAILABLE (its external CA is unreachable or not set up yet).
fn passing(e: &ControlError) -> bool {
    match e {
        ControlError::Connect { .. } => true,
        ControlError::Refused(s) => s.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

/// The trust bundle the control plane sent: per trust domain when it sends `bundles` (each root
/// bound to its domain), else the plain roots (bound by their own SAN, or to the local domain).
pub fn bundle_from(bundles: &[pb::TrustDomainBundle], plain: &[Vec<u8>]) -> Result<TrustBundle, ConfigError> {
    if bundles.is_empty() {
        return Ok(TrustBundle::new(plain.iter().cloned().map(Into::into).collect()));
    }
    let mut roots = vec![];
    for (i, b) in bundles.iter().enumerate() {
        for r in &b.roots_der {
            roots.push((Some(b.trust_domain.clone()), r.clone().into()));
        }
        if b.roots_der.is_empty() {
            return Err(ConfigError::invalid(format!("bundles[{i}].roots_der"), "is empty"));
        }
    }
    TrustBundle::labelled(roots).map_err(|e| ConfigError::invalid("bundles", e.to_string()))
}

/// Converts an update into config-form services, naming the bad field on error.
pub fn services_from(update: &pb::ProxyUpdate) -> Result<Vec<Service>, ConfigError> {
    services_at(update.services.iter().enumerate())
}

/// Converts services into config form; each comes with its index in the update, which errors
/// name (`services[i]...`).
fn services_at<'a>(
    services: impl ExactSizeIterator<Item = (usize, &'a pb::Service)>,
) -> Result<Vec<Service>, ConfigError> {
    let mut out = Vec::with_capacity(services.len());
    for (i, s) in services {
        let mut endpoints = Vec::with_capacity(s.endpoints.len());
        for (j, e) in s.endpoints.iter().enumerate() {
            let f = |k: &str| format!("services[{i}].endpoints[{j}].{k}");
            let addr = |k: &str, v: &str| {
                v.parse::<SocketAddr>().map_err(|_| ConfigError::invalid(f(k), format!("{v:?} is not ip:port")))
            };
            endpoints.push(weft_api::proxy::Endpoint {
                address: addr("address", &e.address)?,
                proxy: Some(addr("proxy", &e.proxy)?),
                identity: e.identity.clone(),
                cluster: e.cluster.clone(),
                network: e.network.clone(),
                locality: e.locality.clone(),
                labels: e.labels.clone().into_iter().collect::<BTreeMap<_, _>>(),
                weight: e.weight.clamp(1, weft_api::proxy::MAX_ENDPOINT_WEIGHT),
                plaintext: e.plaintext,
            });
        }
        let mut ports = Vec::with_capacity(s.ports.len());
        for (j, p) in s.ports.iter().enumerate() {
            let protocol: Protocol =
                serde_json::from_value(serde_json::Value::String(p.protocol.clone())).map_err(|_| {
                    ConfigError::invalid(
                        format!("services[{i}].ports[{j}].protocol"),
                        format!("unknown protocol {:?}", p.protocol),
                    )
                })?;
            let port = u16::try_from(p.port)
                .map_err(|_| ConfigError::invalid(format!("services[{i}].ports[{j}].port"), "out of range"))?;
            ports.push(weft_api::proxy::AppPort { port, protocol, allow_connect: p.allow_connect, mtls: None });
        }
        out.push(Service {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            ports,
            endpoints,
            failover: s.failover.clone(),
            cluster_weights: s.cluster_weights.iter().map(|(c, w)| (c.clone(), *w)).collect(),
            outlier_detection: s.outlier_detection.as_ref().map(|o| weft_api::traffic::OutlierOverrides {
                consecutive_connect_failures: o.consecutive_connect_failures,
                consecutive_5xx: o.consecutive_5xx,
                base_ejection_time: o.base_ejection_time_ms.map(weft_api::Duration::from_millis),
                max_ejection_time: o.max_ejection_time_ms.map(weft_api::Duration::from_millis),
                max_ejection_percent: o.max_ejection_percent,
                consecutive_gateway_errors: o.consecutive_gateway_errors,
                interval: o.interval_ms.map(weft_api::Duration::from_millis),
                success_rate: o.success_rate.map(|sr| weft_api::traffic::SuccessRate {
                    minimum_hosts: sr.minimum_hosts,
                    request_volume: sr.request_volume,
                    stdev_factor: sr.stdev_factor,
                }),
            }),
            routes: routes_from(i, s),
            backend_policy: s
                .backend_policy
                .as_ref()
                .map(|p| {
                    weft_api::backend_policy::BackendPolicy::from_wire(p, &format!("services[{i}].backend_policy"))
                })
                .transpose()?,
            resilience: s
                .resilience
                .as_ref()
                .map(|r| resilience_from(r, &format!("services[{i}].resilience")))
                .transpose()?
                // Callers apply the rest; the rate limit is for the service's own proxies.
                .map(|mut r| {
                    r.rate_limit = None;
                    r
                })
                .filter(|r| r.retry.is_some() || r.timeouts.is_some() || !r.faults.is_empty()),
        });
    }
    Ok(out)
}

/// A service's routes. One that does not read or validate is dropped alone, with a warning
/// naming it and why (the control plane checked it, so only a newer control plane's route can
/// fail here); the rest of the update applies.
fn routes_from(i: usize, s: &pb::Service) -> Vec<weft_api::route::AttachedRoute> {
    s.routes
        .iter()
        .enumerate()
        .filter_map(|(j, r)| {
            match weft_api::route::RouteSpec::from_json(&r.kind, &r.spec_json).and_then(|route| {
                let mut resilience = std::collections::BTreeMap::new();
                for (rule, p) in &r.rule_resilience {
                    let spec = resilience_from(p, &format!("services[{i}].routes[{j}].rule_resilience[{rule}]"))?;
                    resilience.insert(rule.clone(), spec);
                }
                Ok((route, resilience))
            }) {
                Ok((route, resilience)) => Some(weft_api::route::AttachedRoute {
                    name: r.name.clone(),
                    namespace: r.namespace.clone(),
                    route,
                    resilience,
                }),
                Err(e) => {
                    tracing::warn!(
                        route = %format!("{} {}/{}", r.kind, r.namespace, r.name),
                        field = %format!("services[{i}].routes[{j}]"),
                        error = %e,
                        "route dropped: it does not read as this proxy's version of the kind"
                    );
                    None
                }
            }
        })
        .collect()
}

/// A policy as the control plane sends it, checked as the config file's would be.
fn resilience_from(r: &pb::Resilience, field: &str) -> Result<weft_api::resilience::Resilience, ConfigError> {
    let spec: weft_api::resilience::Resilience = serde_json::from_str(&r.json)
        .map_err(|e| ConfigError::invalid(field, format!("not a resilience policy: {e}")))?;
    spec.validate().map_err(|e| match e {
        ConfigError::Invalid { field: f, message } => ConfigError::invalid(format!("{field}.{f}"), message),
        other => other,
    })?;
    Ok(spec)
}

/// The rate limit of the service this proxy fronts, if the update carries one: (service, policy).
pub fn inbound_resilience_from(
    update: &pb::ProxyUpdate,
) -> Result<Option<(String, weft_api::resilience::Resilience)>, ConfigError> {
    let Some(r) = update.inbound.as_ref().and_then(|i| i.resilience.as_ref()) else { return Ok(None) };
    Ok(Some((r.service.clone(), resilience_from(r, "inbound.resilience")?)))
}

/// The authorization an update carries (policies and default), checked as the control plane
/// checked it; `None`: none sent (the local config's applies).
pub fn authorization_from(update: &pb::ProxyUpdate) -> Result<Option<weft_api::authz::Authorization>, ConfigError> {
    let Some(a) = update.inbound.as_ref().and_then(|i| i.authorization.as_ref()) else { return Ok(None) };
    let spec: weft_api::authz::Authorization = serde_json::from_str(&a.json)
        .map_err(|e| ConfigError::invalid("inbound.authorization", format!("not an authorization: {e}")))?;
    spec.validate().map_err(|e| e.under("inbound.authorization"))?;
    Ok(Some(spec))
}

/// The access-log config of the Telemetry an update carries, as (Telemetry name, config),
/// checked as the config file's `access_log` is; `None`: none sent (the config file's applies).
pub fn telemetry_from(
    update: &pb::ProxyUpdate,
) -> Result<Option<(String, weft_api::telemetry::AccessLogging)>, ConfigError> {
    let Some(t) = update.inbound.as_ref().and_then(|i| i.telemetry.as_ref()) else { return Ok(None) };
    if t.access_log_json.is_empty() {
        return Ok(None);
    }
    let at = "inbound.telemetry.access_log_json";
    let cfg: weft_api::telemetry::AccessLogging = serde_json::from_str(&t.access_log_json)
        .map_err(|e| ConfigError::invalid(at, format!("not an accessLogging: {e}")))?;
    cfg.validate_at(at)?;
    Ok(Some((t.name.clone(), cfg)))
}

/// The inbound ports an update carries, naming the bad field on error.
pub fn inbound_from(update: &pb::ProxyUpdate) -> Result<Vec<weft_api::proxy::AppPort>, ConfigError> {
    let ports = update.inbound.as_ref().map(|i| i.ports.as_slice()).unwrap_or_default();
    ports
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let f = |k: &str| format!("inbound.ports[{j}].{k}");
            let protocol: Protocol = serde_json::from_value(serde_json::Value::String(p.protocol.clone()))
                .map_err(|_| ConfigError::invalid(f("protocol"), format!("unknown protocol {:?}", p.protocol)))?;
            let port = u16::try_from(p.port).ok().filter(|p| *p != 0);
            let port = port.ok_or_else(|| ConfigError::invalid(f("port"), "must be 1-65535"))?;
            let mtls = weft_api::peer_authentication::MtlsMode::parse(&p.mtls).ok_or_else(|| {
                ConfigError::invalid(
                    f("mtls"),
                    format!("unknown mTLS mode {:?}; expected STRICT, PERMISSIVE or DISABLE", p.mtls),
                )
            })?;
            Ok(weft_api::proxy::AppPort { port, protocol, allow_connect: p.allow_connect, mtls: Some(mtls) })
        })
        .collect()
}

/// The RequestAuthentications an update carries, (name, spec), each validated again.
pub fn request_authn_from(
    update: &pb::ProxyUpdate,
) -> Result<Vec<(String, weft_api::request_authn::RequestAuthenticationSpec)>, ConfigError> {
    let list = update.inbound.as_ref().map(|i| i.request_authentication.as_slice()).unwrap_or_default();
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            let at = format!("inbound.request_authentication[{i}]");
            let spec: weft_api::request_authn::RequestAuthenticationSpec = serde_json::from_str(&p.spec_json)
                .map_err(|e| ConfigError::invalid(&at, format!("not a RequestAuthentication spec: {e}")))?;
            weft_api::request_authn::validate_at(&spec, &at)?;
            Ok((p.name.clone(), spec))
        })
        .collect()
}

/// The virtual IPs an update carries as (service key, cluster or empty, address), naming the bad
/// field on error.
pub fn virtual_ips_from(update: &pb::ProxyUpdate) -> Result<Vec<(String, String, std::net::IpAddr)>, ConfigError> {
    update
        .virtual_ips
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let address = v.address.parse().map_err(|_| {
                ConfigError::invalid(
                    format!("virtual_ips[{i}].address"),
                    format!("{:?} is not an IP address", v.address),
                )
            })?;
            Ok((format!("{}.{}", v.service, v.namespace), v.cluster.clone(), address))
        })
        .collect()
}

/// Applies one update: all of it or none of it. `held` holds every service after it, `changes`
/// says which it changed; `prev` is the routing table the stream's last applied update
/// installed, when it is still the one in use. A delta on top of `prev`, from the same place,
/// builds only the services it changed (see [`Routes::from_changes`]); otherwise every service
/// is built. Returns the table installed.
fn apply(
    ctx: &Ctx,
    update: &pb::ProxyUpdate,
    held: &Held,
    changes: &Changes,
    prev: Option<&Arc<Routes>>,
) -> Result<Arc<Routes>, String> {
    let inbound = inbound_from(update).map_err(|e| e.to_string())?;
    let vips = virtual_ips_from(update).map_err(|e| e.to_string())?;
    let limit = inbound_resilience_from(update).map_err(|e| e.to_string())?;
    let authz = authorization_from(update).map_err(|e| e.to_string())?;
    let providers = crate::authz::ext::providers_from(update).map_err(|e| e.to_string())?;
    let authn = request_authn_from(update).map_err(|e| e.to_string())?;
    let telemetry = telemetry_from(update).map_err(|e| e.to_string())?;
    let tracing = crate::trace::tracing_from(update).map_err(|e| e.to_string())?;
    ctx.apps.add_ports(inbound.iter().map(|p| p.port));
    let place = ctx.place();
    if let Some(p) = &update.placement {
        ctx.set_place(&p.cluster, &p.locality);
    }
    // The control plane names the cluster the proxy runs in (its own config may not).
    let cluster = if update.cluster.is_empty() { &ctx.cfg.cluster } else { &update.cluster };
    // Balancers are built for a place: a new one builds every service again.
    let routes = match prev.filter(|_| !changes.full && ctx.place() == place) {
        Some(prev) => {
            let changed = changes.changed.iter().map(|i| (*i, &update.services[*i]));
            let services = services_at(changed).map_err(|e| e.to_string())?;
            let keys: Vec<String> = held.services.keys().map(|(ns, name)| format!("{name}.{ns}")).collect();
            ctx.routes_changed(prev, &keys, &services)
                .map_err(|e| e.to_string())?
                .with_inbound(&inbound)
                .with_names_from(cluster, &vips, prev)
        }
        None => {
            let services =
                if changes.full { services_from(update) } else { services_at(held.services.values().enumerate()) };
            let services = services.map_err(|e| e.to_string())?;
            ctx.routes_for(&services).map_err(|e| e.to_string())?.with_inbound(&inbound).with_names(cluster, &vips)
        }
    };
    if !update.bundle_der.is_empty() || !update.bundles.is_empty() {
        let bundle = bundle_from(&update.bundles, &update.bundle_der).map_err(|e| e.to_string())?;
        let now = ctx.certs.bundle();
        if bundle.roots() != now.roots() || !bundle.domains().eq(now.domains()) {
            ctx.certs.set_bundle(bundle).map_err(|e| e.to_string())?;
        }
    }
    let routes = Arc::new(routes);
    ctx.routes.store(routes.clone());
    match &limit {
        Some((service, spec)) => ctx.resilience.update_inbound(Some(spec), service),
        None => ctx.resilience.update_inbound(None, ""),
    }
    ctx.authz.update(authz.as_ref());
    ctx.ext_authz.update(&providers).map_err(|e| e.to_string())?;
    // The config file's policies first: they win an issuer both name.
    let mut policies = crate::jwt::from_config(&ctx.cfg);
    policies.extend(authn);
    ctx.jwt.update(&policies);
    ctx.access_log.update(telemetry.as_ref().map(|(name, cfg)| (name.as_str(), cfg)));
    // Spans name the cluster the workload runs in, as the control plane places it.
    let placed = update.placement.as_ref().map(|p| p.cluster.as_str()).filter(|c| !c.is_empty());
    ctx.tracing.update(tracing.as_ref(), placed.unwrap_or(&update.cluster));
    Ok(routes)
}

async fn follow(ctx: &Arc<Ctx>, control: &Control, proxy_id: &str) -> Result<(), ControlError> {
    let token = control.read_token()?;
    let mut client = pb::discovery_client::DiscoveryClient::new(
        channel(control, &token, ctx.mark(), presentable(&ctx.certs), Some(&ctx.certs)).await?,
    )
    .max_decoding_message_size(MAX_UPDATE_BYTES);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ProxyMessage>(8);
    let hello = pb::Hello {
        proxy_id: proxy_id.to_string(),
        upstreams: control.upstreams.clone(),
        workload: control.workload.clone().unwrap_or_default(),
        // Primary-remote: where this proxy runs, so a control plane serving several clusters
        // places it there (the default `local` names none).
        cluster: if ctx.cfg.cluster == weft_api::proxy::DEFAULT_CLUSTER {
            String::new()
        } else {
            ctx.cfg.cluster.clone()
        },
        mode: match ctx.cfg.mode {
            weft_api::proxy::Mode::Sidecar => "sidecar",
            weft_api::proxy::Mode::Gateway => "gateway",
        }
        .into(),
        // Incremental updates: only the services that changed, after the first full update.
        accepts_delta: true,
    };
    let _ = tx.send(pb::ProxyMessage { kind: Some(pb::proxy_message::Kind::Hello(hello)) }).await;
    let outbound = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut updates = client.stream(with_token(outbound, &token)?).await?.into_inner();
    ctx.metrics.control_connected.set(1);
    // Live tap: events go up this stream, in batches, while it lasts.
    let forward_taps = tokio::spawn(crate::tap::forward(ctx.taps.connect(), ctx.clone(), tx.clone()));
    // Golden metrics for the control plane's history, every `stats_interval_ms` (see `stats`).
    let (interval_tx, interval_rx) = tokio::sync::watch::channel(crate::stats::DEFAULT_INTERVAL);
    let reporter = tokio::spawn(report_stats(ctx.clone(), tx.clone(), interval_rx));
    let _reporter = AbortOnDrop(reporter);
    let result = async {
        let mut held = Held::default();
        // The last update applied, without its services (`held` has them), and the routing
        // table it installed: what the next delta is applied on top of.
        let mut applied: Option<(pb::ProxyUpdate, Arc<Routes>)> = None;
        while let Some(mut update) = updates.message().await? {
            // A delta applies on top of what the stream sent before; one that does not ends the
            // stream, and the next one starts with a full update.
            let changes = held.apply(&update).map_err(ControlError::Resync)?;
            ctx.taps.set(&update.taps);
            if update.config_dump_request != 0 {
                let json = serde_json::to_string(&crate::admin::config_dump(ctx)).unwrap_or_default();
                let dump = pb::ConfigDump { request: update.config_dump_request, json };
                let _ = tx.send(pb::ProxyMessage { kind: Some(pb::proxy_message::Kind::ConfigDump(dump)) }).await;
            }
            let every = match update.stats_interval_ms {
                0 => crate::stats::DEFAULT_INTERVAL,
                ms => Duration::from_millis(ms.max(100)),
            };
            interval_tx.send_if_modified(|i| std::mem::replace(i, every) != every);
            // An update that changes only taps or asks for the config is acked, not applied again.
            let unchanged = changes.is_empty() && applied.as_ref().is_some_and(|(a, _)| same_config(a, &mut update));
            // The table the last update installed, if nothing replaced it since (a reload).
            let prev = applied.as_ref().map(|(_, r)| r).filter(|r| Arc::ptr_eq(r, &ctx.routes.load_full()));
            let result = match &applied {
                Some((_, routes)) if unchanged => Ok(routes.clone()),
                _ => apply(ctx, &update, &held, &changes, prev),
            };
            let error = match result {
                Ok(routes) => {
                    // Root rotation: a certificate of another root than the signing one is renewed
                    // now (a failure reconnects, and the next first update retries).
                    if !update.signing_root.is_empty() && leaf_root(&ctx.certs) != update.signing_root {
                        renew_now(ctx, control).await?;
                    }
                    ctx.metrics.config_version.set(update.version as i64);
                    ctx.ready.store(true, std::sync::atomic::Ordering::Release);
                    tracing::info!(
                        version = update.version,
                        services = held.services.len(),
                        changed = changes.changed.len(),
                        removed = changes.removed.len(),
                        full = changes.full,
                        "applied config from the control plane"
                    );
                    warn_gateway_cluster(ctx, &update);
                    applied = Some((bare(&mut update), routes));
                    String::new()
                }
                Err(e) => {
                    tracing::error!(version = update.version, error = %e, "rejected config from the control plane; keeping the previous one");
                    // The next update is built whole (the table in use is not this stream's).
                    applied = None;
                    e
                }
            };
            let ack = pb::Ack {
                version: update.version,
                error,
                leaf_root: leaf_root(&ctx.certs),
                leaf_not_after_unix: ctx
                    .certs
                    .leaf()
                    .not_after()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            };
            if tx.send(pb::ProxyMessage { kind: Some(pb::proxy_message::Kind::Ack(ack)) }).await.is_err() {
                break;
            }
        }
        Ok::<_, ControlError>(())
    }
    .await;
    forward_taps.abort();
    ctx.taps.disconnect();
    ctx.metrics.control_connected.set(0);
    result
}

/// Whether `b` carries the same config as `a` (a [`bare`] update) besides its services (which
/// [`Held::apply`] compares): they differ at most in their version, their delta fields, their
/// taps and a config dump request. Every other field counts, those added later included.
fn same_config(a: &pb::ProxyUpdate, b: &mut pb::ProxyUpdate) -> bool {
    *a == bare(b)
}

/// `u` without its services (the bulk of an update), version, delta fields, taps and config
/// dump request: what [`same_config`] compares.
fn bare(u: &mut pb::ProxyUpdate) -> pb::ProxyUpdate {
    // The services are set aside, not copied.
    let services = std::mem::take(&mut u.services);
    let b = pb::ProxyUpdate {
        version: 0,
        delta: false,
        base_version: 0,
        removed_services: vec![],
        taps: vec![],
        config_dump_request: 0,
        ..u.clone()
    };
    u.services = services;
    b
}

/// Aborts its task when dropped (the stream ended).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends a `StatsReport` on the stream every interval, until the stream ends.
async fn report_stats(
    ctx: Arc<Ctx>,
    tx: tokio::sync::mpsc::Sender<pb::ProxyMessage>,
    mut every: tokio::sync::watch::Receiver<Duration>,
) {
    loop {
        let wait = *every.borrow_and_update();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // A new interval starts a new wait.
            r = every.changed() => if r.is_err() { return } else { continue },
        }
        let report = crate::stats::snapshot(&ctx.registry);
        if tx.send(pb::ProxyMessage { kind: Some(pb::proxy_message::Kind::Stats(report)) }).await.is_err() {
            return;
        }
    }
}

/// The services a discovery stream sent so far, by (namespace, name), and the version they are of
/// (0: none yet): what a delta update applies to.
#[derive(Default)]
struct Held {
    version: u64,
    services: std::collections::BTreeMap<(String, String), pb::Service>,
}

/// What an update changed in the services a stream holds.
#[derive(Debug, Default, PartialEq)]
struct Changes {
    /// A full update: every service is new.
    full: bool,
    /// The index in the update of each service it added or changed (one equal to the one held
    /// is not counted).
    changed: Vec<usize>,
    /// The services it withdrew that were held.
    removed: Vec<(String, String)>,
}

impl Changes {
    /// Whether the update left the services as they were.
    fn is_empty(&self) -> bool {
        !self.full && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl Held {
    /// Applies `update`'s services to what is held: a delta replaces the services it carries and
    /// withdraws its removed ones; a full update replaces everything. A delta on top of another
    /// version than the held one is refused (nothing changes). Costs what the update carries
    /// (a delta: its services, each compared with the one held).
    fn apply(&mut self, update: &pb::ProxyUpdate) -> Result<Changes, String> {
        let mut changes = Changes::default();
        if update.delta {
            if self.version == 0 || self.version != update.base_version {
                return Err(format!(
                    "the control plane sent a delta against version {} of the stream, but this proxy holds {}; reconnecting for a full update",
                    update.base_version, self.version
                ));
            }
            for r in &update.removed_services {
                let key = (r.namespace.clone(), r.name.clone());
                if self.services.remove(&key).is_some() {
                    changes.removed.push(key);
                }
            }
            for (i, s) in update.services.iter().enumerate() {
                let key = (s.namespace.clone(), s.name.clone());
                if self.services.get(&key) != Some(s) {
                    self.services.insert(key, s.clone());
                    changes.changed.push(i);
                }
            }
        } else {
            self.services =
                update.services.iter().map(|s| ((s.namespace.clone(), s.name.clone()), s.clone())).collect();
            changes.full = true;
        }
        self.version = update.version;
        Ok(changes)
    }
}

/// Follows the discovery stream for as long as the proxy runs.
/// A gateway routes only SNI names of its own `cluster` (and the control-plane SNI of it): said
/// once per stream when that is not its control plane's cluster, since it then refuses every
/// connection meant for this cluster.
fn warn_gateway_cluster(ctx: &Ctx, update: &pb::ProxyUpdate) {
    if ctx.cfg.gateway.is_some()
        && update.version == 1
        && !update.cluster.is_empty()
        && update.cluster != ctx.cfg.cluster
    {
        tracing::warn!(
            configured = %ctx.cfg.cluster,
            control_plane = %update.cluster,
            "this gateway's `cluster` is {:?} but its control plane's cluster is {:?}: it refuses every connection for {:?} (`wrong-cluster`); set `cluster: {}` in its config, or, for the gateway of a remote cluster (primary-remote), give it a token made with `weft token create --cluster <its cluster>`",
            ctx.cfg.cluster,
            update.cluster,
            update.cluster,
            update.cluster
        );
    }
}

pub async fn discovery_loop(ctx: Arc<Ctx>, control: Control, proxy_id: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = tokio::time::Instant::now();
        match follow(&ctx, &control, &proxy_id).await {
            Ok(()) => tracing::warn!("control plane closed the discovery stream; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "discovery stream lost; serving the last good config"),
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// SHA-256 of the root (of the proxy's own trust domain, in its bundle) its certificate chains
/// to; empty when none does.
fn leaf_root(certs: &CertStore) -> Vec<u8> {
    let leaf = certs.leaf();
    let td = leaf.id().trust_domain();
    certs
        .bundle()
        .roots_for(td, td)
        .into_iter()
        .find(|r| leaf.verify_chain(&TrustBundle::new(vec![r.clone()])).is_ok())
        .map(|r| weft_identity::control::sha256(&r).to_vec())
        .unwrap_or_default()
}

/// `own` (the Sign answer: this mesh's roots only) plus the roots of other trust domains that
/// discovery installed (linked clusters'), so that a renewal does not drop them.
fn with_other_domains(own: TrustBundle, certs: &CertStore) -> TrustBundle {
    let td = certs.id().trust_domain().to_string();
    let current = certs.bundle();
    let others: Vec<_> = current
        .domains()
        .filter(|(d, _)| d.is_some_and(|d| d != td))
        .map(|(d, r)| (d.map(String::from), r.clone()))
        .collect();
    match TrustBundle::labelled(others) {
        Ok(b) => own.merged(&b),
        Err(_) => own,
    }
}

/// Gets a certificate from the CA's signing root now (root rotation), keeping the bundle that
/// discovery installed (it holds linked clusters' roots too).
async fn renew_now(ctx: &Ctx, control: &Control) -> Result<(), ControlError> {
    let (leaf, _) = sign_knowing(control, ctx.mark(), Some(&ctx.certs)).await?;
    ctx.certs.set_leaf(leaf)?;
    ctx.metrics.cert_rotations.inc();
    ctx.metrics.cert_expiry.set(crate::identity::expiry_secs(&ctx.certs.leaf()));
    tracing::info!("renewed the certificate under the CA's new root (root rotation)");
    Ok(())
}

/// Renews the certificate at half its remaining life, with no dropped connection.
pub async fn rotation_loop(ctx: Arc<Ctx>, control: Control) {
    loop {
        tokio::time::sleep(ctx.certs.leaf().remaining() / 2).await;
        match sign_knowing(&control, ctx.mark(), Some(&ctx.certs)).await {
            Ok((leaf, bundle)) => match ctx.certs.replace(leaf, Some(with_other_domains(bundle, &ctx.certs))) {
                Ok(()) => {
                    ctx.metrics.cert_rotations.inc();
                    ctx.metrics.cert_expiry.set(crate::identity::expiry_secs(&ctx.certs.leaf()));
                }
                Err(e) => tracing::error!(error = %e, "renewed certificate refused"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "certificate renewal failed; retrying in 5s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

#[cfg(test)]
mod virtual_ip_tests {
    use super::*;

    #[test]
    fn an_update_with_a_bad_authorization_is_refused_naming_the_field() {
        let update = |json: &str| pb::ProxyUpdate {
            inbound: Some(pb::Inbound {
                authorization: Some(pb::Authorization { json: json.into() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(authorization_from(&pb::ProxyUpdate::default()).unwrap(), None);
        let ok = authorization_from(&update(r#"{"default":"deny"}"#)).unwrap().unwrap();
        assert_eq!(ok.default, weft_api::authz::DefaultPolicy::Deny);
        let e = authorization_from(&update("{")).unwrap_err().to_string();
        assert!(e.starts_with("inbound.authorization"), "{e}");
        let bad = r#"{"policies":[{"name":"ns/p","spec":{"rules":[{"from":[{"source":{"ipBlocks":["nope"]}}]}]}}]}"#;
        let e = authorization_from(&update(bad)).unwrap_err().to_string();
        assert!(e.contains("inbound.authorization.policies[0] (ns/p).spec.rules[0].from[0].source.ipBlocks[0]"), "{e}");
    }

    #[test]
    fn virtual_ips_of_an_update_are_checked_and_the_bad_one_named() {
        let vip = |address: &str| pb::VirtualIp {
            service: "api".into(),
            namespace: "shop".into(),
            cluster: "west".into(),
            address: address.into(),
        };
        let update = pb::ProxyUpdate { virtual_ips: vec![vip("240.240.0.1")], ..Default::default() };
        assert_eq!(
            virtual_ips_from(&update).unwrap(),
            vec![("api.shop".to_string(), "west".to_string(), "240.240.0.1".parse().unwrap())]
        );
        let update = pb::ProxyUpdate { virtual_ips: vec![vip("240.240.0.1"), vip("nope")], ..Default::default() };
        assert!(virtual_ips_from(&update).unwrap_err().to_string().contains("virtual_ips[1].address"));
    }
}

#[cfg(test)]
mod delta_tests {
    use super::*;

    fn svc(name: &str, endpoints: usize) -> pb::Service {
        let endpoint = |n: usize| pb::Endpoint { address: format!("10.0.0.{n}:80"), ..Default::default() };
        pb::Service {
            name: name.into(),
            namespace: "default".into(),
            endpoints: (1..=endpoints).map(endpoint).collect(),
            ..Default::default()
        }
    }

    fn update(version: u64, base: Option<u64>, services: Vec<pb::Service>, removed: &[&str]) -> pb::ProxyUpdate {
        pb::ProxyUpdate {
            version,
            delta: base.is_some(),
            base_version: base.unwrap_or_default(),
            services,
            removed_services: removed
                .iter()
                .map(|n| pb::ServiceRef { namespace: "default".into(), name: n.to_string() })
                .collect(),
            ..Default::default()
        }
    }

    /// A delta applies on top of what the stream sent before (changed services replaced,
    /// removed ones gone) and says what it changed; one against a version the proxy does not
    /// hold is refused.
    #[test]
    fn a_delta_applies_only_on_top_of_the_version_it_was_made_against() {
        let mut held = Held::default();
        assert!(held.apply(&update(1, Some(0), vec![], &[])).is_err(), "a stream starts with a full update");
        let full = held.apply(&update(1, None, vec![svc("api", 1), svc("web", 1), svc("db", 1)], &[])).unwrap();
        assert!(full.full);
        // `db` is sent again unchanged: not a change.
        let u = update(2, Some(1), vec![svc("db", 1), svc("api", 2)], &["web", "gone"]);
        let changes = held.apply(&u).unwrap();
        assert_eq!(changes, Changes { full: false, changed: vec![1], removed: vec![("default".into(), "web".into())] });
        assert_eq!(held.services.values().cloned().collect::<Vec<_>>(), vec![svc("api", 2), svc("db", 1)]);
        assert!(held.apply(&update(3, Some(2), vec![svc("db", 1)], &[])).unwrap().is_empty());
        let err = held.apply(&update(5, Some(4), vec![svc("db", 0)], &[])).unwrap_err();
        assert!(err.contains("against version 4") && err.contains("holds 3"), "{err}");
        assert_eq!(held.version, 3);
    }
}
