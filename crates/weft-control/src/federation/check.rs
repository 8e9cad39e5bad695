//! `weft link check` (`GET /v1/links/{cluster}/check`): the live checks of one link, made from
//! this control plane (it holds the link's secret and root), each with a verdict and, when it
//! fails, the fix:
//!
//! 1. `reachable`: a TCP connection to the peer's federation address;
//! 2. `trusted`: a TLS handshake in which the peer's certificate verifies against the root stored
//!    for its trust domain, as that domain's control identity with the `control.weft` marker
//!    (what the link stream itself requires);
//! 3. `secret`: the stored secret: the link's own (established, no expiry) or still the
//!    credential's (with its expiry; expired before the link was established fails);
//! 4. `stream`: the link stream's state (the peer refusing the secret shows here);
//! 5. `synced`: a snapshot was received: when, and how many services and endpoints it imported.
//!
//! The probe opens no link stream: it changes nothing on either side.

use super::{unix_now, LinkStatus};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use weft_api::kinds::LinkSpec;
use weft_identity::control::ControlTrust;
use weft_identity::TrustBundle;

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
pub async fn check(cluster: &str, spec: &LinkSpec, status: &LinkStatus) -> Vec<CheckLine> {
    let relink = format!(
        "run `weft link create` on cluster {cluster}, then here `weft link remove {cluster}` and `weft link apply -f <the new credential>`"
    );
    let mut out = vec![];

    // 1. reachable
    let addr = spec.address.parse::<SocketAddr>();
    let tcp = match &addr {
        Err(_) => Err(format!("the stored address {:?} is not ip:port", spec.address)),
        Ok(a) => match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(a)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("cannot connect to the peer control plane at {a}: {e}")),
            Err(_) => Err(format!("connecting to the peer control plane at {a} timed out after {PROBE_TIMEOUT:?}")),
        },
    };
    let tcp = match tcp {
        Ok(s) => {
            out.push(pass("reachable", format!("the federation endpoint {} accepts connections", spec.address)));
            Some(s)
        }
        Err(e) => {
            out.push(fail(
                "reachable",
                e,
                format!(
                    "check that `weft control` runs on cluster {cluster} and that its gRPC listener {} (`weft control --grpc`) is reachable from this control plane (routes, firewall); if that cluster's address changed, {relink}",
                    spec.address
                ),
            ));
            None
        }
    };

    // 2. trusted
    match tcp {
        None => out.push(skip("trusted", "the peer is unreachable")),
        Some(tcp) => out.push(match handshake(spec, tcp).await {
            Ok(()) => pass(
                "trusted",
                format!(
                    "the peer's certificate verifies against the stored root of trust domain {:?} as its control plane (control marker present)",
                    spec.trust_domain
                ),
            ),
            Err(e) => fail(
                "trusted",
                e,
                format!(
                    "the endpoint at {} is not cluster {cluster}'s control plane, or that cluster's root or trust domain changed since the credential was made (a new data directory?): {relink}",
                    spec.address
                ),
            ),
        }),
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
    out
}

/// A TLS handshake as the link stream makes it: the peer must present its trust domain's control
/// identity, chained to the stored root.
async fn handshake(spec: &LinkSpec, tcp: tokio::net::TcpStream) -> Result<(), String> {
    let roots = TrustBundle::from_pem(&spec.root_pem).map_err(|e| format!("the stored root of the link: {e}"))?;
    let tls = weft_identity::control::client_config(ControlTrust::Roots(roots), &spec.trust_domain, None)
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(weft_identity::control::CONTROL_SERVER_NAME)
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    match tokio::time::timeout(PROBE_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(mut s)) => {
            use tokio::io::AsyncWriteExt;
            let _ = s.shutdown().await;
            Ok(())
        }
        Ok(Err(e)) => Err(format!("TLS with the peer control plane: {e}")),
        Err(_) => Err(format!("TLS with the peer control plane timed out after {PROBE_TIMEOUT:?}")),
    }
}
