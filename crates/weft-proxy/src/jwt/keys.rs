//! An issuer's verification keys: from an inline JWKS, a file, a URL, or the URL that OpenID
//! Connect discovery names. Fetched on first use, kept, fetched again when stale or when a
//! token names a `kid` the cache lacks — at most once per [`MIN_REFETCH`], so a flood of tokens
//! with made-up `kid`s costs the issuer one request per interval, not one per token. A failed
//! fetch keeps the keys already known.

use super::fetch;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Keys from a URL or discovery are fetched again after this long.
pub const REFRESH: Duration = Duration::from_secs(600);
/// A JWKS file is checked for changes this often.
pub const FILE_REFRESH: Duration = Duration::from_secs(5);
/// The least time between two fetches of one source (refetch on unknown `kid` included).
pub const MIN_REFETCH: Duration = Duration::from_secs(5);

/// Where an issuer's keys come from; also the key of the cache shared across policy updates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Inline(String),
    File(String),
    Uri(String),
    /// OpenID Connect discovery at this issuer.
    Discovery(String),
}

/// One usable key.
pub struct Key {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it names one.
    pub alg: Option<Algorithm>,
    /// The algorithms this key can verify (by its type and curve).
    pub algs: &'static [Algorithm],
    pub key: DecodingKey,
}

impl Key {
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.algs.contains(&alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// Reads the usable keys of a JWKS document; keys of other kinds (encryption keys, unknown
/// types or curves) are skipped.
pub fn parse_jwks(doc: &serde_json::Value) -> Result<Vec<Arc<Key>>, String> {
    let keys = doc.get("keys").and_then(|k| k.as_array()).ok_or("a JWKS needs a `keys` list")?;
    let mut out = vec![];
    for k in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else { continue };
        if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature) {
            continue;
        }
        let algs: &'static [Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            _ => continue,
        };
        let alg = match jwk.common.key_algorithm {
            Some(a) => match Algorithm::try_from(a) {
                Ok(a) => Some(a),
                Err(_) => continue,
            },
            None => None,
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
        out.push(Arc::new(Key { kid: jwk.common.key_id.clone(), alg, algs, key }));
    }
    Ok(out)
}

#[derive(Default)]
struct Cached {
    keys: Vec<Arc<Key>>,
    /// The last fetch attempt, successful or not.
    tried: Option<Instant>,
    /// The last successful fetch.
    fetched: Option<Instant>,
    /// The JWKS URL discovery found.
    jwks_uri: Option<String>,
    /// The last failure, for the 401's description and logs.
    error: Option<String>,
}

/// The keys of one source.
pub struct Keys {
    pub source: Source,
    cached: tokio::sync::Mutex<Cached>,
}

impl Keys {
    /// Inline keys are read here (the policy was validated, so they parse).
    pub fn new(source: Source) -> Keys {
        let mut cached = Cached::default();
        if let Source::Inline(text) = &source {
            match serde_json::from_str(text).map_err(|e| e.to_string()).and_then(|v| parse_jwks(&v)) {
                Ok(keys) => cached.keys = keys,
                Err(e) => cached.error = Some(e),
            }
        }
        Keys { source, cached: tokio::sync::Mutex::new(cached) }
    }

    /// The keys that may have signed a token with `kid` (or any, without one) and `alg`.
    /// Fetches first when the cache is empty, stale, or lacks `kid` (rate limited).
    pub async fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<Arc<Key>>, String> {
        let mut c = self.cached.lock().await;
        let pick = |c: &Cached| -> Vec<Arc<Key>> {
            c.keys.iter().filter(|k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid)).cloned().collect()
        };
        if matches!(self.source, Source::Inline(_)) {
            return Ok(pick(&c));
        }
        let refresh = if matches!(self.source, Source::File(_)) { FILE_REFRESH } else { REFRESH };
        let stale = c.fetched.is_none_or(|t| t.elapsed() >= refresh);
        let may_try = c.tried.is_none_or(|t| t.elapsed() >= MIN_REFETCH);
        let found = pick(&c);
        if may_try && (stale || found.is_empty()) {
            c.tried = Some(Instant::now());
            match self.load(&mut c).await {
                Ok(keys) => {
                    c.keys = keys;
                    c.fetched = Some(Instant::now());
                    c.error = None;
                }
                Err(e) => {
                    tracing::warn!(source = ?self.source, error = %e, "jwt: fetching keys failed (the keys known before are kept)");
                    c.error = Some(e);
                }
            }
            return Ok(pick(&c));
        }
        if c.keys.is_empty() {
            return Err(c.error.clone().unwrap_or_else(|| "no keys fetched yet".into()));
        }
        Ok(found)
    }

    async fn load(&self, c: &mut Cached) -> Result<Vec<Arc<Key>>, String> {
        match &self.source {
            Source::Inline(_) => Ok(c.keys.clone()),
            Source::File(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| format!("reading {path}: {e}"))?;
                let doc = serde_json::from_str(&text).map_err(|e| format!("{path}: not JSON: {e}"))?;
                parse_jwks(&doc).map_err(|e| format!("{path}: {e}"))
            }
            Source::Uri(url) => parse_jwks(&fetch::get_json(url).await?).map_err(|e| format!("{url}: {e}")),
            Source::Discovery(issuer) => {
                let jwks_uri = match &c.jwks_uri {
                    // Found once; discovery runs again only when that URL stops answering.
                    Some(u) if c.error.is_none() => u.clone(),
                    _ => discover(issuer).await?,
                };
                c.jwks_uri = Some(jwks_uri.clone());
                parse_jwks(&fetch::get_json(&jwks_uri).await?).map_err(|e| format!("{jwks_uri}: {e}"))
            }
        }
    }
}

/// OpenID Connect discovery: the `jwks_uri` of `<issuer>/.well-known/openid-configuration`,
/// whose `issuer` must be the one asked for (OpenID Connect Discovery 1.0, §4.3).
pub async fn discover(issuer: &str) -> Result<String, String> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let doc = fetch::get_json(&url).await?;
    let said = doc.get("issuer").and_then(|v| v.as_str()).unwrap_or_default();
    if said != issuer {
        return Err(format!("{url}: names issuer {said:?}, not {issuer:?}"));
    }
    let jwks = doc.get("jwks_uri").and_then(|v| v.as_str()).ok_or_else(|| format!("{url}: no `jwks_uri`"))?;
    if !(jwks.starts_with("https://") || jwks.starts_with("http://")) {
        return Err(format!("{url}: `jwks_uri` {jwks:?} is not an http(s) URL"));
    }
    Ok(jwks.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks(kids: &[&str]) -> String {
        let keys: Vec<String> = kids
            .iter()
            .map(|k| format!(r#"{{"kty":"oct","kid":"{k}","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}}"#))
            .collect();
        format!(r#"{{"keys":[{}]}}"#, keys.join(","))
    }

    /// A token naming an unknown `kid` makes the proxy fetch the keys again, but not more than
    /// once per MIN_REFETCH: a flood of made-up kids costs the issuer one fetch per interval.
    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let path = std::env::temp_dir().join(format!("weft-jwks-{}-{:?}.json", std::process::id(), Instant::now()));
        std::fs::write(&path, jwks(&["a"])).unwrap();
        let keys = Keys::new(Source::File(path.to_string_lossy().into_owned()));
        tokio::time::pause();
        assert_eq!(keys.find(Some("a"), Algorithm::HS256).await.unwrap().len(), 1);
        std::fs::write(&path, jwks(&["a", "b"])).unwrap();
        assert!(keys.find(Some("b"), Algorithm::HS256).await.unwrap().is_empty(), "fetched again at once");
        tokio::time::advance(MIN_REFETCH).await;
        assert_eq!(keys.find(Some("b"), Algorithm::HS256).await.unwrap().len(), 1, "not fetched after the interval");
        // A key of another type never fits: an RSA key is not an HMAC key.
        assert!(keys.find(Some("b"), Algorithm::RS256).await.unwrap().is_empty());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn jwks_entries_of_unknown_types_are_skipped_not_fatal() {
        let doc: serde_json::Value = serde_json::from_str(
            r#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB","kid":"enc"},{"kty":"weird"},{"kty":"oct","kid":"ok","k":"c2VjcmV0"}]}"#,
        )
        .unwrap();
        let keys = parse_jwks(&doc).unwrap();
        assert_eq!(keys.iter().map(|k| k.kid.clone().unwrap()).collect::<Vec<_>>(), ["ok"]);
    }
}
