//! Control-plane tokens: signed, self-describing, verified without a database.
//!
//! `wft_<hex(payload JSON)>.<hex(HMAC-SHA256(key, payload))>`; the key is generated at first start
//! and kept in the data directory (0600). Every token but a link secret is also recorded, by its
//! SHA-256, in `token_store` (name, role, expiry, revocation); it verifies only while its record
//! exists and is not revoked. Kinds (roles):
//! - `admin`: every API call;
//! - `operator`: resources (apply, delete, registrations, links' namespaces), not tokens or the CA;
//! - `read`: read-only API calls;
//! - `writer`: reads, and writes of resources in its namespaces only;
//! - `bootstrap`: names one workload identity (`<namespace>/<service-account>`); a proxy holding it
//!   may get a certificate for that identity only, and open its discovery stream.

use crate::token_store::{TokenRecord, TokenStore};
use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Grant {
    Admin,
    /// Resources, not tokens or the CA.
    Operator,
    Read,
    /// Reads, and writes of namespaced resources in these namespaces.
    Writer {
        namespaces: Vec<String>,
    },
    Bootstrap {
        namespace: String,
        service_account: String,
    },
    /// A link secret (`weft link create`, with an expiry): lets another cluster's control plane
    /// open `Federation.Export` once, nothing else; it is exchanged there for a `LinkStream`.
    Link {
        /// When it was issued (Unix milliseconds): `weft link revoke` voids older ones.
        #[serde(default)]
        issued_ms: u64,
    },
    /// The long-lived secret of one established link: `Federation.Export` for the importing
    /// cluster named here only.
    #[serde(rename = "link-stream")]
    LinkStream {
        cluster: String,
        #[serde(default)]
        issued_ms: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Payload {
    #[serde(flatten)]
    grant: Grant,
    /// Unix seconds; absent: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    /// Random, so two tokens with the same grant differ.
    nonce: String,
    /// Bootstrap tokens: hex SHA-256 of the root CA, for the proxy to verify this control plane
    /// before it has a certificate (see `weft_api::token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
    /// Bootstrap tokens: the mesh's trust domain, so that the proxy knows which control identity
    /// to expect (see `weft_api::token::trust_domain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    td: Option<String>,
    /// Bootstrap tokens: the issuing control plane's cluster, so that the proxy sends the reserved
    /// SNI `control.weft-system.<cp>.weft` and an east-west gateway in front of that control plane
    /// forwards its connection (see `weft_api::token::control_cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cp: Option<String>,
    /// Bootstrap tokens of a remote cluster's proxies (primary-remote, `weft token create
    /// --cluster`): the cluster the proxy runs in. Absent: the control plane's own cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proxy_cluster: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("no token: send `authorization: Bearer <token>` (Consul clients: `X-Consul-Token: <token>` or `?token=<token>`); create one with `weft token create`")]
    Missing,
    #[error("the token is malformed or was not issued by this control plane")]
    Invalid,
    #[error("the token has expired; create a new one with `weft token create`")]
    Expired,
    #[error("this token may not do that: {0}")]
    Forbidden(&'static str),
    #[error("the token has been revoked; create a new one with `weft token create`")]
    Revoked,
    #[error("the token is not in this control plane's token list (issued before tokens were recorded, or the list was restored from an older backup); create a new one with `weft token create`")]
    Unknown,
}

impl Grant {
    /// The role's name, as `weft token list` shows it.
    pub fn role(&self) -> &'static str {
        match self {
            Grant::Admin => "admin",
            Grant::Operator => "operator",
            Grant::Read => "read",
            Grant::Writer { .. } => "writer",
            Grant::Bootstrap { .. } => "bootstrap",
            Grant::Link { .. } => "link",
            Grant::LinkStream { .. } => "link-stream",
        }
    }

    /// Link secrets are revoked per link (`weft link revoke`), not recorded one by one.
    fn recorded(&self) -> bool {
        !matches!(self, Grant::Link { .. } | Grant::LinkStream { .. })
    }
}

/// A verified token: its grant, the cluster a bootstrap token names, and its record.
#[derive(Clone, Debug)]
pub struct Verified {
    pub grant: Grant,
    pub proxy_cluster: Option<String>,
    /// Absent for link secrets.
    pub record: Option<TokenRecord>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    // aws-lc's RNG; failure would mean the OS has no entropy source at all.
    aws_lc_rs::rand::fill(&mut b).expect("system random source");
    b
}

/// Issues and verifies tokens with one key.
pub struct Tokens {
    key: hmac::Key,
    /// Put in every bootstrap token once the CA is known (`set_ca`): the root's pin and the
    /// trust domain.
    ca: std::sync::RwLock<Option<(String, String)>>,
    /// Put in every bootstrap token once known (`set_cluster`): this control plane's cluster.
    cluster: std::sync::OnceLock<String>,
    /// Every issued token's record (`<data-dir>/tokens.json`).
    store: TokenStore,
}

impl Tokens {
    /// Loads the key from `dir/token.key`, creating it (0600) when there is none (or an empty
    /// one, left by a crash during the first start). Any other read error, or a key too short to
    /// be one, is an error: replacing the key would silently invalidate every token.
    pub fn open(dir: &Path) -> std::io::Result<Tokens> {
        let path = dir.join("token.key");
        let fail = |kind, what: String| {
            std::io::Error::new(
                kind,
                format!(
                    "{}: {what}; fix it or restore it from a backup (deleting it makes a new key, which invalidates every token issued so far)",
                    path.display()
                ),
            )
        };
        let secret = match std::fs::read(&path) {
            Ok(s) if s.len() >= 32 => s,
            Ok(s) if !s.is_empty() => {
                return Err(fail(
                    std::io::ErrorKind::InvalidData,
                    format!("the token key is {} bytes, not 32", s.len()),
                ))
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(fail(e.kind(), format!("cannot read the token key: {e}")))
            }
            _ => {
                let s = random(32);
                write_private(&path, &s)?;
                s
            }
        };
        Ok(Tokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            ca: Default::default(),
            cluster: Default::default(),
            store: TokenStore::open(dir)?,
        })
    }

    /// The root CA's SHA-256 and the trust domain, for bootstrap tokens issued from now on (set
    /// again when a root rotation finishes).
    pub fn set_ca(&self, pin: &[u8; 32], trust_domain: &str) {
        *self.ca.write().unwrap_or_else(|p| p.into_inner()) = Some((hex(pin), trust_domain.to_string()));
    }

    /// This control plane's cluster name, for bootstrap tokens issued from now on.
    pub fn set_cluster(&self, cluster: &str) {
        let _ = self.cluster.set(cluster.to_string());
    }

    /// Issues and records a token (named after its role and id). A token whose record cannot be
    /// saved is logged and returned; it does not verify.
    pub fn issue(&self, grant: Grant, ttl: Option<std::time::Duration>) -> String {
        self.issue_in(grant, ttl, None)
    }

    /// [`Tokens::issue`]; a bootstrap token with `proxy_cluster` is for a proxy of that (remote)
    /// cluster.
    pub fn issue_in(&self, grant: Grant, ttl: Option<std::time::Duration>, proxy_cluster: Option<String>) -> String {
        match self.create(grant, ttl, proxy_cluster, None) {
            Ok((t, _)) => t,
            Err((t, e)) => {
                tracing::error!(error = %e, "a token was issued but could not be recorded: it will not verify");
                t
            }
        }
    }

    /// Issues a token named `name` (default: `<role>-<id>`) and records it; returns the token
    /// and its record (none for link secrets). Err: the record could not be saved (with the
    /// token, which will not verify).
    #[allow(clippy::result_large_err)]
    pub fn create(
        &self,
        grant: Grant,
        ttl: Option<std::time::Duration>,
        proxy_cluster: Option<String>,
        name: Option<String>,
    ) -> Result<(String, Option<TokenRecord>), (String, std::io::Error)> {
        let created = now();
        let exp = ttl.map(|t| created + t.as_secs());
        let bootstrap = matches!(grant, Grant::Bootstrap { .. });
        let ca = bootstrap.then(|| self.ca.read().unwrap_or_else(|p| p.into_inner()).clone()).flatten();
        let (ca, td) = ca.map_or((None, None), |(pin, td)| (Some(pin), Some(td)));
        let cp = bootstrap.then(|| self.cluster.get().cloned()).flatten();
        let proxy_cluster = proxy_cluster.filter(|_| bootstrap);
        let id = hex(&random(8));
        let record = grant.recorded().then(|| {
            let (namespaces, identity) = match &grant {
                Grant::Writer { namespaces } => (namespaces.clone(), None),
                Grant::Bootstrap { namespace, service_account } => {
                    (vec![namespace.clone()], Some(format!("{namespace}/{service_account}")))
                }
                _ => (vec![], None),
            };
            TokenRecord {
                name: name.unwrap_or_else(|| format!("{}-{id}", grant.role())),
                id: id.clone(),
                role: grant.role().to_string(),
                namespaces,
                identity,
                sha256: String::new(),
                created,
                expires: exp,
                revoked: None,
            }
        });
        let payload = Payload { grant, exp, nonce: id, ca, td, cp, proxy_cluster };
        let payload = serde_json::to_vec(&payload).unwrap_or_default();
        let mac = hmac::sign(&self.key, &payload);
        let token = format!("wft_{}.{}", hex(&payload), hex(mac.as_ref()));
        let Some(mut record) = record else { return Ok((token, None)) };
        record.sha256 = crate::token_store::sha256_hex(&token);
        match self.store.insert(record.clone()) {
            Ok(()) => Ok((token, Some(record))),
            Err(e) => Err((token, e)),
        }
    }

    /// The token store: list and revoke.
    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    pub fn verify(&self, token: &str) -> Result<Grant, TokenError> {
        self.verify_in(token).map(|(g, _)| g)
    }

    /// [`Tokens::verify`], with the cluster a bootstrap token names for its proxy (`None`: this
    /// control plane's own).
    pub fn verify_in(&self, token: &str) -> Result<(Grant, Option<String>), TokenError> {
        self.verify_full(token).map(|v| (v.grant, v.proxy_cluster))
    }

    /// [`Tokens::verify`], with everything known about the token: the MAC, the expiry, the
    /// reserved namespace, then its record (present and not revoked).
    pub fn verify_full(&self, token: &str) -> Result<Verified, TokenError> {
        let body = token.trim().strip_prefix("wft_").ok_or(TokenError::Invalid)?;
        let (p, m) = body.split_once('.').ok_or(TokenError::Invalid)?;
        let (payload, mac) = (unhex(p).ok_or(TokenError::Invalid)?, unhex(m).ok_or(TokenError::Invalid)?);
        hmac::verify(&self.key, &payload, &mac).map_err(|_| TokenError::Invalid)?;
        let payload: Payload = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
        if payload.exp.is_some_and(|e| e < now()) {
            return Err(TokenError::Expired);
        }
        if let Grant::Bootstrap { namespace, .. } = &payload.grant {
            if weft_identity::control::is_reserved_namespace(namespace) {
                return Err(TokenError::Forbidden(
                    "the namespace weft-system is reserved for the control plane's own identity",
                ));
            }
        }
        let record = if payload.grant.recorded() {
            let r = self.store.lookup(token).ok_or(TokenError::Unknown)?;
            if r.revoked.is_some() {
                return Err(TokenError::Revoked);
            }
            Some(r)
        } else {
            None
        };
        Ok(Verified { grant: payload.grant, proxy_cluster: payload.proxy_cluster, record })
    }

    /// The grant of an `authorization: Bearer <token>` header value.
    pub fn verify_header(&self, value: Option<&str>) -> Result<Grant, TokenError> {
        self.verify_header_in(value).map(|(g, _)| g)
    }

    /// [`Tokens::verify_header`] with the proxy's cluster, as [`Tokens::verify_in`].
    pub fn verify_header_in(&self, value: Option<&str>) -> Result<(Grant, Option<String>), TokenError> {
        self.verify_header_full(value).map(|v| (v.grant, v.proxy_cluster))
    }

    /// [`Tokens::verify_full`] of an `authorization: Bearer <token>` header value.
    pub fn verify_header_full(&self, value: Option<&str>) -> Result<Verified, TokenError> {
        let v = value.ok_or(TokenError::Missing)?.trim();
        // The scheme is case-insensitive (RFC 9110 §11.1): `Bearer`, `bearer`, `BEARER`.
        let (scheme, token) = v.split_once(' ').ok_or(TokenError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Missing);
        }
        self.verify_full(token.trim())
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Writes a file only its owner can read (0600, also when it existed with another mode).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let dir =
            std::env::temp_dir().join(format!("weft-tokens-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&dir).unwrap();
        Tokens::open(&dir).unwrap()
    }

    #[test]
    fn round_trip_and_tamper() {
        let t = tokens();
        let g = Grant::Bootstrap { namespace: "default".into(), service_account: "web".into() };
        assert_eq!(weft_api::token::ca_pin(&t.issue(g.clone(), None)), None, "no CA yet, no pin");
        t.set_ca(&[9; 32], "td.example");
        let tok = t.issue(g.clone(), None);
        assert_eq!(t.verify(&tok).unwrap(), g);
        assert_eq!(weft_api::token::ca_pin(&tok), Some([9; 32]), "bootstrap tokens carry the CA pin");
        assert_eq!(weft_api::token::trust_domain(&tok).as_deref(), Some("td.example"), "and the trust domain");
        assert_eq!(weft_api::token::ca_pin(&t.issue(Grant::Admin, None)), None, "others do not");
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(t.verify_header(Some(&format!("{scheme} {tok}"))).unwrap(), g, "{scheme}");
        }
        assert_eq!(t.verify_header(Some(&format!("Basic {tok}"))), Err(TokenError::Missing));
        // Flip one payload nibble: the MAC no longer matches.
        let mut bad = tok.clone().into_bytes();
        bad[6] = if bad[6] == b'0' { b'1' } else { b'0' };
        assert_eq!(t.verify(std::str::from_utf8(&bad).unwrap()), Err(TokenError::Invalid));
        for junk in ["", "wft_", "wft_zz.zz", "wft_00.", "Bearer", "wft_0.0"] {
            assert!(t.verify(junk).is_err(), "{junk}");
        }
        assert_eq!(t.verify_header(None), Err(TokenError::Missing));
        // Another control plane's key does not verify ours.
        let other = Tokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, &random(32)),
            ca: Default::default(),
            cluster: Default::default(),
            store: TokenStore::open(&std::env::temp_dir().join("weft-tokens-no-such-dir")).unwrap(),
        };
        assert_eq!(other.verify(&tok), Err(TokenError::Invalid));
    }

    #[test]
    fn a_token_for_the_control_planes_namespace_never_verifies() {
        let t = tokens();
        let g = Grant::Bootstrap { namespace: "weft-system".into(), service_account: "control".into() };
        let tok = t.issue(g, None);
        assert!(matches!(t.verify(&tok), Err(TokenError::Forbidden(m)) if m.contains("weft-system")));
    }

    #[test]
    fn a_key_that_cannot_be_read_is_an_error_not_a_new_key() {
        let dir = std::env::temp_dir().join(format!("weft-tokens-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A short (damaged) key.
        std::fs::write(dir.join("token.key"), b"short").unwrap();
        let err = Tokens::open(&dir).err().expect("refused").to_string();
        assert!(
            err.contains("token.key") && err.contains("5 bytes") && err.contains("invalidates every token"),
            "{err}"
        );
        assert_eq!(std::fs::read(dir.join("token.key")).unwrap(), b"short", "left as it was");
        // A read error other than not-found (here: a directory where the key should be).
        std::fs::remove_file(dir.join("token.key")).unwrap();
        std::fs::create_dir(dir.join("token.key")).unwrap();
        let err = Tokens::open(&dir).err().expect("refused").to_string();
        assert!(err.contains("cannot read the token key"), "{err}");
        // Not found, or empty (a crash during the first start): a new key.
        std::fs::remove_dir(dir.join("token.key")).unwrap();
        let first = Tokens::open(&dir).unwrap().issue(Grant::Read, None);
        assert_eq!(Tokens::open(&dir).unwrap().verify(&first), Ok(Grant::Read), "the same key on reopening");
        std::fs::write(dir.join("token.key"), b"").unwrap();
        assert!(Tokens::open(&dir).is_ok());
    }

    #[test]
    fn expiry() {
        let t = tokens();
        let tok = t.issue(Grant::Read, Some(std::time::Duration::from_secs(3600)));
        assert_eq!(t.verify(&tok).unwrap(), Grant::Read);
        let payload = Payload {
            grant: Grant::Read,
            exp: Some(1),
            nonce: "x".into(),
            ca: None,
            td: None,
            cp: None,
            proxy_cluster: None,
        };
        let p = serde_json::to_vec(&payload).unwrap();
        let expired = format!("wft_{}.{}", hex(&p), hex(hmac::sign(&t.key, &p).as_ref()));
        assert_eq!(t.verify(&expired), Err(TokenError::Expired));
    }
}
