//! `weft link check` (`GET /v1/links/{cluster}/check`): the live checks of one link, made from
//! this control plane (it holds the link's secret and root), each with a verdict and, when it
//! fails, the fix:
//!
//! 1. `reachable`: a TCP connection to the peer's federation address, or to each of its east-west
//!    gateways when it has some (the link goes through them);
//! 2. `trusted`: a TLS handshake in which the peer's certificate verifies against the root stored
//!    for its trust domain, as that domain's control identity with the `control.weft` marker
//!    (what the link stream itself requires), made with the reserved SNI
//!    `control.weft-system.<cluster>.weft`, so through a gateway it also proves that the gateway
//!    routes it to the peer's control plane;
//! 3. `secret`: the stored secret: the link's own (established, no expiry) or still the
//!    credential's (with its expiry; expired before the link was established fails);
//! 4. `stream`: the link stream's state (the peer refusing the secret shows here);
//! 5. `synced`: a snapshot was received: when, and how many services and endpoints it imported;
//! 6. `network`: how the peer's endpoints are reached: directly (same network, Istio's rule: an
//!    empty network is the same as every network) or through its gateways; fails when the peer
//!    is on another network and declares no gateway (its endpoints cannot be reached).
//!
//! The probe opens no link stream: it changes nothing on either side.

use super::{unix_now, LinkStatus};
use crate::catalog::{same_network, PeerNetwork};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use weft_api::kinds::LinkSpec;
use weft_identity::control::ControlTrust;

/// How long each network step of the probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not checked, because an earlier check it depends on failed.
    Skip,
}

/// One line of `weft link check`.
#[derive(Clone, Debug, Serialize)]
pub struct CheckLine {
    pub name: &'static str,
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn pass(name: &'static str, detail: String) -> CheckLine {
    CheckLine { name, verdict: Verdict::Pass, detail, fix: None }
}

fn fail(name: &'static str, detail: String, fix: String) -> CheckLine {
    CheckLine { name, verdict: Verdict::Fail, detail, fix: Some(fix) }
}

fn skip(name: &'static str, why: &str) -> CheckLine {
    CheckLine { name, verdict: Verdict::Skip, detail: format!("not checked: {why}"), fix: None }
}

/// Runs every check of the link to `cluster` (`status`: what its link task reports).
/// `local_network`: this cluster's MeshConfig `cluster.network`; `peer`: the peer's network and
/// gateways as its last snapshot said (`None` before one: the credential's are used).
pub async fn check(
    cluster: &str,
    spec: &LinkSpec,
    status: &LinkStatus,
    local_network: &str,
    peer: Option<PeerNetwork>,
    peer_roots: Vec<Vec<u8>>,
) -> Vec<CheckLine> {
    let relink = format!(
        "run `weft link create` on cluster {cluster}, then here `weft link remove {cluster}` and `weft link apply -f <the new credential>`"
    );
    let mut out = vec![];

    // 1. reachable: every address the link may dial (the peer's gateways, or its control plane).
    let gateway = !spec.gateways.is_empty();
    let what = |a: &str| {
        if gateway {
            format!("the peer's east-west gateway {a}")
        } else {
            format!("the peer control plane at {a}")
        }
    };
    let mut open = vec![];
    let mut unreachable = vec![];
    for a in spec.dial_addresses() {
        match a.parse::<SocketAddr>() {
            Err(_) => unreachable.push(format!("the stored address {a:?} is not ip:port")),
            Ok(sa) => match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(sa)).await {
                Ok(Ok(s)) => open.push((a, s)),
                Ok(Err(e)) => unreachable.push(format!("cannot connect to {}: {e}", what(&a))),
                Err(_) => unreachable.push(format!("connecting to {} timed out after {PROBE_TIMEOUT:?}", what(&a))),
            },
        }
    }
    let opened: Vec<&str> = open.iter().map(|(a, _)| a.as_str()).collect();
    if unreachable.is_empty() {
        out.push(pass(
            "reachable",
            if gateway {
                format!(
                    "the link goes through the peer's east-west gateway(s) {}, which accept connections",
                    opened.join(", ")
                )
            } else {
                format!("the federation endpoint {} accepts connections", spec.address)
            },
        ));
    } else {
        let fix = if gateway {
            format!(
                "check that cluster {cluster}'s east-west gateway runs and is reachable from this control plane at that address (routes, firewall); if its gateways changed, {relink}"
            )
        } else {
            format!(
                "check that `weft control` runs on cluster {cluster} and that its gRPC listener {} (`weft control --grpc`) is reachable from this control plane (routes, firewall); if that cluster's address changed, {relink}",
                spec.address
            )
        };
        let mut detail = unreachable.join("; ");
        if !opened.is_empty() {
            detail.push_str(&format!(" (reachable: {}; the link uses those meanwhile)", opened.join(", ")));
        }
        out.push(fail("reachable", detail, fix));
    }

    // 2. trusted: a handshake through each reachable address.
    if open.is_empty() {
        out.push(skip("trusted", "the peer is unreachable"));
    } else {
        let mut failed = vec![];
        for (a, tcp) in open {
            if let Err(e) = handshake(cluster, spec, &peer_roots, tcp).await {
                failed.push(format!("through {}: {e}", what(&a)));
            }
        }
        out.push(if failed.is_empty() {
            pass(
                "trusted",
                format!(
                    "the peer's certificate verifies against the stored root of trust domain {:?} as its control plane (control marker present){}",
                    spec.trust_domain,
                    if gateway { ", through its gateway (reserved SNI routed to the control plane)" } else { "" }
                ),
            )
        } else if gateway {
            fail(
                "trusted",
                failed.join("; "),
                format!(
                    "the gateway must be cluster {cluster}'s (gateway config `cluster: {cluster}`) and know its control plane (`control.address` or `gateway.control_plane`): its log names the refused SNI; if it does and this still fails, that cluster's root or trust domain changed since the credential was made: {relink}"
                ),
            )
        } else {
            fail(
                "trusted",
                failed.join("; "),
                format!(
                    "the endpoint at {} is not cluster {cluster}'s control plane, or that cluster's root or trust domain changed since the credential was made (a new data directory?): {relink}",
                    spec.address
                ),
            )
        });
    }

    // 3. secret
    let now = unix_now();
    out.push(match weft_api::token::kind_and_expiry(&spec.secret) {
        Some((kind, _)) if kind == "link-stream" => {
            pass("secret", "the link is established: it uses its own secret, which does not expire".into())
        }
        Some((kind, exp)) if kind == "link" => match exp.or(Some(spec.expires_unix)) {
            Some(t) if t <= now => fail(
                "secret",
                format!("the credential expired {} s ago, before the link was established", now - t),
                relink.clone(),
            ),
            Some(t) => pass(
                "secret",
                format!("not established yet: the credential's secret is used, valid for {} s more", t - now),
            ),
            None => pass("secret", "not established yet: the credential's secret is used".into()),
        },
        _ => fail("secret", "the stored link secret is unreadable".into(), relink.clone()),
    });

    // 4. stream
    out.push(match status.state {
        "active" => pass("stream", "the link stream is open".into()),
        state => {
            let why = status.error.clone().unwrap_or_else(|| "no snapshot received yet".into());
            let fix = if why.contains("refused the link") {
                format!(
                    "cluster {cluster} refuses this link's secret (revoked there, or the credential is void): {relink}"
                )
            } else if out[0].verdict == Verdict::Fail {
                "make the peer reachable (see `reachable`); the link reconnects by itself".to_string()
            } else {
                format!(
                    "the link reconnects by itself (backoff up to 5 s); if it stays {state}, read the error above and the logs of both control planes"
                )
            };
            fail("stream", format!("{state}: {why}"), fix)
        }
    });

    // 5. synced
    out.push(match status.last_sync_unix {
        Some(t) => pass(
            "synced",
            format!(
                "last sync {} s ago: {} services, {} endpoints imported",
                now.saturating_sub(t),
                status.imported_services,
                status.imported_endpoints
            ),
        ),
        None => fail(
            "synced",
            "no snapshot received from the peer yet".into(),
            "fix the checks above; the first snapshot arrives as soon as the stream opens".into(),
        ),
    });

    // 6. network
    let peer = peer.unwrap_or_else(|| PeerNetwork {
        network: spec.network.clone(),
        gateways: spec.gateways.iter().filter_map(|g| g.parse().ok()).collect(),
    });
    out.push(network_line(cluster, local_network, &peer));
    out
}

fn network_line(cluster: &str, local: &str, peer: &PeerNetwork) -> CheckLine {
    let name = |n: &str| {
        if n.is_empty() {
            "no network (the same as every network)".to_string()
        } else {
            format!("network {n:?}")
        }
    };
    if same_network(local, &peer.network) {
        return pass(
            "network",
            format!(
                "cluster {cluster} is on {}, this cluster on {}: its endpoints are dialled directly (an endpoint whose Workload names another network goes through {cluster}'s gateways)",
                name(&peer.network),
                name(local)
            ),
        );
    }
    if peer.gateways.is_empty() {
        return fail(
            "network",
            format!(
                "cluster {cluster} is on {}, this cluster on {}, and {cluster} declares no east-west gateway: its endpoints cannot be reached and are not routed",
                name(&peer.network),
                name(local)
            ),
            format!(
                "run a gateway on cluster {cluster} and declare it there (MeshConfig `cluster.gateways`); the next snapshot brings it here. If the networks do route to each other, give both clusters the same `cluster.network`"
            ),
        );
    }
    let gws: Vec<String> = peer.gateways.iter().map(ToString::to_string).collect();
    pass(
        "network",
        format!(
            "cluster {cluster} is on {}, this cluster on {}: its endpoints are reached through its gateway(s) {}",
            name(&peer.network),
            name(local),
            gws.join(", ")
        ),
    )
}

/// A TLS handshake as the link stream makes it: the peer must present its trust domain's control
/// identity, chained to the stored root.
async fn handshake(
    cluster: &str,
    spec: &LinkSpec,
    peer_roots: &[Vec<u8>],
    tcp: tokio::net::TcpStream,
) -> Result<(), String> {
    // As the link trusts it: the stored root and the roots the peer sent since.
    let roots = super::import::link_roots(spec, peer_roots.to_vec())
        .map_err(|e| format!("the stored root of the link: {e}"))?;
    let tls = weft_identity::control::client_config(ControlTrust::Roots(roots), &spec.trust_domain, None)
        .map_err(|e| e.to_string())?;
    let name =
        rustls::pki_types::ServerName::try_from(weft_api::link::control_sni(cluster)).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    match tokio::time::timeout(PROBE_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(mut s)) => {
            use tokio::io::AsyncWriteExt;
            let _ = s.shutdown().await;
            Ok(())
        }
        Ok(Err(e)) => Err(super::import::tls_error(&e, cluster)),
        Err(_) => Err(format!("TLS with the peer control plane timed out after {PROBE_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_line_says_how_the_peer_is_reached() {
        let gw = PeerNetwork { network: "net-west".into(), gateways: vec!["203.0.113.7:15443".parse().unwrap()] };
        let none = PeerNetwork { network: "net-west".into(), gateways: vec![] };
        let line = network_line("west", "net-east", &gw);
        assert_eq!(line.verdict, Verdict::Pass);
        assert!(line.detail.contains("through its gateway(s) 203.0.113.7:15443"), "{}", line.detail);
        let line = network_line("west", "net-east", &none);
        assert_eq!(line.verdict, Verdict::Fail);
        assert!(line.detail.contains("cannot be reached"), "{}", line.detail);
        assert!(line.fix.unwrap().contains("cluster.gateways"));
        for local in ["net-west", ""] {
            let line = network_line("west", local, &none);
            assert_eq!(line.verdict, Verdict::Pass);
            assert!(line.detail.contains("dialled directly"), "{}", line.detail);
        }
    }
}
