use super::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use weft_api::request_authn::JwtRule;

const SECRET_B64: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"; // "secret-secret-secret-secret-secret"

fn state(allow_hmac: bool, require: bool) -> State {
    let jwks = format!(r#"{{"keys":[{{"kty":"oct","kid":"k1","k":"{SECRET_B64}"}}]}}"#);
    let spec = RequestAuthenticationSpec {
        target_ref: None,
        jwt_rules: vec![JwtRule {
            issuer: "https://idp".into(),
            audiences: vec!["api".into()],
            jwks: Some(jwks),
            allow_hmac,
            output_claim_to_headers: vec![weft_api::request_authn::ClaimToHeader {
                header: "x-user".into(),
                claim: "sub".into(),
            }],
            ..Default::default()
        }],
        require_token: require,
    };
    let s = State::new(Metrics::default());
    s.update(&[("t".into(), spec)]);
    s
}

fn token(claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    encode(&header, &claims, &EncodingKey::from_secret(b"secret-secret-secret-secret-secret").unwrap()).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn req(auth: Option<&str>) -> Request<Body> {
    let mut b = Request::get("/x?access_token=t").header("x-user", "forged");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(h::full("")).unwrap()
}

#[tokio::test]
async fn a_valid_token_sets_the_principal_and_claim_headers() {
    let s = state(true, false);
    let t = token(serde_json::json!({"iss": "https://idp", "sub": "alice", "aud": "api", "exp": now() + 60}));
    let mut r = req(Some(&format!("Bearer {t}")));
    s.authenticate(&mut r).await.unwrap();
    let p = r.extensions().get::<RequestPrincipal>().unwrap();
    assert_eq!(p.principal(), "https://idp/alice");
    assert_eq!(r.headers()["x-user"], "alice");
    assert!(r.headers().get("authorization").is_none(), "the token is not forwarded by default");
}

#[tokio::test]
async fn hmac_is_refused_unless_the_rule_allows_it() {
    let s = state(false, false);
    let t = token(serde_json::json!({"iss": "https://idp", "sub": "alice", "aud": "api", "exp": now() + 60}));
    let resp = s.authenticate(&mut req(Some(&format!("Bearer {t}")))).await.unwrap_err();
    assert_eq!(resp.status(), 401);
    let www = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(www.starts_with("Bearer error=\"invalid_token\"") && www.contains("HS256"), "{www}");
}

#[tokio::test]
async fn missing_tokens_pass_unless_required_and_forged_claim_headers_go() {
    let mut r = req(None);
    state(true, false).authenticate(&mut r).await.unwrap();
    assert!(r.headers().get("x-user").is_none(), "a caller cannot set a claim header");
    assert!(r.extensions().get::<RequestPrincipal>().is_none());
    let resp = state(true, true).authenticate(&mut req(None)).await.unwrap_err();
    assert_eq!((resp.status().as_u16(), resp.headers()["www-authenticate"].to_str().unwrap()), (401, "Bearer"));
}

#[tokio::test]
async fn expired_wrong_audience_and_alg_none_are_refused() {
    let s = state(true, false);
    for (claims, want) in [
        (serde_json::json!({"iss": "https://idp", "sub": "a", "aud": "api", "exp": now() - 3600}), "expired"),
        (serde_json::json!({"iss": "https://idp", "sub": "a", "aud": "web", "exp": now() + 60}), "audience"),
        (serde_json::json!({"iss": "https://other", "sub": "a", "aud": "api", "exp": now() + 60}), "issuer"),
        (serde_json::json!({"iss": "https://idp", "sub": "a", "aud": "api"}), "'exp'"),
    ] {
        let resp = s.authenticate(&mut req(Some(&format!("Bearer {}", token(claims))))).await.unwrap_err();
        let www = resp.headers()["www-authenticate"].to_str().unwrap().to_string();
        assert!(www.contains(want), "{want}: {www}");
    }
    // alg none: header {"alg":"none"}, no signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lkcCIsInN1YiI6ImEiLCJhdWQiOiJhcGkiLCJleHAiOjk5OTk5OTk5OTl9.";
    let resp = s.authenticate(&mut req(Some(&format!("Bearer {none}")))).await.unwrap_err();
    assert_eq!(resp.status(), 401);
}

#[test]
fn tokens_are_found_in_headers_params_and_cookies() {
    let r = Request::get("/p?a=1&tok=abc").header("cookie", "x=1; jwt=def").body(h::full("")).unwrap();
    assert_eq!(extract(&r, &Location::Param("tok".into())).as_deref(), Some("abc"));
    assert_eq!(extract(&r, &Location::Cookie("jwt".into())).as_deref(), Some("def"));
    let hdr = Location::Header { name: http::header::AUTHORIZATION, prefix: "Bearer ".into() };
    assert_eq!(extract(&r, &hdr), None);
    let r = Request::get("/").header("authorization", "bearer xyz").body(h::full("")).unwrap();
    assert_eq!(extract(&r, &hdr).as_deref(), Some("xyz"));
    let r = Request::get("/").header("authorization", "Basic xyz").body(h::full("")).unwrap();
    assert_eq!(extract(&r, &hdr), None);
}

/// The fuzzer's entry points (fuzz/fuzz_targets/jwt.rs) decode what `check` decodes, and refuse
/// what is not a JWT with the 401's description, never a panic.
#[test]
fn fuzzing_entry_points_decode_as_check_does() {
    let t = token(serde_json::json!({ "iss": "https://idp", "sub": "alice", "exp": now() + 60 }));
    let (header, claims) = fuzzing::decode(&t).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(claims.get("sub").and_then(Value::as_str), Some("alice"));
    for bad in ["", ".", "..", "a.b.c", "e30.e30.", "eyJhbGciOiJub25lIn0.e30.", &"a".repeat(MAX_TOKEN + 1)] {
        let e = fuzzing::decode(bad).unwrap_err();
        assert!(e.contains("JWT") || e.contains("claims") || e.contains("too long"), "{bad:?}: {e}");
    }
    for raw in [format!("Bearer {t}").as_bytes(), b"\xff\xfe", b"session=\"", b"access_token=&=", b"Bearer"] {
        fuzzing::request(raw);
    }
}
