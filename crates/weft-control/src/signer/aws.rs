//! AWS Private CA: `ACMPrivateCA.IssueCertificate` and `GetCertificate` (the AWS JSON 1.1
//! protocol), signed with Signature Version 4.
//!
//! SigV4 is computed here with aws-lc-rs (HMAC-SHA256, SHA-256), about forty lines, rather than
//! with the `aws-sigv4` crate: the control plane already links aws-lc-rs, and `aws-sigv4` would
//! bring the aws-smithy runtime crates for one header. [`tests`] check it against the signature
//! botocore computes for the same request.

use super::http::{self, Endpoint};
use super::{SignError, SignRequest, Signer};
use aws_lc_rs::{digest, hmac};
use base64::Engine;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use std::time::Duration;
use weft_api::ca::{AwsPcaSpec, CaKind, DEFAULT_PCA_SIGNING_ALGORITHM, DEFAULT_PCA_TEMPLATE};

const SERVICE: &str = "acm-pca";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// How often GetCertificate is asked again while PCA is still issuing.
const POLL_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

pub struct AwsPca {
    endpoint: Endpoint,
    region: String,
    arn: String,
    template: String,
    algorithm: String,
    creds: AwsCredentials,
    timeout: Duration,
}

impl AwsPca {
    pub fn new(spec: &AwsPcaSpec, creds: AwsCredentials, timeout: Duration) -> Result<AwsPca, String> {
        let region = spec.arn_region().map_err(|e| e.to_string())?;
        let url = spec.endpoint.clone().unwrap_or_else(|| format!("https://acm-pca.{region}.amazonaws.com"));
        Ok(AwsPca {
            endpoint: Endpoint::parse(&url)?,
            region,
            arn: spec.certificate_authority_arn.clone(),
            template: spec.template_arn.clone().unwrap_or_else(|| DEFAULT_PCA_TEMPLATE.into()),
            algorithm: spec.signing_algorithm.clone().unwrap_or_else(|| DEFAULT_PCA_SIGNING_ALGORITHM.into()),
            creds,
            timeout,
        })
    }

    /// One API call; `Err(Refused)` carries AWS's `__type: message`.
    async fn call(&self, action: &str, body: Value) -> Result<Value, SignError> {
        let body = serde_json::to_vec(&body).map_err(|e| SignError::Answer(e.to_string()))?;
        let target = format!("ACMPrivateCA.{action}");
        let amz_date = amz_date(std::time::SystemTime::now());
        let mut headers = vec![
            ("content-type".to_string(), CONTENT_TYPE.to_string()),
            ("host".to_string(), self.endpoint.authority.clone()),
            ("x-amz-date".to_string(), amz_date.clone()),
            ("x-amz-target".to_string(), target),
        ];
        if let Some(t) = &self.creds.session_token {
            headers.push(("x-amz-security-token".to_string(), t.clone()));
        }
        let auth = sigv4_authorization(&self.creds, &self.region, SERVICE, "POST", "/", &headers, &body, &amz_date);
        headers.retain(|(k, _)| k != "host");
        headers.push(("authorization".to_string(), auth));
        let (status, answer) = http::request(&self.endpoint, "POST", "/", &headers, body, self.timeout).await?;
        let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let kind = v.get("__type").and_then(Value::as_str).unwrap_or("unknown");
            let msg = v.get("message").or_else(|| v.get("Message")).and_then(Value::as_str).unwrap_or("");
            return Err(SignError::Refused { status, message: format!("{action}: {kind}: {msg}") });
        }
        Ok(v)
    }
}

fn pem_field(v: &Value, field: &str) -> Result<Vec<CertificateDer<'static>>, SignError> {
    match v.get(field).and_then(Value::as_str) {
        Some(text) => http::certs_from_pem(text, field),
        None => Ok(vec![]),
    }
}

#[tonic::async_trait]
impl Signer for AwsPca {
    fn kind(&self) -> CaKind {
        CaKind::AwsPca
    }

    async fn ca_chain(&self) -> Result<Vec<CertificateDer<'static>>, SignError> {
        let v = self.call("GetCertificateAuthorityCertificate", json!({ "CertificateAuthorityArn": self.arn })).await?;
        let mut chain = pem_field(&v, "Certificate")?;
        if chain.is_empty() {
            return Err(SignError::Answer("GetCertificateAuthorityCertificate: no Certificate".into()));
        }
        chain.extend(pem_field(&v, "CertificateChain")?);
        Ok(chain)
    }

    async fn sign(&self, req: &SignRequest<'_>) -> Result<Vec<CertificateDer<'static>>, SignError> {
        let csr = http::pem("CERTIFICATE REQUEST", req.csr_der);
        let not_after = std::time::SystemTime::now() + req.lifetime;
        let unix = not_after.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let issued = self
            .call(
                "IssueCertificate",
                json!({
                    "CertificateAuthorityArn": self.arn,
                    "Csr": base64::engine::general_purpose::STANDARD.encode(csr.as_bytes()),
                    "SigningAlgorithm": self.algorithm,
                    "TemplateArn": self.template,
                    "Validity": { "Type": "ABSOLUTE", "Value": unix },
                }),
            )
            .await?;
        let cert_arn = issued
            .get("CertificateArn")
            .and_then(Value::as_str)
            .ok_or_else(|| SignError::Answer("IssueCertificate: no CertificateArn".into()))?
            .to_string();
        // PCA issues asynchronously: GetCertificate says RequestInProgressException until done.
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let got = self
                .call("GetCertificate", json!({ "CertificateAuthorityArn": self.arn, "CertificateArn": cert_arn }))
                .await;
            match got {
                Ok(v) => {
                    let mut chain = pem_field(&v, "Certificate")?;
                    chain.extend(pem_field(&v, "CertificateChain")?);
                    return Ok(chain);
                }
                Err(SignError::Refused { message, .. })
                    if message.contains("RequestInProgressException") && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(POLL_EVERY).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

/// `YYYYMMDDTHHMMSSZ`, UTC.
fn amz_date(t: std::time::SystemTime) -> String {
    let d = weft_identity::time::OffsetDateTime::from(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// The SigV4 `Authorization` header for a request with no query string. `headers` are the
/// headers to sign (lowercase names, `host` and `x-amz-date` among them).
#[allow(clippy::too_many_arguments)]
pub fn sigv4_authorization(
    creds: &AwsCredentials,
    region: &str,
    service: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    amz_date: &str,
) -> String {
    let mut sorted: Vec<(String, String)> =
        headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())).collect();
    sorted.sort();
    let canonical_headers: String = sorted.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = sorted.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!("{method}\n{path}\n\n{canonical_headers}\n{signed}\n{}", sha256_hex(body));
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical.as_bytes()));
    let mut key = hmac_sha256(format!("AWS4{}", creds.secret_access_key).as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        creds.access_key_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same request signed by botocore's `SigV4Auth` (botocore 1.x, date fixed to
    /// 2015-08-30T12:36:00Z, AWS's documentation example keys).
    #[test]
    fn sigv4_matches_botocore() {
        let creds = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let body = br#"{"CertificateAuthorityArn":"arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/x"}"#;
        let headers = [
            ("Content-Type", CONTENT_TYPE),
            ("Host", "127.0.0.1:5000"),
            ("X-Amz-Date", "20150830T123600Z"),
            ("X-Amz-Target", "ACMPrivateCA.GetCertificateAuthorityCertificate"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let auth = sigv4_authorization(&creds, "us-east-1", SERVICE, "POST", "/", &headers, body, "20150830T123600Z");
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/acm-pca/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
             Signature=cdb58defc83052c20b6ae493eaadacb5db347d3fee7b2670b2da0eb3d633d0fb"
        );
    }

    #[test]
    fn amz_date_is_utc_basic_format() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        assert_eq!(amz_date(t), "20150830T123600Z");
    }
}
