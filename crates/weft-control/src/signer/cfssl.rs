//! cfssl's signing API (`cfssl serve`, multirootca): `POST /api/v1/cfssl/sign`, or `authsign`
//! with an HMAC over the request when the control plane has cfssl's auth key
//! ([`super::ENV_CFSSL_AUTH_KEY`]); the CA's certificate from `POST /api/v1/cfssl/info`.
//!
//! The SPIFFE ID goes in `hosts` (cfssl 1.3 and later make a URI SAN of it, and copy the CSR's).
//! cfssl 1.2 (Debian's `golang-cfssl` 1.2.0+git20160825) cannot issue URI SANs through its API:
//! it turns `hosts` into DNS names and drops the CSR's URIs, so weft refuses what it returns
//! (`weft_identity::external::check_issued`) and signing fails with that reason.

use super::http::{self, Endpoint};
use super::{SignError, SignRequest, Signer};
use aws_lc_rs::hmac;
use base64::Engine;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use std::time::Duration;
use weft_api::ca::{CaKind, CfsslSpec};

pub struct Cfssl {
    endpoint: Endpoint,
    profile: Option<String>,
    label: Option<String>,
    auth_key: Option<Vec<u8>>,
    timeout: Duration,
}

impl Cfssl {
    pub fn new(spec: &CfsslSpec, auth_key: Option<Vec<u8>>, timeout: Duration) -> Result<Cfssl, String> {
        Ok(Cfssl {
            endpoint: Endpoint::parse(&spec.endpoint)?,
            profile: spec.profile.clone(),
            label: spec.label.clone(),
            auth_key,
            timeout,
        })
    }

    fn with_target(&self, mut body: Value) -> Value {
        if let Some(p) = &self.profile {
            body["profile"] = json!(p);
        }
        if let Some(l) = &self.label {
            body["label"] = json!(l);
        }
        body
    }

    /// `result` of a cfssl API answer, or its `errors`.
    async fn call(&self, path: &str, body: Vec<u8>) -> Result<Value, SignError> {
        let headers = [("content-type".to_string(), "application/json".to_string())];
        let (status, answer) = http::request(&self.endpoint, "POST", path, &headers, body, self.timeout).await?;
        let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if v.get("success").and_then(Value::as_bool) != Some(true) {
            let errors =
                v.get("errors").map(|e| e.to_string()).unwrap_or_else(|| String::from_utf8_lossy(&answer).into());
            return Err(SignError::Refused { status, message: format!("{path}: {errors}") });
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }
}

#[tonic::async_trait]
impl Signer for Cfssl {
    fn kind(&self) -> CaKind {
        CaKind::Cfssl
    }

    async fn ca_chain(&self) -> Result<Vec<CertificateDer<'static>>, SignError> {
        let body = serde_json::to_vec(&self.with_target(json!({}))).unwrap_or_default();
        let result = self.call("/api/v1/cfssl/info", body).await?;
        let pem = result
            .get("certificate")
            .and_then(Value::as_str)
            .ok_or_else(|| SignError::Answer("/api/v1/cfssl/info: no certificate".into()))?;
        http::certs_from_pem(pem, "cfssl info")
    }

    async fn sign(&self, req: &SignRequest<'_>) -> Result<Vec<CertificateDer<'static>>, SignError> {
        let request = self.with_target(json!({
            "certificate_request": http::pem("CERTIFICATE REQUEST", req.csr_der),
            "hosts": [req.id.uri()],
        }));
        let request = serde_json::to_vec(&request).map_err(|e| SignError::Answer(e.to_string()))?;
        let (path, body) = match &self.auth_key {
            None => ("/api/v1/cfssl/sign", request),
            Some(key) => {
                let b64 = base64::engine::general_purpose::STANDARD;
                let token = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), &request);
                let wrapped = json!({ "token": b64.encode(token.as_ref()), "request": b64.encode(&request) });
                ("/api/v1/cfssl/authsign", serde_json::to_vec(&wrapped).unwrap_or_default())
            }
        };
        let result = self.call(path, body).await?;
        let pem = result
            .get("certificate")
            .and_then(Value::as_str)
            .ok_or_else(|| SignError::Answer(format!("{path}: no certificate")))?;
        http::certs_from_pem(pem, "cfssl sign")
    }
}
