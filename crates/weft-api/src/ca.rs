//! MeshConfig `ca`: which certificate authority signs workload certificates.
//!
//! `builtin` (the default) is weft's own CA in the control plane's data directory (or a plug-in
//! intermediate given with `--ca-cert/--ca-key/--ca-chain`). The others are external CAs that the
//! control plane calls with the proxy's CSR, after checking which identity the caller may have:
//! AWS Private CA (`awsPca`), cfssl's signing API (`cfssl`) and Vault's PKI secrets engine
//! (`vault`). In every mode the private key stays in the proxy: only the CSR travels.
//!
//! Secrets (AWS keys, the Vault token, cfssl's auth key) are never part of this resource (every
//! reader of the API could see them): the control plane takes them from its environment
//! (docs/security.md, "External certificate authorities").

use crate::{ConfigError, Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How long the control plane waits for an external CA (per call) unless `timeout` says.
pub const DEFAULT_CA_TIMEOUT: Duration = Duration::from_secs(10);
/// The PCA certificate template weft asks for: the CSR's subject alternative names pass through.
pub const DEFAULT_PCA_TEMPLATE: &str = "arn:aws:acm-pca:::template/EndEntityCertificate/V1";
pub const DEFAULT_PCA_SIGNING_ALGORITHM: &str = "SHA256WITHRSA";
pub const DEFAULT_VAULT_MOUNT: &str = "pki";
/// gRPC metadata on `Identity.Sign`'s FAILED_PRECONDITION answer: the SPIFFE ID the proxy's CSR
/// must name (an external CA copies the CSR's URI SAN; the key still never leaves the proxy).
pub const CSR_IDENTITY_METADATA: &str = "weft-csr-identity";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CaKind {
    /// weft's own CA (`<data-dir>/ca/`, or the plug-in files).
    #[default]
    Builtin,
    /// AWS Private CA (`ACMPrivateCA.IssueCertificate`).
    AwsPca,
    /// cfssl's `/api/v1/cfssl/sign` (or `authsign` with an auth key).
    Cfssl,
    /// Vault's PKI `sign/<role>` endpoint.
    Vault,
}

impl std::fmt::Display for CaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CaKind::Builtin => "builtin",
            CaKind::AwsPca => "awsPca",
            CaKind::Cfssl => "cfssl",
            CaKind::Vault => "vault",
        })
    }
}

/// MeshConfig `ca`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CaSpec {
    #[serde(default)]
    pub kind: CaKind,
    /// Per call to the external CA (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// With `kind: awsPca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_pca: Option<AwsPcaSpec>,
    /// With `kind: cfssl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfssl: Option<CfsslSpec>,
    /// With `kind: vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsPcaSpec {
    /// `arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>`.
    pub certificate_authority_arn: String,
    /// The AWS region (default: the one in the ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Default `https://acm-pca.<region>.amazonaws.com`; `http://` only for a local test server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Default `arn:aws:acm-pca:::template/EndEntityCertificate/V1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_arn: Option<String>,
    /// Must match the CA's key: `SHA256WITHRSA` (default), `SHA256WITHECDSA`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_algorithm: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CfsslSpec {
    /// `http(s)://host:port` of `cfssl serve` (or multirootca).
    pub endpoint: String,
    /// The signing profile (its `allowed_extensions` must include `2.5.29.17`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// multirootca's signer label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VaultSpec {
    /// `http(s)://host:8200`.
    pub endpoint: String,
    /// The PKI secrets engine's mount path (default `pki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// The role to sign with (`allowed_uri_sans` must admit `spiffe://<trust-domain>/*`).
    pub role: String,
    /// Vault Enterprise namespace (`X-Vault-Namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl CaSpec {
    pub fn is_builtin(&self) -> bool {
        *self == CaSpec::default()
    }

    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.unwrap_or(DEFAULT_CA_TIMEOUT).into()
    }

    /// Checks that exactly the section of `kind` is present and well formed; errors name the
    /// field (`ca.<...>`) and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sections = [
            ("ca.awsPca", CaKind::AwsPca, self.aws_pca.is_some()),
            ("ca.cfssl", CaKind::Cfssl, self.cfssl.is_some()),
            ("ca.vault", CaKind::Vault, self.vault.is_some()),
        ];
        for (field, kind, present) in sections {
            if present && kind != self.kind {
                return Err(ConfigError::invalid(
                    field,
                    format!("is set but ca.kind is {}; set ca.kind: {kind} or remove {field}", self.kind),
                ));
            }
            if !present && kind == self.kind {
                return Err(ConfigError::invalid(field, format!("is required with ca.kind: {kind}")));
            }
        }
        if let Some(t) = self.timeout {
            if t.0 < std::time::Duration::from_millis(100) || t.0 > std::time::Duration::from_secs(300) {
                return Err(ConfigError::invalid("ca.timeout", format!("{t} must be between 100ms and 300s")));
            }
        }
        if let Some(p) = &self.aws_pca {
            p.arn_region()?;
            if let Some(e) = &p.endpoint {
                check_endpoint("ca.awsPca.endpoint", e)?;
            }
            if let Some(r) = &p.region {
                check_region("ca.awsPca.region", r)?;
            }
        }
        if let Some(c) = &self.cfssl {
            check_endpoint("ca.cfssl.endpoint", &c.endpoint)?;
        }
        if let Some(v) = &self.vault {
            check_endpoint("ca.vault.endpoint", &v.endpoint)?;
            let bad = |s: &str| s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
            if bad(&v.role) || v.role.contains('/') {
                return Err(ConfigError::invalid(
                    "ca.vault.role",
                    format!("{:?} must be a Vault role name (letters, digits, '-', '_', '.')", v.role),
                ));
            }
            if let Some(m) = &v.mount {
                if bad(m) || m.contains("..") {
                    return Err(ConfigError::invalid(
                        "ca.vault.mount",
                        format!("{m:?} must be a mount path such as {DEFAULT_VAULT_MOUNT}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl AwsPcaSpec {
    /// The region: `region`, else the ARN's fourth field.
    pub fn arn_region(&self) -> Result<String, ConfigError> {
        let arn = &self.certificate_authority_arn;
        let parts: Vec<&str> = arn.split(':').collect();
        if parts.len() != 6
            || parts[0] != "arn"
            || parts[2] != "acm-pca"
            || !parts[5].starts_with("certificate-authority/")
        {
            return Err(ConfigError::invalid(
                "ca.awsPca.certificateAuthorityArn",
                format!("{arn:?} is not a Private CA ARN; write arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>"),
            ));
        }
        match &self.region {
            Some(r) => Ok(r.clone()),
            None if !parts[3].is_empty() => Ok(parts[3].to_string()),
            None => Err(ConfigError::invalid("ca.awsPca.region", "is required when the ARN names no region")),
        }
    }
}

fn check_region(field: &str, r: &str) -> Result<(), ConfigError> {
    if r.is_empty() || !r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(ConfigError::invalid(field, format!("{r:?} is not an AWS region such as us-east-1")));
    }
    Ok(())
}

fn check_endpoint(field: &str, e: &str) -> Result<(), ConfigError> {
    let rest = e.strip_prefix("https://").or_else(|| e.strip_prefix("http://"));
    match rest {
        Some(hostport)
            if !hostport.is_empty() && !hostport.trim_end_matches('/').contains(['/', '?', '#', '@', ' ']) =>
        {
            Ok(())
        }
        _ => Err(ConfigError::invalid(field, format!("{e:?} must be http(s)://host[:port] with no path"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<CaSpec, String> {
        let spec: CaSpec = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    #[test]
    fn builtin_is_the_default_and_external_kinds_need_their_section() {
        assert!(parse("{}").unwrap().is_builtin());
        let e = parse("kind: cfssl").unwrap_err();
        assert!(e.contains("ca.cfssl") && e.contains("required"), "{e}");
        let e = parse("kind: vault\ncfssl: {endpoint: 'http://127.0.0.1:8888'}").unwrap_err();
        assert!(e.contains("ca.cfssl") && e.contains("ca.kind"), "{e}");
        let e = parse("kind: cfssl\ncfssl: {endpoint: 'ftp://x'}").unwrap_err();
        assert!(e.contains("ca.cfssl.endpoint"), "{e}");
        let e = parse("kind: awsPca\nawsPca: {certificateAuthorityArn: nope}").unwrap_err();
        assert!(e.contains("certificateAuthorityArn"), "{e}");
        let e = parse("kind: vault\nvault: {endpoint: 'http://v:8200', role: '../x'}").unwrap_err();
        assert!(e.contains("ca.vault.role"), "{e}");
        let e = parse("kind: cfssl\ncfssl: {endpoint: 'http://c'}\ntimeout: 1ms").unwrap_err();
        assert!(e.contains("ca.timeout"), "{e}");
        let e = parse("kind: cfssl\ncfssl: {endpoint: 'http://c', secret: x}").unwrap_err();
        assert!(e.contains("secret"), "{e}");
        let ok = parse("kind: awsPca\nawsPca: {certificateAuthorityArn: 'arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/abc'}").unwrap();
        assert_eq!(ok.aws_pca.unwrap().arn_region().unwrap(), "eu-west-1");
    }
}
