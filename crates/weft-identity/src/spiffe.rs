//! SPIFFE IDs: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use crate::Error;
use std::fmt;
use std::str::FromStr;

/// A validated SPIFFE ID of a weft workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds the ID of a workload, validating each part.
    pub fn workload(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, Error> {
        let id = format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}");
        id.parse()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The URI form, as carried in the certificate's SAN.
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

fn bad(id: &str, reason: &'static str) -> Error {
    Error::InvalidSpiffeId { id: id.to_string(), reason }
}

/// Trust domains are lowercase DNS-like names (SPIFFE spec: letters, digits, `.`, `-`, `_`).
fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
}

/// Path segments: SPIFFE allows letters, digits, `.`, `-`, `_`; not `.` or `..` alone.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl FromStr for SpiffeId {
    type Err = Error;

    fn from_str(id: &str) -> Result<Self, Error> {
        let rest = id.strip_prefix("spiffe://").ok_or_else(|| bad(id, "must start with spiffe://"))?;
        let (td, path) = rest.split_once('/').ok_or_else(|| bad(id, "has no path"))?;
        if !valid_trust_domain(td) {
            return Err(bad(id, "trust domain must be lowercase letters, digits, '.', '-', '_'"));
        }
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] => {
                if !valid_segment(ns) || !valid_segment(sa) {
                    return Err(bad(id, "namespace and service account must be letters, digits, '.', '-', '_'"));
                }
                Ok(SpiffeId {
                    trust_domain: td.to_string(),
                    namespace: ns.to_string(),
                    service_account: sa.to_string(),
                })
            }
            _ => Err(bad(id, "path must be /ns/<namespace>/sa/<service-account>")),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "web");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/web");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "http://cluster.local/ns/a/sa/b",
            "spiffe://",
            "spiffe://Cluster/ns/a/sa/b",
            "spiffe://td/ns/a",
            "spiffe://td/ns/a/sa/b/extra",
            "spiffe://td/ns/../sa/b",
            "spiffe://td/ns/a b/sa/b",
            "spiffe:///ns/a/sa/b",
        ] {
            let err = bad.parse::<SpiffeId>().unwrap_err();
            assert!(err.to_string().contains("invalid SPIFFE ID"), "{bad}: {err}");
        }
    }
}
