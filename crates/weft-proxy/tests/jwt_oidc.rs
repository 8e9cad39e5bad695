//! Request authentication against a real OpenID Provider: the npm package `oidc-provider`
//! (OpenID Certified) runs on Node.js on 127.0.0.1 and issues access tokens (JWTs, RS256 and
//! ES256) by the client credentials grant. The server sidecar finds the provider's keys by
//! OpenID Connect discovery (`issuer` only) or from its `jwks_uri`, and verifies the tokens a
//! client sends through the client sidecar. `scripts/jwt-peers.sh` installs oidc-provider under
//! target/; the tests skip, saying why, only when node or npm is missing.

mod jwt;
mod support;

use jwt::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use weft_api::request_authn::{ClaimToHeader, JwtRule, RequestAuthenticationSpec};

/// The provider process, killed on drop.
struct Provider {
    child: Child,
    issuer: String,
    tokens: serde_json::Value,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider() -> Option<Provider> {
    let dir = match install("node") {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED: oidc-provider cannot run here: {why}");
            return None;
        }
    };
    let mut child = Command::new("node")
        .arg(repo().join("crates/weft-proxy/tests/jwt/oidc_provider.mjs"))
        .env("OIDC_PROVIDER_DIR", dir.join("node"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    // The JSON line (oidc-provider may print notices before it).
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with('{') {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the provider exited before printing its tokens");
    }
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("provider said {line:?}: {e}"));
    Some(Provider { child, issuer: v["issuer"].as_str().unwrap().into(), tokens: v["tokens"].clone() })
}

fn rule(p: &Provider) -> JwtRule {
    JwtRule {
        issuer: p.issuer.clone(),
        audiences: vec!["urn:weft:api".into()],
        output_claim_to_headers: vec![ClaimToHeader { header: "x-client".into(), claim: "client_id".into() }],
        ..Default::default()
    }
}

async fn accepts_the_providers_tokens(op: &Provider, rule: JwtRule) {
    let spec = RequestAuthenticationSpec { target_ref: None, jwt_rules: vec![rule], require_token: true };
    let p = jwt_pair(vec![spec]).await;
    for alg in ["RS256", "ES256"] {
        let token = op.tokens[alg].as_str().unwrap();
        let (status, www, app) = call(&p, "/", &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(status, 200, "{alg}: {www}");
        assert_eq!(app["x-client"], "weft-test", "{alg}: {app}");
        // One byte of the signature changed.
        let mut forged = token.to_string();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        let (status, www, _) = call(&p, "/", &[("authorization", &format!("Bearer {forged}"))]).await;
        assert_eq!(status, 401, "{alg}: a forged signature passed");
        assert!(www.contains("invalid_token"), "{www}");
    }
    let (status, www, _) = call(&p, "/", &[]).await;
    assert_eq!((status, www.as_str()), (401, "Bearer"));
}

#[tokio::test]
async fn tokens_of_a_real_openid_provider_verify_through_discovery() {
    let Some(op) = provider() else { return };
    accepts_the_providers_tokens(&op, rule(&op)).await;
}

#[tokio::test]
async fn tokens_of_a_real_openid_provider_verify_with_its_jwks_uri() {
    let Some(op) = provider() else { return };
    let jwks_uri = format!("{}/jwks", op.issuer);
    accepts_the_providers_tokens(&op, JwtRule { jwks_uri: Some(jwks_uri), ..rule(&op) }).await;
}
