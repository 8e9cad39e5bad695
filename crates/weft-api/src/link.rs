//! The link credential `weft link create` prints and `weft link apply` reads: one line,
//! `weftlink1.` followed by base64url (no padding) of a JSON object.

use serde::{Deserialize, Serialize};

/// The credential's prefix (and version).
pub const PREFIX: &str = "weftlink1.";

/// What a cluster hands to another so that it can link to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Credential {
    /// The issuing cluster's name.
    pub cluster: String,
    /// The issuing cluster's SPIFFE trust domain.
    pub trust_domain: String,
    /// Where the link stream is opened: the first of `gateways` when the issuing cluster has
    /// east-west gateways (the stream goes through one, reserved SNI [`control_sni`]), else
    /// `ip:port` of its control plane's gRPC listener.
    pub address: String,
    /// The issuing cluster's root certificate(s), PEM.
    pub root_pem: String,
    /// The link secret (a token of the issuing control plane, kind `link`).
    pub secret: String,
    /// Unix seconds after which the credential is refused.
    pub expires_unix: u64,
    /// The issuing cluster's network (MeshConfig `cluster.network`). Absent in older credentials.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// `ip:port` of the issuing cluster's east-west gateways (MeshConfig `cluster.gateways`).
    /// Absent in older credentials (and when it has none): the link dials `address` directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
}

/// The namespace of the reserved SNI names (the control plane's own, never a user service's).
pub const RESERVED_NAMESPACE: &str = "weft-system";

/// The reserved SNI that an east-west gateway of `cluster` routes to its own control plane's
/// gRPC listener: `control.weft-system.<cluster>.weft`. It cannot be a service's SNI (those start
/// with a port number, `<port>.<service>.<namespace>.<cluster>.weft`).
pub fn control_sni(cluster: &str) -> String {
    format!("control.{RESERVED_NAMESPACE}.{cluster}.weft")
}

/// What an SNI is, as far as the reserved names go.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserved<'a> {
    /// `control.weft-system.<cluster>.weft`: the control plane of that cluster.
    ControlPlane(&'a str),
    /// Another name in the reserved namespace (`*.weft-system.<cluster>.weft`): never routed.
    Other,
    /// Not a reserved name.
    No,
}

/// Classifies `sni` (see [`control_sni`]).
pub fn reserved_sni(sni: &str) -> Reserved<'_> {
    let labels: Vec<&str> = sni.split('.').collect();
    let n = labels.len();
    if n < 3 || labels[n - 1] != "weft" || labels[n - 3] != RESERVED_NAMESPACE {
        return Reserved::No;
    }
    if n == 4 && labels[0] == "control" && !labels[2].is_empty() {
        Reserved::ControlPlane(labels[2])
    } else {
        Reserved::Other
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

impl Credential {
    /// The one-line form.
    pub fn encode(&self) -> String {
        format!("{PREFIX}{}", encode(&serde_json::to_vec(self).unwrap_or_default()))
    }

    /// Reads the one-line form (surrounding whitespace ignored).
    pub fn decode(text: &str) -> Result<Credential, String> {
        let text = text.trim();
        let body = text.strip_prefix(PREFIX).ok_or_else(|| {
            format!("a link credential starts with {PREFIX:?}; paste the whole line `weft link create` printed on the peer cluster")
        })?;
        let json = decode(body).ok_or_else(|| {
            "the link credential is damaged (characters outside base64url); copy the whole line again".to_string()
        })?;
        serde_json::from_slice(&json).map_err(|e| {
            format!("the link credential is damaged ({e}); copy the whole line `weft link create` printed again")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let c = Credential {
            cluster: "west".into(),
            trust_domain: "west.example".into(),
            address: "127.0.0.1:1".into(),
            root_pem: "-----BEGIN CERTIFICATE-----\nx\n".into(),
            secret: "wft_1.2".into(),
            expires_unix: 42,
            network: String::new(),
            gateways: vec![],
        };
        for n in 0..3 {
            let mut c = c.clone();
            c.cluster.push_str(&"x".repeat(n));
            assert_eq!(Credential::decode(&format!(" {}\n", c.encode())).unwrap(), c);
        }
        assert!(Credential::decode("hello").unwrap_err().contains("starts with"));
        let mut bad = c.encode();
        bad.truncate(bad.len() - 5);
        assert!(Credential::decode(&bad).unwrap_err().contains("damaged"));
        // Without gateways or network, the credential is the older form, field for field.
        let json = String::from_utf8(decode(c.encode().strip_prefix(PREFIX).unwrap()).unwrap()).unwrap();
        assert!(!json.contains("gateways") && !json.contains("network"), "{json}");
    }

    #[test]
    fn older_credentials_still_read_and_new_ones_carry_gateways() {
        let old = r#"{"cluster":"west","trustDomain":"w","address":"10.0.0.5:15012","rootPem":"p","secret":"s","expiresUnix":1}"#;
        let c = Credential::decode(&format!("{PREFIX}{}", encode(old.as_bytes()))).unwrap();
        assert_eq!((c.network.as_str(), c.gateways.len()), ("", 0));
        let c = Credential { network: "net-west".into(), gateways: vec!["203.0.113.7:15443".into()], ..c };
        assert_eq!(Credential::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn reserved_sni_names() {
        assert_eq!(control_sni("west"), "control.weft-system.west.weft");
        assert_eq!(reserved_sni("control.weft-system.west.weft"), Reserved::ControlPlane("west"));
        assert_eq!(reserved_sni("15012.control.weft-system.west.weft"), Reserved::Other);
        assert_eq!(reserved_sni("api.weft-system.west.weft"), Reserved::Other);
        assert_eq!(reserved_sni("8080.api.default.west.weft"), Reserved::No);
        assert_eq!(reserved_sni("weft"), Reserved::No);
    }
}
