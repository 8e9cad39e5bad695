//! HTML by hand: escaping, the page frame (header, navigation, footer) and number formats.

use super::session::Session;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encodes a query value or path segment (unreserved characters stay).
pub fn url_encode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// A path segment: like [`url_encode`] but `/` is encoded too.
pub fn seg(s: &str) -> String {
    url_encode(s).replace('/', "%2F")
}

const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/services", "Services"),
    ("/topology", "Topology"),
    ("/proxies", "Workloads & proxies"),
    ("/tap", "Tap"),
];

/// The frame every page shares.
pub struct Page<'a> {
    title: &'a str,
    active: &'a str,
    session: Option<&'a Session>,
    cluster: &'a str,
    /// `data-refresh` seconds for the page script (empty: none).
    refresh: &'a str,
}

impl<'a> Page<'a> {
    pub fn new(
        title: &'a str,
        active: &'a str,
        session: Option<&'a Session>,
        cluster: &'a str,
        refresh: &'a str,
    ) -> Self {
        Page { title, active, session, cluster, refresh }
    }

    pub fn render(&self, body: String) -> axum::response::Html<String> {
        let nav = match self.session {
            Some(s) => {
                let links: String = NAV
                    .iter()
                    .map(|(href, label)| {
                        let cls = if *href == self.active { " class=\"active\"" } else { "" };
                        format!("<a href=\"{href}\"{cls}>{label}</a>")
                    })
                    .collect();
                format!(
                    "<nav>{links}<span class=\"who\">cluster <b>{}</b> · {} token <form method=\"post\" action=\"/logout\"><button>Log out</button></form></span></nav>",
                    esc(self.cluster),
                    esc(&s.role)
                )
            }
            None => String::new(),
        };
        // The script only on pages behind the login (it is served only with a session).
        let (css, script) = match self.session {
            Some(_) => (
                "<link rel=\"stylesheet\" href=\"/assets/dash.css\">".to_string(),
                "<script src=\"/assets/dash.js\"></script>",
            ),
            None => (format!("<style>{}</style>", include_str!("assets/dash.css")), ""),
        };
        let refresh =
            if self.refresh.is_empty() { String::new() } else { format!(" data-refresh=\"{}\"", self.refresh) };
        let role = self.session.map(|s| s.role.as_str()).unwrap_or("");
        axum::response::Html(format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · weft</title>{css}{script}</head>
<body data-role="{role}">
<header><a class="brand" href="/">weft</a>{nav}</header>
<div id="page-errors" hidden></div>
<main{refresh}>
{body}
</main>
<footer>weft dashboard · served by the control plane · <span id="updated"></span></footer>
</body></html>"#,
            title = esc(self.title),
            role = esc(role),
        ))
    }
}

/// A box saying why there is nothing to show.
pub fn note(class: &str, text: &str) -> String {
    format!("<p class=\"note {class}\">{}</p>", esc(text))
}

pub fn rate(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
        None => "–".into(),
    }
}

/// A success rate (0..1) as a percentage, with a class for colouring.
pub fn pct(v: Option<f64>) -> String {
    match v {
        Some(x) => {
            let cls = if x >= 0.99 {
                "good"
            } else if x >= 0.95 {
                "warn"
            } else {
                "bad"
            };
            format!("<span class=\"{cls}\">{:.2}%</span>", x * 100.0)
        }
        None => "–".into(),
    }
}

pub fn ms(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0} ms"),
        Some(x) => format!("{x:.1} ms"),
        None => "–".into(),
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `3m ago`, `2h 5m ago`; 0 is "never".
pub fn ago(unix: u64) -> String {
    if unix == 0 {
        return "never".into();
    }
    format!("{} ago", span(now_unix().saturating_sub(unix)))
}

/// `in 23h 59m`, or `expired 5m ago`; 0 is "–".
pub fn until(unix: u64) -> String {
    if unix == 0 {
        return "–".into();
    }
    let now = now_unix();
    if unix >= now {
        let left = unix - now;
        let cls = if left < 3600 {
            "bad"
        } else if left < 24 * 3600 {
            "warn"
        } else {
            "good"
        };
        format!("<span class=\"{cls}\">in {}</span>", span(left))
    } else {
        format!("<span class=\"bad\">expired {} ago</span>", span(now - unix))
    }
}

pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// A JSON value's string (empty when absent or not a string).
pub fn s(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(x)) => x.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(x) => x.to_string(),
    }
}

pub fn u(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(|x| x.as_u64()).unwrap_or(0)
}

pub fn f(v: &serde_json::Value, key: &str) -> Option<f64> {
    v.get(key).and_then(|x| x.as_f64())
}

/// A badge for a state word: green for good states, red for bad ones.
pub fn badge(state: &str) -> String {
    let cls = match state.to_ascii_lowercase().as_str() {
        "synced" | "active" | "serving" | "connected" | "passing" | "healthy" | "ok" | "pass" | "yes"
        | "established" => "good",
        "stale" | "pending" | "connecting" | "warning" | "warn" | "skip" => "warn",
        "" => "",
        _ => "bad",
    };
    format!("<span class=\"badge {cls}\">{}</span>", esc(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(url_encode("/a b?c=d&e"), "/a%20b%3Fc%3Dd%26e");
        assert_eq!(seg("a/b"), "a%2Fb");
    }

    #[test]
    fn spans_read_well() {
        assert_eq!(span(5), "5s");
        assert_eq!(span(65), "1m 5s");
        assert_eq!(span(3 * 3600 + 60), "3h 1m");
        assert_eq!(span(2 * 86400 + 3600), "2d 1h");
    }
}
