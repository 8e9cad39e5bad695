//! The verbs that talk to a control plane: apply, get, describe, delete, register, deregister,
//! proxy-status, token create, ca, check. Each is one HTTP API call (docs/api.md) and a readable
//! print of the answer.

use crate::client::{table, Conn};
use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Verb {
    /// Create or update resources from a YAML or JSON file (`-` for stdin). All or nothing.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// List resources of a kind (services, workloads, meshconfig), or show one.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// `table` or `json`.
        #[arg(short = 'o', long, default_value = "table")]
        output: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one resource in full, with the health of a workload's checks.
    Describe {
        kind: String,
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a resource.
    Delete {
        kind: String,
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Register a service instance (like `consul services register`).
    Register {
        /// Service name.
        #[arg(long)]
        name: String,
        /// Instance id (default: the name).
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        address: String,
        #[arg(long)]
        port: u16,
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Port of the instance's sidecar inbound listener (mTLS), on the same address.
        #[arg(long)]
        sidecar_port: Option<u16>,
        /// An HTTP check URL.
        #[arg(long)]
        http_check: Option<String>,
        /// A TCP check address (ip:port).
        #[arg(long)]
        tcp_check: Option<String>,
        /// A TTL check (the instance reports with `PUT /v1/agent/check/pass/...`).
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        interval: Option<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Deregister a service instance by id.
    Deregister {
        id: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Every connected proxy, with its config version and SYNCED or STALE.
    ProxyStatus {
        #[command(flatten)]
        conn: Conn,
    },
    /// Tokens for the API and for proxies.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Link clusters: `create` a credential on one, `apply` it on the other; `list`, `check`, `remove`, `revoke`.
    Link {
        #[command(subcommand)]
        cmd: crate::link::LinkCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// The mesh CA: root and intermediate, expiry, fingerprints; `rotate` its root.
    Ca {
        /// Print only the root certificate (PEM), e.g. for a proxy's `control.ca_file`.
        #[arg(long)]
        pem: bool,
        #[command(subcommand)]
        cmd: Option<CaCmd>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Is the control plane healthy, are certificates valid, are proxies in sync? One line per
    /// check; exits non-zero if any fails.
    Check {
        #[command(flatten)]
        conn: Conn,
    },
    /// Consul-style intention: `weft intention allow web api` lets Service `web` call Service
    /// `api` (an AuthorizationPolicy `web-to-api`); `deny` refuses it.
    Intention {
        /// `allow` or `deny`.
        action: String,
        source: String,
        destination: String,
        /// The destination's namespace (where the policy is written).
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The source's namespace (default: the destination's).
        #[arg(long)]
        source_namespace: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token (shown once; the control plane keeps only its SHA-256). With --identity: a
    /// bootstrap token for a proxy of that identity.
    Create {
        /// `<namespace>/<service-account>`: the identity a proxy with this token may have.
        #[arg(long)]
        identity: Option<String>,
        /// The role: admin, operator, read, writer (with --namespace) or bootstrap (default:
        /// bootstrap with --identity, writer with --namespace, else read).
        #[arg(long, alias = "role")]
        kind: Option<String>,
        /// A writer's namespace (repeat for several).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// A name for `weft token list` and the audit log (default: `<role>-<id>`).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 24h; default: no expiry.
        #[arg(long)]
        ttl: Option<String>,
        /// For a proxy of a remote cluster (primary-remote): its cluster, declared in MeshConfig
        /// `remoteClusters`. Default: this control plane's cluster.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Every token issued (name, id, role, expiry, revoked), never the tokens themselves.
    List,
    /// Revoke a token by its id or name: it is refused from the next call on.
    Revoke {
        /// The id or name `weft token list` shows.
        id: String,
    },
    /// The last writes to the API (who, what, the answer), from the audit log.
    Audit {
        /// How many entries (at most 1000; the file `<data-dir>/audit.log` keeps them all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

fn kind_path(kind: &str) -> anyhow::Result<&'static str> {
    weft_api::resource::Kind::parse_loose(kind).map(|k| k.as_str()).with_context(|| {
        format!(
            "unknown kind {kind:?}: use services, workloads, meshconfig, links, httproutes, grpcroutes, tcproutes, backendpolicies, resiliencepolicies or authorizationpolicies"
        )
    })
}

impl Verb {
    /// Where the control plane is and the token to call it with.
    fn conn(&self) -> &Conn {
        match self {
            Verb::Apply { conn, .. }
            | Verb::Get { conn, .. }
            | Verb::Describe { conn, .. }
            | Verb::Delete { conn, .. }
            | Verb::Register { conn, .. }
            | Verb::Deregister { conn, .. }
            | Verb::ProxyStatus { conn }
            | Verb::Token { conn, .. }
            | Verb::Link { conn, .. }
            | Verb::Ca { conn, .. }
            | Verb::Check { conn }
            | Verb::Intention { conn, .. } => conn,
        }
    }
}

pub async fn run(verb: Verb) -> anyhow::Result<()> {
    let conn = &verb.conn().clone();
    match verb {
        Verb::Apply { file, .. } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            let v = conn.call("POST", "/v1/apply", text).await?;
            for r in v["results"].as_array().into_iter().flatten() {
                outln!("{}", r.as_str().unwrap_or_default())?;
            }
        }
        Verb::Get { kind, name, namespace, all_namespaces, output, .. } => {
            let k = kind_path(&kind)?;
            let items: Vec<Value> = match &name {
                Some(n) => vec![conn.call("GET", &format!("/v1/resources/{k}/{namespace}/{n}"), String::new()).await?],
                None => {
                    let ns = if all_namespaces { String::new() } else { format!("&namespace={namespace}") };
                    let v = conn.call("GET", &format!("/v1/resources?kind={k}{ns}"), String::new()).await?;
                    v["items"].as_array().cloned().unwrap_or_default()
                }
            };
            if output == "json" {
                outln!("{}", serde_json::to_string_pretty(&items)?)?;
                return Ok(());
            }
            if items.is_empty() {
                outln!("No {k} resources found.")?;
                return Ok(());
            }
            let s = |v: &Value| {
                v.as_str().map(str::to_string).unwrap_or_else(|| if v.is_null() { "-".into() } else { v.to_string() })
            };
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|o| {
                    let m = &o["metadata"];
                    let spec = &o["spec"];
                    let detail = match k {
                        "Workload" => format!("{}  {}:{}", s(&spec["service"]), s(&spec["address"]), s(&spec["port"])),
                        "Service" => format!("ports {}  tags {}", spec["ports"], spec["tags"]),
                        "HTTPRoute" | "GRPCRoute" | "TCPRoute" => crate::routes_out::get_detail(o),
                        "BackendPolicy" => format!(
                            "target {}/{}  loadBalancer {}  {}",
                            s(&spec["targetRef"]["kind"]),
                            s(&spec["targetRef"]["name"]),
                            spec["loadBalancer"]["type"].as_str().unwrap_or("RoundRobin"),
                            o["status"]["conditions"][0]["type"].as_str().unwrap_or("-")
                        ),
                        "ResiliencePolicy" => policy_detail(o),
                        "AuthorizationPolicy" => format!(
                            "{}  target {}  rules {}",
                            spec["action"].as_str().unwrap_or("ALLOW"),
                            spec["targetRef"]["name"]
                                .as_str()
                                .map(|n| format!("{} {n}", s(&spec["targetRef"]["kind"])))
                                .unwrap_or_else(|| "namespace".into()),
                            spec["rules"].as_array().map_or(0, Vec::len)
                        ),
                        _ => {
                            format!("trust domain {}  cluster {}", s(&spec["trustDomain"]), s(&spec["cluster"]["name"]))
                        }
                    };
                    vec![s(&m["namespace"]), s(&m["name"]), s(&m["resourceVersion"]), detail]
                })
                .collect();
            table(&["NAMESPACE", "NAME", "VERSION", "DETAIL"], rows)?;
        }
        Verb::Describe { kind, name, namespace, .. } => {
            let k = kind_path(&kind)?;
            let v = conn.call("GET", &format!("/v1/resources/{k}/{namespace}/{name}"), String::new()).await?;
            outln!("{}", serde_json::to_string_pretty(&v)?)?;
            for line in crate::describe::policy_lines(k, &v) {
                outln!("{line}")?;
            }
            if matches!(k, "HTTPRoute" | "GRPCRoute" | "TCPRoute") {
                crate::routes_out::describe_route(k, &v)?;
            }
            if k == "ResiliencePolicy" {
                for line in crate::resilience_out::describe(&v) {
                    outln!("{line}")?;
                }
                // Which requests it covers: the effective routes of the Services involved.
                let t = &v["spec"]["targetRef"];
                let target = t["name"].as_str().unwrap_or("");
                let id = format!("{namespace}/{name}");
                let in_force = v["status"]["conditions"][0]["status"] == "True";
                if in_force && t["kind"] == "Service" {
                    let r =
                        conn.call("GET", &format!("/v1/services/{namespace}/{target}/routes"), String::new()).await?;
                    let lines = crate::resilience_out::coverage(&id, None, &[r]);
                    outln!(
                        "applies to: every call to Service {namespace}/{target}{}",
                        if lines.is_empty() { "" } else { ":" }
                    )?;
                    for line in lines {
                        outln!("{line}")?;
                    }
                } else if in_force
                    && (t["kind"] == "HTTPRoute" || t["kind"] == "GRPCRoute")
                    && t["sectionName"].is_null()
                {
                    let kind = t["kind"].as_str().unwrap_or("HTTPRoute");
                    let route = conn
                        .call(
                            "GET",
                            &format!("/v1/resources/{}/{namespace}/{target}", kind.to_ascii_lowercase()),
                            String::new(),
                        )
                        .await?;
                    let mut services = vec![];
                    for p in route["spec"]["parentRefs"].as_array().into_iter().flatten() {
                        let ns = p["namespace"].as_str().unwrap_or(namespace.as_str());
                        let svc = p["name"].as_str().unwrap_or("");
                        services
                            .push(conn.call("GET", &format!("/v1/services/{ns}/{svc}/routes"), String::new()).await?);
                    }
                    outln!("applies to, rule by rule:")?;
                    for line in
                        crate::resilience_out::coverage(&id, Some((kind, &format!("{namespace}/{target}"))), &services)
                    {
                        outln!("{line}")?;
                    }
                }
            }
            if k == "Service" {
                let r = conn.call("GET", &format!("/v1/services/{namespace}/{name}/routes"), String::new()).await?;
                crate::routes_out::describe_service(&r)?;
                let v = conn
                    .call("GET", &format!("/v1/resources?kind=ResiliencePolicy&namespace={namespace}"), String::new())
                    .await?;
                let attached: Vec<&Value> = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["spec"]["targetRef"]["kind"] == "Service" && p["spec"]["targetRef"]["name"] == *name)
                    .collect();
                outln!(
                    "resilience policies on this Service:{}",
                    if attached.is_empty() {
                        " none (a route rule's own policy is in its RESILIENCE column)"
                    } else {
                        ""
                    }
                )?;
                for p in attached {
                    outln!("  {}", policy_detail(p))?;
                    if p["status"]["conditions"][0]["status"] == "True" {
                        for line in policy_steps(&p["spec"]) {
                            outln!("    {line}")?;
                        }
                    }
                }
            }
            if k == "Workload" {
                let h = conn.call("GET", &format!("/v1/health/workload/{namespace}/{name}"), String::new()).await?;
                outln!("health: {}", h["status"].as_str().unwrap_or("no checks"))?;
                for c in h["checks"].as_array().into_iter().flatten() {
                    outln!(
                        "  {:<20} {:<9} {}",
                        c["name"].as_str().unwrap_or(""),
                        c["status"].as_str().unwrap_or(""),
                        c["output"].as_str().unwrap_or("")
                    )?;
                }
            }
        }
        Verb::Intention { action, source, destination, namespace, source_namespace, .. } => {
            let src_ns = source_namespace.as_deref().unwrap_or(&namespace);
            let doc = crate::intention::policy(&action, &source, &destination, &namespace, src_ns)?;
            let v = conn.call("POST", "/v1/apply", doc).await?;
            for r in v["results"].as_array().into_iter().flatten() {
                outln!("{}", r.as_str().unwrap_or_default())?;
            }
        }
        Verb::Delete { kind, name, namespace, .. } => {
            let k = kind_path(&kind)?;
            let v = conn.call("DELETE", &format!("/v1/resources/{k}/{namespace}/{name}"), String::new()).await?;
            for r in v["results"].as_array().into_iter().flatten() {
                outln!("{}", r.as_str().unwrap_or_default())?;
            }
        }
        Verb::Register {
            name,
            id,
            address,
            port,
            tags,
            sidecar_port,
            http_check,
            tcp_check,
            ttl,
            interval,
            namespace,
            ..
        } => {
            let mut checks = vec![];
            if let Some(u) = http_check {
                checks.push(json!({ "Name": "http", "HTTP": u, "Interval": interval }));
            }
            if let Some(t) = tcp_check {
                checks.push(json!({ "Name": "tcp", "TCP": t, "Interval": interval }));
            }
            if let Some(t) = ttl {
                checks.push(json!({ "Name": "ttl", "TTL": t }));
            }
            let mut reg = json!({ "ID": id, "Name": name, "Address": address, "Port": port, "Tags": tags, "Namespace": namespace, "Checks": checks });
            if let Some(p) = sidecar_port {
                reg["Connect"] = json!({ "SidecarService": { "Port": p } });
            }
            let v = conn.call("PUT", "/v1/agent/service/register", reg.to_string()).await?;
            for r in v["results"].as_array().into_iter().flatten() {
                outln!("{}", r.as_str().unwrap_or_default())?;
            }
        }
        Verb::Deregister { id, namespace, .. } => {
            let v =
                conn.call("PUT", &format!("/v1/agent/service/deregister/{id}?ns={namespace}"), String::new()).await?;
            for r in v["results"].as_array().into_iter().flatten() {
                outln!("{}", r.as_str().unwrap_or_default())?;
            }
        }
        Verb::ProxyStatus { .. } => {
            let v = conn.call("GET", "/v1/proxies", String::new()).await?;
            let rows: Vec<Vec<String>> = v["proxies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        p["proxy_id"].as_str().unwrap_or("").into(),
                        p["identity"].as_str().unwrap_or("").into(),
                        format!("{}/{}", p["acked"], p["sent"]),
                        p["status"].as_str().unwrap_or("").into(),
                        // Where discovery placed it (primary-remote), and its mode.
                        p["cluster"].as_str().unwrap_or("").into(),
                        p["mode"].as_str().unwrap_or("").into(),
                        // The root the proxy's certificate chains to (root rotation), shortened.
                        p["leaf_root"].as_str().unwrap_or("").chars().take(16).collect(),
                        p["error"].as_str().unwrap_or("").into(),
                    ]
                })
                .collect();
            if rows.is_empty() {
                outln!("No proxies connected.")?;
            } else {
                table(&["PROXY", "IDENTITY", "ACKED/SENT", "STATUS", "CLUSTER", "MODE", "CERT ROOT", "ERROR"], rows)?;
            }
        }
        Verb::Link { cmd, .. } => crate::link::run(cmd, conn).await?,
        Verb::Token { cmd: TokenCmd::Create { identity, kind, namespaces, name, ttl, cluster }, .. } => {
            let kind = kind.unwrap_or_else(|| match (&identity, namespaces.is_empty()) {
                (Some(_), _) => "bootstrap".into(),
                (None, false) => "writer".into(),
                (None, true) => "read".into(),
            });
            let mut req = json!({ "kind": kind, "identity": identity, "ttl": ttl });
            for (k, v) in [("cluster", cluster.map(|c| json!(c))), ("name", name.map(|n| json!(n)))] {
                if let Some(v) = v {
                    req[k] = v;
                }
            }
            if !namespaces.is_empty() {
                req["namespaces"] = json!(namespaces);
            }
            let v = conn.call("POST", "/v1/tokens", req.to_string()).await?;
            outln!("{}", v["token"].as_str().unwrap_or_default())?;
        }
        Verb::Token { cmd: TokenCmd::List, .. } => {
            let v = conn.call("GET", "/v1/tokens", String::new()).await?;
            let secs = |v: &Value| v.as_u64().map(|s| s.to_string()).unwrap_or_else(|| "-".into());
            let rows = v["tokens"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    let scope = t["identity"].as_str().map(str::to_string).unwrap_or_else(|| {
                        let ns: Vec<&str> =
                            t["namespaces"].as_array().into_iter().flatten().filter_map(|n| n.as_str()).collect();
                        ns.join(",")
                    });
                    vec![
                        t["name"].as_str().unwrap_or_default().to_string(),
                        t["id"].as_str().unwrap_or_default().to_string(),
                        t["role"].as_str().unwrap_or_default().to_string(),
                        if scope.is_empty() { "-".into() } else { scope },
                        secs(&t["created"]),
                        secs(&t["expires"]),
                        secs(&t["revoked"]),
                    ]
                })
                .collect();
            table(&["NAME", "ID", "ROLE", "SCOPE", "CREATED", "EXPIRES", "REVOKED"], rows)?;
        }
        Verb::Token { cmd: TokenCmd::Revoke { id }, .. } => {
            let v = conn.call("DELETE", &format!("/v1/tokens/{id}"), String::new()).await?;
            outln!(
                "token {} ({}) revoked",
                v["revoked"]["name"].as_str().unwrap_or(&id),
                v["revoked"]["id"].as_str().unwrap_or_default()
            )?;
        }
        Verb::Token { cmd: TokenCmd::Audit { limit }, .. } => {
            let v = conn.call("GET", &format!("/v1/audit?limit={limit}"), String::new()).await?;
            let rows = v["entries"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    vec![
                        e["timeMs"].as_u64().unwrap_or_default().to_string(),
                        e["token"].as_str().unwrap_or_default().to_string(),
                        e["role"].as_str().unwrap_or("-").to_string(),
                        format!(
                            "{} {}",
                            e["method"].as_str().unwrap_or_default(),
                            e["path"].as_str().unwrap_or_default()
                        ),
                        e["status"].as_u64().unwrap_or_default().to_string(),
                        e["detail"].as_str().unwrap_or_default().to_string(),
                    ]
                })
                .collect();
            table(&["TIME (UNIX MS)", "TOKEN", "ROLE", "REQUEST", "STATUS", "DETAIL"], rows)?;
        }
        Verb::Ca { cmd: Some(CaCmd::Rotate { overlap, status, abort, wait }), .. } => {
            ca_rotate(conn, overlap.as_deref(), status, abort, wait).await?
        }
        Verb::Ca { pem: true, .. } => {
            let v = conn.call("GET", "/v1/ca", String::new()).await?;
            out!("{}", v["root_pem"].as_str().unwrap_or_default())?;
        }
        Verb::Ca { pem: false, .. } => {
            let v = conn.call("GET", "/v1/ca", String::new()).await?;
            outln!("trust domain  {}", v["trust_domain"].as_str().unwrap_or(""))?;
            for which in ["root", "intermediate"] {
                let c = &v[which];
                outln!("{which:<13} {}", c["subject"].as_str().unwrap_or(""))?;
                outln!("{:<13} expires {}", "", c["not_after"].as_str().unwrap_or(""))?;
                outln!("{:<13} sha256 {}", "", c["sha256_fingerprint"].as_str().unwrap_or(""))?;
            }
            let roots = v["roots"].as_array().map(Vec::len).unwrap_or(1);
            outln!("{:<13} {roots}", "trusted roots")?;
            outln!("rotation      {}", rotation_line(&v["rotation"]))?;
        }
        Verb::Check { .. } => check(conn).await?,
    }
    Ok(())
}

/// `weft ca rotate`'s subcommand.
#[derive(clap::Subcommand, Debug)]
pub enum CaCmd {
    /// Rotate the root: a new root and intermediate, trusted everywhere (own proxies and linked
    /// clusters) before anything is signed with them; the old root is dropped after the overlap,
    /// once no proxy uses a certificate of it. Phases: trust-both, sign-new, done.
    Rotate {
        /// How long both roots stay trusted after signing switches to the new root (e.g. 24h,
        /// 30m); default: the mesh's leaf lifetime, after which every old certificate has expired.
        #[arg(long)]
        overlap: Option<String>,
        /// Show the rotation in progress (phase, roots) and start nothing.
        #[arg(long, conflicts_with_all = ["abort", "overlap"])]
        status: bool,
        /// Abort the rotation in progress (only in phase trust-both: nothing is signed by the new
        /// root yet).
        #[arg(long, conflicts_with = "overlap")]
        abort: bool,
        /// Follow the rotation, one line per phase, until it is done.
        #[arg(long, conflicts_with = "abort")]
        wait: bool,
    },
}

/// One line for a ResiliencePolicy: name, target, sections, and its `Accepted` condition.
fn policy_detail(o: &Value) -> String {
    let spec = &o["spec"];
    let t = &spec["targetRef"];
    let section = t["sectionName"].as_str().map(|s| format!("#{s}")).unwrap_or_default();
    let sections: Vec<&str> =
        ["retry", "timeouts", "faults", "rateLimit"].into_iter().filter(|s| !spec[*s].is_null()).collect();
    let c = &o["status"]["conditions"][0];
    format!(
        "{} -> {} {}{}  [{}]  {} ({})",
        o["metadata"]["name"].as_str().unwrap_or(""),
        t["kind"].as_str().unwrap_or(""),
        t["name"].as_str().unwrap_or(""),
        section,
        sections.join(","),
        c["reason"].as_str().unwrap_or("-"),
        c["message"].as_str().unwrap_or("")
    )
}

/// A policy's sections in the order a request meets them.
fn policy_steps(spec: &Value) -> Vec<String> {
    let mut out = vec![];
    let mut n = 0;
    let mut step = |what: String| {
        n += 1;
        out.push(format!("{n}. {what}"));
    };
    if !spec["rateLimit"].is_null() {
        step(format!("rate limit at this service's proxies: {}", spec["rateLimit"]));
    }
    if !spec["faults"].is_null() {
        step(format!("faults at callers: {}", spec["faults"]));
    }
    let t = &spec["timeouts"];
    if !t["request"].is_null() {
        step(format!("request timeout {}", t["request"]));
    }
    let per_try: Vec<String> =
        ["perTry", "connect"].into_iter().filter(|k| !t[*k].is_null()).map(|k| format!("{k} {}", t[k])).collect();
    step(format!("try{}", if per_try.is_empty() { String::new() } else { format!(" ({})", per_try.join(", ")) }));
    if !spec["retry"].is_null() {
        step(format!("retry: {}", spec["retry"]));
    }
    if !t["idle"].is_null() {
        step(format!("response body idle timeout {}", t["idle"]));
    }
    out
}

fn rotation_line(r: &serde_json::Value) -> String {
    if r.is_null() {
        return "none in progress".into();
    }
    let short = |k: &str| r[k].as_str().unwrap_or("").chars().take(16).collect::<String>();
    let waiting = r["waiting_for"].as_str().filter(|w| !w.is_empty());
    format!(
        "phase {} (old root {}…, new root {}…, overlap {}s){}",
        r["phase"].as_str().unwrap_or("?"),
        short("old_root_sha256"),
        short("new_root_sha256"),
        r["overlap_seconds"],
        waiting.map(|w| format!("; waiting for {w}")).unwrap_or_default()
    )
}

async fn ca_rotate(conn: &Conn, overlap: Option<&str>, status: bool, abort: bool, wait: bool) -> anyhow::Result<()> {
    if abort {
        conn.call("DELETE", "/v1/ca/rotate", String::new()).await?;
        outln!("rotation aborted: the new root leaves every bundle")?;
        return Ok(());
    }
    if !status {
        if let Some(o) = overlap {
            o.parse::<weft_api::Duration>()
                .map_err(|e| anyhow::anyhow!("--overlap {o:?}: {e} (e.g. 24h, 30m, 90s)"))?;
        }
        let body = match overlap {
            Some(o) => json!({ "overlap": o }).to_string(),
            None => String::new(),
        };
        let v = conn.call("POST", "/v1/ca/rotate", body).await?;
        outln!("rotation started: {}", rotation_line(&v["rotation"]))?;
    }
    let mut last = String::new();
    loop {
        let v = conn.call("GET", "/v1/ca", String::new()).await?;
        let line = rotation_line(&v["rotation"]);
        if line != last {
            outln!("{line}")?;
            last = line;
        }
        if !wait || v["rotation"].is_null() {
            if wait {
                outln!("done: only the new root is trusted")?;
            }
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// `linkerd check`-style: one line per item, non-zero exit if any failed.
/// `weft check` warns when a root or intermediate expires within this.
const CA_EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// MeshConfig's default `leafLifetime`, when the MeshConfig cannot be read.
const LEAF_LIFETIME_FALLBACK: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Every CA certificate `GET /v1/ca` lists, deduplicated: (what, detail, seconds left).
/// The roots trusted now (several during a rotation), the signing intermediate, and an external
/// CA's roots and intermediates.
fn ca_expiries(v: &Value) -> Vec<(String, String, i64)> {
    let mut out: Vec<(String, String, i64)> = vec![];
    let mut seen = std::collections::HashSet::new();
    let mut add = |what: String, c: &Value| {
        let fp = c["sha256_fingerprint"].as_str().unwrap_or("").to_string();
        if c.is_null() || !seen.insert(fp.clone()) {
            return;
        }
        let short: String = fp.chars().take(11).collect();
        let not_after = c["not_after"].as_str().unwrap_or("").to_string();
        let left = c["expires_in_seconds"].as_i64().unwrap_or(0);
        out.push((what, format!("expires {not_after} (sha256 {short}...)"), left));
    };
    add("root CA certificate".into(), &v["root"]);
    for r in v["roots"].as_array().into_iter().flatten() {
        add("root CA certificate".into(), r);
    }
    add("intermediate CA certificate".into(), &v["intermediate"]);
    let ext = &v["external"];
    let kind = ext["kind"].as_str().unwrap_or("external");
    for r in ext["roots"].as_array().into_iter().flatten() {
        add(format!("{kind} root CA certificate"), r);
    }
    for r in ext["intermediates"].as_array().into_iter().flatten() {
        add(format!("{kind} intermediate CA certificate"), r);
    }
    out
}

/// Proxies whose certificate has less than a quarter of `lifetime` left (or has expired): they
/// renew at half-life, so their renewal is failing. Proxies that did not say are left out.
fn expiring_leaves(proxies: &[Value], lifetime: std::time::Duration, now: u64) -> Vec<String> {
    proxies
        .iter()
        .filter_map(|p| {
            let not_after = p["leaf_not_after_unix"].as_u64().filter(|t| *t > 0)?;
            let left = not_after.saturating_sub(now);
            (left < lifetime.as_secs() / 4)
                .then(|| format!("{} ({}s left)", p["proxy_id"].as_str().unwrap_or("?"), left))
        })
        .collect()
}

async fn check(conn: &Conn) -> anyhow::Result<()> {
    let mut failed = 0;
    // The first error writing to stdout (a closed pipe), returned once every check has run.
    let mut write_error = None;
    let mut report = |ok: bool, what: &str, detail: String| {
        let written = outln!(
            "{} {what}{}",
            if ok { "√" } else { "×" },
            if detail.is_empty() { String::new() } else { format!(": {detail}") }
        );
        if let Err(e) = written {
            write_error.get_or_insert(e);
        }
        if !ok {
            failed += 1;
        }
    };
    let mesh_leaf_lifetime = match conn.call("GET", "/v1/resources?kind=MeshConfig", String::new()).await {
        Ok(v) => {
            report(true, "control plane API reachable and token accepted", format!("store revision {}", v["revision"]));
            v["items"][0]["spec"]["leafLifetime"]
                .as_str()
                .and_then(|d| d.parse::<weft_api::Duration>().ok())
                .map(std::time::Duration::from)
        }
        Err(e) => {
            report(false, "control plane API reachable and token accepted", e.to_string());
            bail!("1 check failed");
        }
    };
    match conn.call("GET", "/v1/ca", String::new()).await {
        Ok(v) => {
            for (what, detail, left) in ca_expiries(&v) {
                // Expired, or under 30 days left: time to rotate (or renew) the CA.
                report(
                    left > CA_EXPIRY_WARNING.as_secs() as i64,
                    &format!("{what} is valid for more than 30 days"),
                    detail,
                );
            }
        }
        Err(e) => report(false, "CA readable", e.to_string()),
    }
    match conn.call("GET", "/v1/proxies", String::new()).await {
        Ok(v) => {
            let list = v["proxies"].as_array().cloned().unwrap_or_default();
            let stale: Vec<String> = list
                .iter()
                .filter(|p| p["status"] != "SYNCED")
                .map(|p| p["proxy_id"].as_str().unwrap_or("?").to_string())
                .collect();
            let leaf_lifetime = mesh_leaf_lifetime.unwrap_or(LEAF_LIFETIME_FALLBACK);
            let expiring = expiring_leaves(&list, leaf_lifetime, unix_now());
            report(
                expiring.is_empty(),
                "proxies' certificates are renewed in time",
                if expiring.is_empty() {
                    format!("none has less than a quarter of its {}s lifetime left", leaf_lifetime.as_secs())
                } else {
                    format!("RENEWAL FAILING: {}", expiring.join(", "))
                },
            );
            report(
                stale.is_empty(),
                "proxies are in sync",
                if stale.is_empty() {
                    format!("{} connected", list.len())
                } else {
                    format!("STALE: {}", stale.join(", "))
                },
            );
        }
        Err(e) => report(false, "proxies are in sync", e.to_string()),
    }
    match conn.call("GET", "/v1/catalog", String::new()).await {
        Ok(v) => {
            let mut unhealthy = vec![];
            for s in v["services"].as_array().into_iter().flatten() {
                for i in s["instances"].as_array().into_iter().flatten() {
                    if i["healthy"] != true {
                        unhealthy.push(format!(
                            "{}/{}",
                            s["name"].as_str().unwrap_or(""),
                            i["name"].as_str().unwrap_or("")
                        ));
                    }
                }
            }
            report(unhealthy.is_empty(), "all registered instances are healthy", unhealthy.join(", "));
        }
        Err(e) => report(false, "catalog readable", e.to_string()),
    }
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_warns_about_every_ca_certificate_and_leaves_whose_renewal_fails() {
        let cert =
            |fp: &str, left: i64| json!({ "sha256_fingerprint": fp, "not_after": "t", "expires_in_seconds": left });
        let v = json!({
            "root": cert("AA:01", 9_000_000),
            "roots": [cert("AA:01", 9_000_000), cert("BB:02", 100)],
            "intermediate": cert("CC:03", 9_000_000),
            "external": { "kind": "awsPca", "roots": [cert("DD:04", 50)], "intermediates": [] },
        });
        let got = ca_expiries(&v);
        assert_eq!(got.len(), 4, "{got:?}");
        let short: Vec<(&str, &str)> =
            got.iter().filter(|(_, _, l)| *l < 30 * 86400).map(|(w, d, _)| (w.as_str(), d.as_str())).collect();
        assert_eq!(
            short,
            [
                ("root CA certificate", "expires t (sha256 BB:02...)"),
                ("awsPca root CA certificate", "expires t (sha256 DD:04...)")
            ]
        );

        let day = std::time::Duration::from_secs(86400);
        let proxies = [
            json!({ "proxy_id": "fresh", "leaf_not_after_unix": 1000 + 86400 }),
            json!({ "proxy_id": "stuck", "leaf_not_after_unix": 1000 + 3600 }),
            json!({ "proxy_id": "expired", "leaf_not_after_unix": 10 }),
            json!({ "proxy_id": "old-proxy", "leaf_not_after_unix": 0 }),
        ];
        assert_eq!(expiring_leaves(&proxies, day, 1000), ["stuck (3600s left)", "expired (0s left)"]);
    }
}
