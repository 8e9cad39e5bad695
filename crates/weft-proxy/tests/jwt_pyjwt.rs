//! Request authentication against tokens from a second implementation: PyJWT (with
//! `cryptography`) signs tokens with every algorithm weft accepts, and a list of tokens that must
//! be refused (bad signature, tampered claims, wrong issuer or audience, expired, not yet valid,
//! `alg: none`, HS256 keyed with the RSA public key, unknown `kid`). Real sidecars on
//! 127.0.0.1: client sidecar → mTLS → server sidecar (verifies) → an app echoing its headers.
//! PyJWT is installed by `scripts/jwt-peers.sh` into a venv under target/; the tests skip, saying
//! why, only when python3's venv module is missing.

mod jwt;
mod support;

use jwt::*;
use serde_json::Value;
use support::metric;
use weft_api::request_authn::{ClaimToHeader, JwtHeader, JwtRule, RequestAuthenticationSpec};

struct Tokens {
    doc: Value,
}

impl Tokens {
    fn load() -> Option<Tokens> {
        let dir = match install("python") {
            Ok(d) => d,
            Err(why) => {
                eprintln!("SKIPPED: PyJWT cannot be installed here: {why}");
                return None;
            }
        };
        let out = std::process::Command::new(dir.join("venv/bin/python"))
            .arg(repo().join("crates/weft-proxy/tests/jwt/pyjwt_tokens.py"))
            .output()
            .unwrap();
        assert!(out.status.success(), "pyjwt_tokens.py: {}", String::from_utf8_lossy(&out.stderr));
        Some(Tokens { doc: serde_json::from_slice(&out.stdout).unwrap() })
    }

    fn rule(&self, allow_hmac: bool) -> JwtRule {
        JwtRule {
            issuer: self.doc["issuer"].as_str().unwrap().into(),
            audiences: vec![self.doc["audience"].as_str().unwrap().into()],
            jwks: Some(self.doc["jwks"].to_string()),
            from_headers: vec![JwtHeader { name: "authorization".into(), prefix: "Bearer ".into() }],
            from_params: vec!["access_token".into()],
            from_cookies: vec!["session".into()],
            output_claim_to_headers: vec![
                ClaimToHeader { header: "x-jwt-sub".into(), claim: "sub".into() },
                ClaimToHeader { header: "x-jwt-groups".into(), claim: "groups".into() },
            ],
            allow_hmac,
            ..Default::default()
        }
    }

    fn valid(&self) -> Vec<(String, String)> {
        self.doc["valid"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().into())).collect()
    }

    fn invalid(&self) -> Vec<(String, String)> {
        self.doc["invalid"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().into())).collect()
    }
}

fn spec(rule: JwtRule, require_token: bool) -> RequestAuthenticationSpec {
    RequestAuthenticationSpec { target_ref: None, jwt_rules: vec![rule], require_token }
}

#[tokio::test]
async fn tokens_of_every_algorithm_from_pyjwt_are_accepted_and_their_claims_reach_the_app() {
    let Some(t) = Tokens::load() else { return };
    let p = jwt_pair(vec![spec(t.rule(true), true)]).await;
    for (alg, token) in t.valid() {
        let (status, www, app) = call(&p, "/", &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(status, 200, "{alg}: {www}");
        assert_eq!(app["x-jwt-sub"], "alice", "{alg}");
        assert_eq!(app["x-jwt-groups"], "dev,ops", "{alg}");
        assert!(app.get("authorization").is_none(), "{alg}: the token is not forwarded by default");
    }
    // The same token from a query parameter and from a cookie; a forged claim header is replaced.
    let (_, es) = t.valid().into_iter().find(|(a, _)| a == "ES256").unwrap();
    let (status, _, app) = call(&p, &format!("/?access_token={es}"), &[("x-jwt-sub", "mallory")]).await;
    assert_eq!((status, &app["x-jwt-sub"]), (200, &Value::from("alice")));
    let (status, _, app) = call(&p, "/", &[("cookie", &format!("a=b; session={es}"))]).await;
    assert_eq!((status, &app["x-jwt-sub"]), (200, &Value::from("alice")));
    // No token where one is required.
    let (status, www, _) = call(&p, "/", &[("x-jwt-sub", "mallory")]).await;
    assert_eq!((status, www.as_str()), (401, "Bearer"));
    let m = metrics(&p).await;
    assert_eq!(metric(&m, "weft_jwt_requests_total{result=\"ok\""), 12.0, "{m}");
    assert_eq!(metric(&m, "weft_jwt_requests_total{result=\"missing\""), 1.0, "{m}");
}

#[tokio::test]
async fn forged_expired_misaddressed_and_confused_tokens_are_refused_with_401() {
    let Some(t) = Tokens::load() else { return };
    let p = jwt_pair(vec![spec(t.rule(true), false)]).await;
    for (case, token) in t.invalid() {
        let (status, www, app) = call(&p, "/", &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(status, 401, "{case} was let through: {app}");
        assert!(www.starts_with("Bearer error=\"invalid_token\""), "{case}: {www}");
    }
    let m = metrics(&p).await;
    for reason in ["bad-signature", "issuer", "audience", "expired", "not-yet-valid", "unknown-kid"] {
        let n = metric(&m, &format!("weft_jwt_requests_total{{result=\"invalid\",reason=\"{reason}\"}}"));
        assert!(n >= 1.0, "no refusal counted as {reason}: {m}");
    }
    // Without a token and without requireToken: the request passes, with no claim headers.
    let (status, _, app) = call(&p, "/", &[("x-jwt-sub", "mallory")]).await;
    assert_eq!(status, 200);
    assert!(app.get("x-jwt-sub").is_none(), "{app}");
}

#[tokio::test]
async fn hmac_tokens_are_refused_unless_the_rule_allows_hmac() {
    let Some(t) = Tokens::load() else { return };
    let p = jwt_pair(vec![spec(t.rule(false), false)]).await;
    let (_, hs) = t.valid().into_iter().find(|(a, _)| a == "HS256").unwrap();
    let (_, confused) = t.invalid().into_iter().find(|(a, _)| a == "hs256-with-rsa-public-key").unwrap();
    for token in [hs, confused] {
        let (status, www, _) = call(&p, "/", &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(status, 401);
        assert!(www.contains("HS256"), "{www}");
    }
    let (_, rs) = t.valid().into_iter().find(|(a, _)| a == "RS256").unwrap();
    assert_eq!(call(&p, "/", &[("authorization", &format!("Bearer {rs}"))]).await.0, 200);
}
