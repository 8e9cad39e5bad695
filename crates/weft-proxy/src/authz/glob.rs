//! `*` globs of policy values, parsed once: exact, prefix (`/api/*`), suffix (`*.example.com`),
//! any (`*`), or several `*` (`spiffe://td/ns/*/sa/*`).

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Glob {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Literal parts between `*`s: the first is a prefix, the last a suffix, the others in order.
    Parts(Vec<String>),
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let parts: Vec<&str> = pattern.split('*').collect();
        match parts.as_slice() {
            [one] => Glob::Exact(one.to_string()),
            ["", ""] => Glob::Any,
            [p, ""] => Glob::Prefix(p.to_string()),
            ["", s] => Glob::Suffix(s.to_string()),
            _ if parts.iter().all(|p| p.is_empty()) => Glob::Any,
            _ => Glob::Parts(parts.iter().map(|p| p.to_string()).collect()),
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Exact(e) => s == e,
            Glob::Prefix(p) => s.starts_with(p.as_str()),
            Glob::Suffix(x) => s.ends_with(x.as_str()),
            Glob::Parts(parts) => {
                let (first, rest) = parts.split_first().expect("two parts at least");
                let (last, middle) = rest.split_last().expect("two parts at least");
                let Some(mut s) = s.strip_prefix(first.as_str()) else { return false };
                for m in middle {
                    match s.find(m.as_str()) {
                        Some(i) => s = &s[i + m.len()..],
                        None => return false,
                    }
                }
                s.ends_with(last.as_str())
            }
        }
    }
}

/// A list of globs: matches when one does.
#[derive(Clone, Debug, Default)]
pub struct Globs(pub Vec<Glob>);

impl Globs {
    pub fn new(patterns: &[String]) -> Globs {
        Globs(patterns.iter().map(|p| Glob::new(p)).collect())
    }

    pub fn matches(&self, s: &str) -> bool {
        self.0.iter().any(|g| g.matches(s))
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn globs_match_as_istio_values_do() {
        let m = |p: &str, s: &str| Glob::new(p).matches(s);
        assert!(m("*", "") && m("*", "x") && m("**", "x"));
        assert!(m("/api", "/api") && !m("/api", "/api/x"));
        assert!(m("/api/*", "/api/x/y") && !m("/api/*", "/apix"));
        assert!(m("*.example.com", "a.example.com") && !m("*.example.com", "example.com"));
        assert!(
            m("spiffe://td/ns/*/sa/*", "spiffe://td/ns/a/sa/b") && !m("spiffe://td/ns/*/sa/*", "spiffe://td/ns/a/x/b")
        );
        // Parts may not overlap.
        assert!(!m("ab*ba", "aba") && m("ab*ba", "abba"));
    }
}
