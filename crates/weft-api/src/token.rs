//! What a proxy may read from a control-plane token without the control plane's key.
//!
//! Tokens are `wft_<hex(payload JSON)>.<hex(HMAC-SHA256)>` (issued and verified by `weft control`,
//! see `weft_control::tokens`). A bootstrap token's payload carries `ca`: the hex SHA-256 of the
//! issuing control plane's root certificate, so that the proxy holding it can verify that control
//! plane's TLS certificate before it has any certificate of its own. Reading it needs no secret,
//! and changing it gains nothing: the token's MAC no longer verifies.

use serde::Deserialize;

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    td: Option<String>,
    #[serde(default)]
    cp: Option<String>,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The root CA pin (`ca`) in a `wft_` token, if it has one.
pub fn ca_pin(token: &str) -> Option<[u8; 32]> {
    let body = token.trim().strip_prefix("wft_")?;
    let (payload, _mac) = body.split_once('.')?;
    let payload: Payload = serde_json::from_slice(&unhex(payload)?).ok()?;
    unhex(&payload.ca?)?.try_into().ok()
}

/// The trust domain (`td`) a bootstrap token names: the proxy expects the control identity of this
/// domain. Tokens issued before weft carried it have none.
pub fn trust_domain(token: &str) -> Option<String> {
    let body = token.trim().strip_prefix("wft_")?;
    let (payload, _mac) = body.split_once('.')?;
    let payload: Payload = serde_json::from_slice(&unhex(payload)?).ok()?;
    payload.td.filter(|t| !t.is_empty())
}

/// The cluster of the control plane that issued a bootstrap token (`cp`): the proxy sends that
/// control plane's reserved SNI ([`crate::link::control_sni`]), so an east-west gateway in front
/// of it forwards the connection (primary-remote). Tokens issued before weft carried it have none.
pub fn control_cluster(token: &str) -> Option<String> {
    let body = token.trim().strip_prefix("wft_")?;
    let (payload, _mac) = body.split_once('.')?;
    let payload: Payload = serde_json::from_slice(&unhex(payload)?).ok()?;
    payload.cp.filter(|c| crate::valid_name(c))
}

/// The kind (`link`, `link-stream`, ...) and expiry (Unix seconds, if any) a `wft_` token
/// states; `None` when it is not a readable token. Unverified: for reports (`weft link check`).
pub fn kind_and_expiry(token: &str) -> Option<(String, Option<u64>)> {
    #[derive(Deserialize)]
    struct Head {
        kind: String,
        #[serde(default)]
        exp: Option<u64>,
    }
    let body = token.trim().strip_prefix("wft_")?;
    let (payload, _mac) = body.split_once('.')?;
    let head: Head = serde_json::from_slice(&unhex(payload)?).ok()?;
    Some((head.kind, head.exp))
}

/// The hex form of a pin, as tokens carry it.
pub fn pin_hex(pin: &[u8; 32]) -> String {
    pin.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pin_and_nothing_else() {
        let pin = [7u8; 32];
        let payload =
            format!(r#"{{"kind":"bootstrap","ca":"{}","td":"td.example","cp":"east","nonce":"x"}}"#, pin_hex(&pin));
        let hex: String = payload.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(ca_pin(&format!("wft_{hex}.00")), Some(pin));
        assert_eq!(trust_domain(&format!("wft_{hex}.00")).as_deref(), Some("td.example"));
        assert_eq!(control_cluster(&format!("wft_{hex}.00")).as_deref(), Some("east"));
        let no_ca: String = br#"{"kind":"admin"}"#.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(ca_pin(&format!("wft_{no_ca}.00")), None);
        assert_eq!(trust_domain(&format!("wft_{no_ca}.00")), None);
        assert_eq!(control_cluster(&format!("wft_{no_ca}.00")), None);
        for bad in ["", "wft_", "wft_zz.00", "token", "wft_7b7d"] {
            assert_eq!(ca_pin(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_the_kind_and_expiry() {
        let hex = |s: &str| -> String { s.bytes().map(|b| format!("{b:02x}")).collect() };
        let link = hex(r#"{"kind":"link","issued_ms":1,"exp":1700000000,"nonce":"x"}"#);
        assert_eq!(kind_and_expiry(&format!("wft_{link}.00")), Some(("link".into(), Some(1_700_000_000))));
        let stream = hex(r#"{"kind":"link-stream","cluster":"east","nonce":"x"}"#);
        assert_eq!(kind_and_expiry(&format!("wft_{stream}.00")), Some(("link-stream".into(), None)));
        for bad in ["", "wft_", "wft_zz.00", "(hidden)", "wft_7b7d.00"] {
            assert_eq!(kind_and_expiry(bad), None, "{bad}");
        }
    }
}
