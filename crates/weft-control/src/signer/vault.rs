//! Vault's PKI secrets engine, from its documented HTTP API (no Vault server can be installed on
//! weft's test machines: the tests use a stand-in that speaks this subset, and the docs say so):
//! `POST /v1/<mount>/sign/<role>` with `csr`, `uri_sans` and `ttl` (header `X-Vault-Token`,
//! optionally `X-Vault-Namespace`), answering `data.certificate` and `data.ca_chain`; the chain
//! from `GET /v1/<mount>/ca_chain` (PEM).

use super::http::{self, Endpoint};
use super::{SignError, SignRequest, Signer};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use std::time::Duration;
use weft_api::ca::{CaKind, VaultSpec, DEFAULT_VAULT_MOUNT};

pub struct Vault {
    endpoint: Endpoint,
    mount: String,
    role: String,
    namespace: Option<String>,
    token: String,
    timeout: Duration,
}

impl Vault {
    pub fn new(spec: &VaultSpec, token: String, timeout: Duration) -> Result<Vault, String> {
        Ok(Vault {
            endpoint: Endpoint::parse(&spec.endpoint)?,
            mount: spec.mount.clone().unwrap_or_else(|| DEFAULT_VAULT_MOUNT.into()).trim_matches('/').to_string(),
            role: spec.role.clone(),
            namespace: spec.namespace.clone(),
            token,
            timeout,
        })
    }

    fn headers(&self) -> Vec<(String, String)> {
        let mut h = vec![
            ("x-vault-token".to_string(), self.token.clone()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        if let Some(ns) = &self.namespace {
            h.push(("x-vault-namespace".to_string(), ns.clone()));
        }
        h
    }
}

fn refused(status: u16, path: &str, body: &[u8]) -> SignError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let errors = v.get("errors").map(|e| e.to_string()).unwrap_or_else(|| String::from_utf8_lossy(body).into());
    SignError::Refused { status, message: format!("{path}: {errors}") }
}

#[tonic::async_trait]
impl Signer for Vault {
    fn kind(&self) -> CaKind {
        CaKind::Vault
    }

    async fn ca_chain(&self) -> Result<Vec<CertificateDer<'static>>, SignError> {
        let path = format!("/v1/{}/ca_chain", self.mount);
        let (status, body) = http::request(&self.endpoint, "GET", &path, &self.headers(), vec![], self.timeout).await?;
        if status != 200 {
            return Err(refused(status, &path, &body));
        }
        http::certs_from_pem(&String::from_utf8_lossy(&body), "Vault ca_chain")
    }

    async fn sign(&self, req: &SignRequest<'_>) -> Result<Vec<CertificateDer<'static>>, SignError> {
        let path = format!("/v1/{}/sign/{}", self.mount, self.role);
        let body = json!({
            "csr": http::pem("CERTIFICATE REQUEST", req.csr_der),
            "uri_sans": req.id.uri(),
            "ttl": format!("{}s", req.lifetime.as_secs().max(1)),
            "format": "pem",
            "exclude_cn_from_sans": true,
        });
        let body = serde_json::to_vec(&body).map_err(|e| SignError::Answer(e.to_string()))?;
        let (status, answer) =
            http::request(&self.endpoint, "POST", &path, &self.headers(), body, self.timeout).await?;
        if !(200..300).contains(&status) {
            return Err(refused(status, &path, &answer));
        }
        let v: Value = serde_json::from_slice(&answer).map_err(|e| SignError::Answer(format!("{path}: {e}")))?;
        let data = v.get("data").ok_or_else(|| SignError::Answer(format!("{path}: no data")))?;
        let leaf = data
            .get("certificate")
            .and_then(Value::as_str)
            .ok_or_else(|| SignError::Answer(format!("{path}: no data.certificate")))?;
        let mut chain = http::certs_from_pem(leaf, "Vault certificate")?;
        for c in data.get("ca_chain").and_then(Value::as_array).into_iter().flatten() {
            if let Some(pem) = c.as_str() {
                chain.extend(http::certs_from_pem(pem, "Vault ca_chain")?);
            }
        }
        Ok(chain)
    }
}
