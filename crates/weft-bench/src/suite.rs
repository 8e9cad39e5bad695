//! `weft-bench suite`: sets up the four setups on 127.0.0.1 in a scratch directory, runs every
//! scenario with the same load generator, samples the proxies' memory and CPU, and writes the
//! results as Markdown (bench/RESULTS.md).
//!
//! ```text
//! direct:   generator ─────────────────────────────────────────────────────► demo app
//! relay:    generator ─► haproxy mode tcp    ──plain TCP──► haproxy mode tcp  ─► demo app
//! weft:     generator ─► weft-proxy (client) ══mTLS h2══► weft-proxy (server) ─► demo app
//! haproxy:    generator ─► haproxy (client)  ══mTLS h2══► haproxy (server)  ─► demo app
//! haproxy-h1: generator ─► haproxy (client)  ══mTLS h1══► haproxy (server)  ─► demo app
//! nginx:      generator ─► nginx (client)    ══mTLS h1══► nginx (server)    ─► demo app
//! ```
//! HAProxy runs twice: with an HTTP/2 hop (multiplexed, as weft's; its fastest configuration
//! here) and with an HTTP/1.1 hop (pooled keep-alive connections; what HAProxy does unless told
//! otherwise, and what nginx can do at all), so a run compares weft with both.
//! The relay pair is a reference, not a competitor: two proxies that only copy bytes (no TLS, no
//! HTTP), so what two proxy processes on the path cost in system calls and loopback traffic alone
//! shows in the same run. It has one hop connection per client connection: the mesh pairs, which
//! multiplex the hop, can share hop writes between requests that it cannot.
//! Every process started here is stopped (SIGTERM, then SIGKILL) when the suite ends, also when
//! it fails or is killed (the children get SIGTERM as their parent-death signal).

use crate::load::{self, Proto, Report, Spec};
use crate::pool::{self, PoolUse};
use crate::procstat;
use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The thing under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Setup {
    Direct,
    Relay,
    Weft,
    Haproxy,
    HaproxyH1,
    Nginx,
}

impl Setup {
    pub fn label(self) -> &'static str {
        match self {
            Setup::Direct => "direct (no proxy)",
            Setup::Relay => "TCP relay pair (reference)",
            Setup::Weft => "weft pair",
            Setup::Haproxy => "HAProxy pair (HTTP/2 hop)",
            Setup::HaproxyH1 => "HAProxy pair (HTTP/1.1 hop)",
            Setup::Nginx => "nginx pair",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::Relay => "relay",
            Setup::Weft => "weft",
            Setup::Haproxy => "haproxy",
            Setup::HaproxyH1 => "haproxy-h1",
            Setup::Nginx => "nginx",
        }
    }
    /// The config templates' name: `<kind>-client.*` and `<kind>-server.*` in `--conf-dir`.
    fn template_kind(self) -> &'static str {
        match self {
            Setup::HaproxyH1 => "haproxy",
            s => s.short(),
        }
    }
    /// ALPN of the HAProxy pair's mTLS hop (`{{HOP_ALPN}}` in its templates).
    fn hop_alpn(self) -> &'static str {
        match self {
            Setup::HaproxyH1 => "http/1.1",
            _ => "h2",
        }
    }
    /// The HAProxy pair's hop, as the targets table names it.
    pub fn hop_label(self) -> &'static str {
        match self.hop_alpn() {
            "h2" => "HTTP/2 hop",
            _ => "HTTP/1.1 hop",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Open loop at `--rate`.
    Fixed,
    /// Closed loop.
    Peak,
}

#[derive(clap::Args, Clone, Debug)]
pub struct SuiteArgs {
    /// Where the release binaries `weft` and `weft-proxy` are.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// The HAProxy / nginx / weft config templates.
    #[arg(long, default_value = "bench/conf")]
    pub conf_dir: PathBuf,
    /// Scratch directory (certificates, rendered configs, logs); default: a new one under /tmp,
    /// removed at the end.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Write the Markdown report here (a block between `<!-- notes -->` and `<!-- /notes -->`
    /// in an existing file is kept).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write every measurement as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Setups to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "direct,relay,weft,haproxy,haproxy-h1,nginx")]
    pub setups: Vec<Setup>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "h1,h2")]
    pub protos: Vec<Proto>,
    /// Open-loop rate of the fixed-rate points.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Requests in flight (HTTP/1.1: connections; HTTP/2: streams).
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 10)]
    pub h2_connections: usize,
    #[arg(long, value_parser = crate::duration, default_value = "10s")]
    pub duration: Duration,
    #[arg(long, value_parser = crate::duration, default_value = "2s")]
    pub warmup: Duration,
    /// Load-generator threads (default: the number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Threads / worker processes of each proxy (default: the number of CPUs, which is what
    /// HAProxy, nginx `auto` and weft's runtime pick by themselves).
    #[arg(long)]
    pub proxy_threads: Option<usize>,
    /// Also measure each setup's peak with wrk (HTTP/1.1) and h2load (HTTP/2).
    #[arg(long)]
    pub cross_check: bool,
    /// Before each point, wait until other processes use less than this many CPUs...
    #[arg(long, default_value_t = 0.15)]
    pub quiet_cores: f64,
    /// ...but no longer than this (the point then runs anyway, and the report shows the load).
    #[arg(long, value_parser = crate::duration, default_value = "120s")]
    pub quiet_wait: Duration,
    /// Rounds of every point (all fixed-rate rounds first, then all peak rounds; setups
    /// interleaved within a round). The report shows the median of the rounds.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Measure a point again (up to this many times) when other processes used more than 10 %
    /// of a CPU while it ran.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// The command line to record in the report.
    #[arg(long, default_value = "bench/run.sh")]
    pub command: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Usage {
    pub role: String,
    pub pids: Vec<u32>,
    pub rss_max_kb: u64,
    pub rss_mean_kb: u64,
    /// Largest RssAnon sample (heap and stacks, without file-backed pages).
    pub anon_max_kb: u64,
    pub cpu_ms: f64,
    /// The system (kernel) part of `cpu_ms`: system calls, the TCP stack, wake-ups.
    pub sys_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub setup: Setup,
    pub proto: Proto,
    pub mode: Mode,
    /// `None` when the setup cannot serve this protocol; `skipped` says why.
    pub report: Option<Report>,
    pub usage: Vec<Usage>,
    pub skipped: Option<String>,
    /// The equivalent stand-alone generator command.
    pub command: String,
    /// CPU time in the measured window of the app, of the load generator (this process), and of
    /// everything else on the machine (other users of the cores: it should be near zero).
    pub app_cpu_ms: f64,
    pub generator_cpu_ms: f64,
    pub other_cpu_ms: f64,
    /// How long the point waited for the machine to be quiet before starting.
    pub waited_s: f64,
    /// 1, or more when earlier attempts were disturbed by other processes (see `--retries`).
    pub attempts: u32,
    /// 1..=`--repeat`.
    pub round: u32,
    /// weft only: the client sidecar's peer-connection pool over the measured window.
    pub pool: Option<PoolUse>,
}

impl Point {
    /// CPU milliseconds of all the setup's proxies per 1,000 successful requests.
    pub fn cpu_per_1k(&self) -> Option<f64> {
        self.proxies_per_1k(|u| u.cpu_ms)
    }

    /// The kernel part of [`Point::cpu_per_1k`].
    pub fn sys_per_1k(&self) -> Option<f64> {
        self.proxies_per_1k(|u| u.sys_ms)
    }

    fn proxies_per_1k(&self, ms: impl Fn(&Usage) -> f64) -> Option<f64> {
        if self.usage.is_empty() {
            return None;
        }
        self.per_1k(self.usage.iter().map(ms).sum())
    }

    /// `ms` of CPU spent over this point's window, per 1,000 successful requests.
    pub fn per_1k(&self, ms: f64) -> Option<f64> {
        let r = self.report.as_ref().filter(|r| r.requests > 0)?;
        Some(ms * 1000.0 / r.requests as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process that is stopped when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `cmd` with stdout piped (lines come out of the returned channel) and stderr to `log`.
/// The child gets SIGTERM if this process dies.
fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<(Proc, mpsc::Receiver<String>)> {
    let err = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(err));
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("cannot start {name} ({cmd:?})"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more: keep draining so the child never blocks on stdout.
                continue;
            }
        }
    });
    Ok((Proc { name: name.to_string(), child }, rx))
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Reads `key <addr>` lines until `until` (e.g. `ready`); returns the addresses by key.
fn read_addrs(
    p: &mut Proc,
    rx: &mpsc::Receiver<String>,
    until: &str,
    log: &Path,
) -> anyhow::Result<BTreeMap<String, SocketAddr>> {
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let mut parts = line.split_whitespace();
                let (Some(k), v) = (parts.next(), parts.next()) else {
                    continue;
                };
                if let Some(addr) = v.and_then(|v| v.parse().ok()) {
                    out.insert(k.to_string(), addr);
                }
                if k == until {
                    return Ok(out);
                }
            }
            Err(_) => {
                let status = p.child.try_wait().ok().flatten();
                bail!(
                    "{} did not print `{until}` (exit status {status:?}); its log {}:\n{}",
                    p.name,
                    log.display(),
                    log_tail(log)
                );
            }
        }
    }
}

/// Waits until something accepts TCP connections on `addr`.
fn wait_listening(p: &mut Proc, addr: SocketAddr, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!("{} exited ({status}); its log {}:\n{}", p.name, log.display(), log_tail(log));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{} is not listening on {addr} after 20 s", p.name)
}

/// `n` distinct free ports on 127.0.0.1 (bound together, then released).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let ls: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(ls.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

fn run_ok(what: &str, cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("{what}: cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn render(template: &str, vars: &BTreeMap<&str, String>) -> anyhow::Result<String> {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    if let Some(i) = s.find("{{") {
        let rest: String = s[i..].chars().take(30).collect();
        bail!("template has an unfilled placeholder at {rest:?}");
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// The setups

/// One started setup: where the generator sends each protocol, and the proxies to measure.
struct Started {
    setup: Setup,
    /// Per protocol: the address, or why the setup cannot serve it.
    addrs: BTreeMap<Proto, Result<SocketAddr, String>>,
    /// (role, root pid): nginx's workers are found under the master at measurement time.
    proxies: Vec<(String, u32)>,
    /// weft only: the client sidecar's admin address, for its pool counters.
    admin: Option<SocketAddr>,
}

/// SNI the client side sends on the mTLS hop (weft's naming: `<port>.<svc>.<ns>.<cluster>.weft`).
fn sni(app_port: u16) -> String {
    format!("{app_port}.api.default.local.weft")
}

struct Env {
    args: SuiteArgs,
    work: PathBuf,
    tls: PathBuf,
    app: SocketAddr,
    threads: usize,
    procs: Vec<Proc>,
    app_pid: u32,
}

impl Env {
    fn bin(&self, name: &str) -> PathBuf {
        self.args.bin_dir.join(name)
    }

    fn template(&self, name: &str) -> anyhow::Result<String> {
        let p = self.args.conf_dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("cannot read template {}", p.display()))
    }

    fn vars(&self, setup: Setup, hop: u16, h1: u16, h2: u16) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("TLS", self.tls.display().to_string()),
            ("RUN", self.work.display().to_string()),
            ("APP_PORT", self.app.port().to_string()),
            ("HOP_PORT", hop.to_string()),
            ("H1_PORT", h1.to_string()),
            ("H2_PORT", h2.to_string()),
            ("SNI", sni(self.app.port())),
            ("THREADS", self.threads.to_string()),
            ("HOP_ALPN", setup.hop_alpn().to_string()),
        ])
    }

    fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let p = self.work.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    }

    fn start_weft(&mut self) -> anyhow::Result<Started> {
        let server_cfg = render(&self.template("weft-server.yaml")?, &self.vars(Setup::Weft, 0, 0, 0))?;
        let server_cfg = self.write("weft-server.yaml", &server_cfg)?;
        let log = self.work.join("weft-server.log");
        let mut cmd = Command::new(self.bin("weft-proxy"));
        cmd.arg("run").arg("--config").arg(&server_cfg);
        let (mut server, rx) = spawn("weft-proxy (server)", cmd, &log)?;
        let addrs = read_addrs(&mut server, &rx, "ready", &log)?;
        let hop = addrs.get("inbound").ok_or_else(|| anyhow!("server sidecar printed no inbound address"))?.port();
        let server_pid = server.pid();
        self.procs.push(server);

        let client_cfg = render(&self.template("weft-client.yaml")?, &self.vars(Setup::Weft, hop, 0, 0))?;
        let client_cfg = self.write("weft-client.yaml", &client_cfg)?;
        let log = self.work.join("weft-client.log");
        let mut cmd = Command::new(self.bin("weft-proxy"));
        cmd.arg("run").arg("--config").arg(&client_cfg);
        let (mut client, rx) = spawn("weft-proxy (client)", cmd, &log)?;
        let addrs = read_addrs(&mut client, &rx, "ready", &log)?;
        let up = *addrs.get("upstream").ok_or_else(|| anyhow!("client sidecar printed no upstream address"))?;
        let admin = addrs.get("admin").copied();
        let client_pid = client.pid();
        self.procs.push(client);
        Ok(Started {
            setup: Setup::Weft,
            // One listener; HTTP/1.1 and h2c are detected per connection.
            addrs: BTreeMap::from([(Proto::H1, Ok(up)), (Proto::H2, Ok(up))]),
            proxies: vec![("client".into(), client_pid), ("server".into(), server_pid)],
            admin,
        })
    }

    /// Starts a server-side then a client-side proxy from templates `<kind>-server.*` and
    /// `<kind>-client.*` and waits for their ports.
    fn start_pair(
        &mut self,
        setup: Setup,
        ext: &str,
        command: impl Fn(&Path, &Path) -> Command,
    ) -> anyhow::Result<Started> {
        let (kind, template) = (setup.short(), setup.template_kind());
        let ports = free_ports(3)?;
        let (hop, h1, h2) = (ports[0], ports[1], ports[2]);
        let vars = self.vars(setup, hop, h1, h2);
        let mut pids = vec![];
        for (role, wait_port) in [("server", hop), ("client", h1)] {
            for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                std::fs::create_dir_all(self.work.join(format!("{kind}-{role}-tmp")).join(d))?;
            }
            let text = render(&self.template(&format!("{template}-{role}.{ext}"))?, &vars)?;
            let cfg = self.write(&format!("{kind}-{role}.{ext}"), &text)?;
            let log = self.work.join(format!("{kind}-{role}.log"));
            let (mut p, _rx) = spawn(&format!("{kind} ({role})"), command(&cfg, &log), &log)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], wait_port));
            let ready = wait_listening(&mut p, addr, &log);
            pids.push((role.to_string(), p.pid()));
            self.procs.push(p);
            ready?;
        }
        pids.reverse();
        let at = |port: u16| Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        Ok(Started {
            setup,
            addrs: BTreeMap::from([(Proto::H1, at(h1)), (Proto::H2, at(h2))]),
            proxies: pids,
            admin: None,
        })
    }

    /// HAProxy pairs: the mTLS HTTP pair (HTTP/2 or HTTP/1.1 hop), or the TCP relay
    /// (`relay-*.cfg`, `mode tcp`).
    fn start_haproxy(&mut self, setup: Setup) -> anyhow::Result<Started> {
        self.start_pair(setup, "cfg", |cfg, _log| {
            let mut c = Command::new("haproxy");
            // -db: foreground, no master process: one process (with its threads) to measure.
            c.arg("-db").arg("-f").arg(cfg);
            c
        })
    }

    fn start_nginx(&mut self) -> anyhow::Result<Started> {
        let work = self.work.clone();
        self.start_pair(Setup::Nginx, "conf", move |cfg, log| {
            let mut c = Command::new("nginx");
            c.arg("-p").arg(&work).arg("-e").arg(log).arg("-c").arg(cfg);
            c
        })
    }

    /// A CA, the client's (`web`) and server's (`api`) workload certificates from `weft tls`, and
    /// for the HAProxy and nginx servers a certificate from the same CA that adds a DNS SAN
    /// (they verify a server by DNS name; weft's certificates carry only the SPIFFE URI SAN).
    fn make_pki(&self) -> anyhow::Result<()> {
        let ca = self.tls.join("ca");
        let weft = self.bin("weft");
        run_ok("weft tls ca-create", Command::new(&weft).args(["tls", "ca-create", "--dir"]).arg(&ca))?;
        for sa in ["web", "api"] {
            run_ok(
                "weft tls cert-create",
                Command::new(&weft)
                    .args(["tls", "cert-create", "--ca-dir"])
                    .arg(&ca)
                    .args(["--namespace", "default", "--service-account", sa, "--out"])
                    .arg(&self.tls),
            )?;
        }
        let t = |f: &str| self.tls.join(f);
        std::fs::write(
            t("api-dns.ext"),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\n\
                 subjectAltName=DNS:{},URI:spiffe://cluster.local/ns/default/sa/api\n",
                sni(self.app.port())
            ),
        )?;
        run_ok(
            "openssl req",
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                .args(["-nodes", "-subj", "/O=weft", "-keyout"])
                .arg(t("api-dns-key.pem"))
                .arg("-out")
                .arg(t("api-dns.csr")),
        )?;
        run_ok(
            "openssl x509",
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-set_serial", "4242", "-in"])
                .arg(t("api-dns.csr"))
                .arg("-CA")
                .arg(ca.join("ca.pem"))
                .arg("-CAkey")
                .arg(ca.join("ca-key.pem"))
                .arg("-extfile")
                .arg(t("api-dns.ext"))
                .arg("-out")
                .arg(t("api-dns.pem")),
        )?;
        // HAProxy wants certificate and key in one file.
        for (out, parts) in [
            ("web-combined.pem", ["web.pem", "web-key.pem"]),
            ("api-dns-combined.pem", ["api-dns.pem", "api-dns-key.pem"]),
        ] {
            let mut text = String::new();
            for p in parts {
                text.push_str(&std::fs::read_to_string(t(p))?);
            }
            std::fs::write(t(out), text)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// What [`probe`] measured in one window.
pub struct Probed {
    usage: Vec<Usage>,
    app_cpu_ms: f64,
    generator_cpu_ms: f64,
    other_cpu_ms: f64,
    pool: Option<PoolUse>,
}

/// CPU time of every known process (each proxy's family, the app, this process) and of the
/// whole machine.
struct CpuSnapshot {
    /// (user + system, system) per proxy family.
    proxies: Vec<(f64, f64)>,
    app: f64,
    me: f64,
    machine: f64,
}

fn cpu_snapshot(families: &[(String, Vec<u32>)], app: u32, others: &[u32]) -> CpuSnapshot {
    CpuSnapshot {
        proxies: families
            .iter()
            .map(|(_, p)| {
                let (user, sys) = procstat::cpu_times_ms(p);
                (user + sys, sys)
            })
            .collect(),
        app: procstat::cpu_ms(&[app]) + procstat::cpu_ms(others),
        me: procstat::cpu_ms(&[std::process::id()]),
        machine: procstat::machine_busy_ms(),
    }
}

/// Samples every proxy's RSS from `from` to `end` and everyone's CPU time across that window,
/// and (weft) the pool counters at the client sidecar's `admin` address. `idle` are the other
/// setups' proxies (not under load, but not "other load" either).
async fn probe(
    proxies: Vec<(String, u32)>,
    app: u32,
    idle: Vec<u32>,
    admin: Option<SocketAddr>,
    from: tokio::time::Instant,
    end: tokio::time::Instant,
) -> Probed {
    tokio::time::sleep_until(from).await;
    // Read outside the CPU window: answering costs the proxy a little.
    let pool0 = pool::read_async(admin).await;
    let families: Vec<(String, Vec<u32>)> =
        proxies.into_iter().map(|(role, pid)| (role, procstat::family(pid))).collect();
    let idle: Vec<u32> = idle.into_iter().flat_map(procstat::family).collect();
    let c0 = cpu_snapshot(&families, app, &idle);
    let mut max = vec![0u64; families.len()];
    let mut sum = vec![0u64; families.len()];
    let mut anon = vec![0u64; families.len()];
    let mut samples = 0u64;
    while tokio::time::Instant::now() < end {
        for (i, (_, pids)) in families.iter().enumerate() {
            let rss = procstat::rss_kb(pids);
            max[i] = max[i].max(rss);
            sum[i] += rss;
            anon[i] = anon[i].max(procstat::rss_anon_kb(pids));
        }
        samples += 1;
        let next = tokio::time::Instant::now() + Duration::from_millis(250);
        tokio::time::sleep_until(next.min(end)).await;
    }
    let c1 = cpu_snapshot(&families, app, &idle);
    let pool = match (pool0, pool::read_async(admin).await) {
        (Some(Ok(before)), Some(Ok(after))) => Some(after.since(&before)),
        (Some(Err(e)), _) | (_, Some(Err(e))) => {
            eprintln!("    (pool counters not read: {e})");
            None
        }
        _ => None,
    };
    let proxies_ms: f64 = c1.proxies.iter().zip(&c0.proxies).map(|(a, b)| a.0 - b.0).sum();
    let app_cpu_ms = c1.app - c0.app;
    let generator_cpu_ms = c1.me - c0.me;
    let other_cpu_ms = ((c1.machine - c0.machine) - proxies_ms - app_cpu_ms - generator_cpu_ms).max(0.0);
    let usage = families
        .into_iter()
        .enumerate()
        .map(|(i, (role, pids))| Usage {
            cpu_ms: c1.proxies[i].0 - c0.proxies[i].0,
            sys_ms: c1.proxies[i].1 - c0.proxies[i].1,
            rss_max_kb: max[i],
            rss_mean_kb: sum[i] / samples.max(1),
            anon_max_kb: anon[i],
            role,
            pids,
        })
        .collect();
    Probed { usage, app_cpu_ms, generator_cpu_ms, other_cpu_ms, pool }
}

/// Waits (up to `max`) until processes other than ours use less than `cores` CPUs in two
/// consecutive half-second windows, so a point does not start while something else (a build) is running.
/// Returns how long it waited.
fn wait_quiet(ours: &[u32], cores: f64, max: Duration) -> Duration {
    let started = Instant::now();
    let mut quiet = 0;
    loop {
        let pids: Vec<u32> = ours.iter().flat_map(|&p| procstat::family(p)).chain([std::process::id()]).collect();
        let (m0, o0) = (procstat::machine_busy_ms(), procstat::cpu_ms(&pids));
        std::thread::sleep(Duration::from_millis(500));
        let (m1, o1) = (procstat::machine_busy_ms(), procstat::cpu_ms(&pids));
        let other = ((m1 - m0) - (o1 - o0)) / 500.0;
        if other < cores {
            quiet += 1;
        } else {
            quiet = 0;
        }
        if quiet >= 2 || started.elapsed() >= max {
            return started.elapsed();
        }
    }
}

fn gen_command(spec: &Spec) -> String {
    let proto = match spec.proto {
        Proto::H1 => "h1",
        Proto::H2 => "h2",
    };
    let mut c = format!("weft-bench load --addr ADDR --path {} --proto {proto} -c {}", spec.path, spec.concurrency);
    if spec.proto == Proto::H2 {
        c.push_str(&format!(" --connections {}", spec.connections));
    }
    if let Some(r) = spec.rate {
        c.push_str(&format!(" --rate {r}"));
    }
    c.push_str(&format!(" --warmup {}ms --duration {}ms", spec.warmup.as_millis(), spec.duration.as_millis()));
    c
}

/// A 1-worker request or two, to tell "this setup cannot do this protocol" from a slow one.
async fn smoke(addr: SocketAddr, proto: Proto) -> Result<(), String> {
    let spec = Spec {
        addr,
        path: "/bytes/1024".into(),
        proto,
        connections: 1,
        concurrency: 1,
        rate: None,
        warmup: Duration::ZERO,
        duration: Duration::from_millis(300),
        timeout: Duration::from_secs(3),
    };
    let r = load::run(spec).await.map_err(|e| format!("{e:#}"))?;
    if r.requests == 0 || r.errors > 0 {
        return Err(format!("{} ok, {} errors: {}", r.requests, r.errors, r.error_samples.join("; ")));
    }
    if r.body_bytes != r.requests * 1024 {
        return Err(format!("bodies are not 1024 bytes ({} bytes in {} responses)", r.body_bytes, r.requests));
    }
    Ok(())
}

/// A peak measured with an independent load generator (wrk for HTTP/1.1, h2load for HTTP/2).
#[derive(Clone, Debug, Serialize)]
pub struct CrossCheck {
    pub setup: Setup,
    pub proto: Proto,
    pub command: String,
    /// Requests per second as the tool reports it, or why there is none.
    pub rps: Result<f64, String>,
}

#[derive(Clone, Serialize)]
pub struct Outcome {
    pub points: Vec<Point>,
    pub cross: Vec<CrossCheck>,
    pub started: BTreeMap<Setup, Result<(), String>>,
}

/// Runs wrk or h2load closed-loop against `addr` with the suite's concurrency and duration.
fn cross_check(args: &SuiteArgs, threads: usize, addr: SocketAddr, proto: Proto) -> (String, Result<f64, String>) {
    let url = format!("http://{addr}/bytes/1024");
    let secs = args.duration.as_secs().max(1);
    let warm = args.warmup.as_secs();
    let argv: Vec<String> = match proto {
        Proto::H1 => {
            vec!["wrk".into(), format!("-t{threads}"), format!("-c{}", args.concurrency), format!("-d{secs}s"), url]
        }
        Proto::H2 => vec![
            "h2load".into(),
            format!("-t{threads}"),
            format!("-c{}", args.h2_connections),
            format!("-m{}", args.concurrency.div_ceil(args.h2_connections.max(1))),
            format!("-D{secs}"),
            format!("--warm-up-time={warm}"),
            url,
        ],
    };
    let shown = argv.join(" ").replace(&addr.to_string(), "ADDR");
    if proto == Proto::H1 && warm > 0 {
        // wrk has no warm-up option: a short run first, discarded.
        let mut w = argv.clone();
        w[3] = format!("-d{warm}s");
        let _ = Command::new(&w[0]).args(&w[1..]).output();
    }
    let out = match Command::new(&argv[0]).args(&argv[1..]).output() {
        Ok(o) => o,
        Err(e) => return (shown, Err(format!("{}: {e}", argv[0]))),
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = match proto {
        // wrk: "Requests/sec:  12345.67"; errors show as "Non-2xx or 3xx responses" / "Socket errors".
        Proto::H1 => text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| "no Requests/sec in wrk output".to_string())
            .and_then(|r| match text.lines().find(|l| l.contains("Non-2xx") || l.contains("Socket errors")) {
                Some(e) => Err(format!("{r:.0} rps but {}", e.trim())),
                None => Ok(r),
            }),
        // h2load: "finished in 10.00s, 12345.60 req/s, 13.2MB/s" and
        // "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout".
        Proto::H2 => text
            .lines()
            .find(|l| l.starts_with("finished in"))
            .and_then(|l| l.split(", ").nth(1)?.strip_suffix(" req/s")?.parse::<f64>().ok())
            .ok_or_else(|| "no req/s in h2load output".to_string())
            .and_then(|r| {
                let failed = text
                    .lines()
                    .find(|l| l.starts_with("requests:"))
                    .and_then(|l| l.split(", ").find(|p| p.ends_with(" failed")))
                    .and_then(|p| p.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0);
                if failed > 0 {
                    Err(format!("{r:.0} rps but {failed} requests failed"))
                } else {
                    Ok(r)
                }
            }),
    };
    (shown, rps)
}

/// Runs the suite.
pub fn run(args: &SuiteArgs) -> anyhow::Result<Outcome> {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let rt = {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads.unwrap_or(cpus).max(1));
        b.enable_all().build()?
    };
    let (work, own_work) = match &args.work_dir {
        Some(d) => (d.clone(), false),
        None => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
            (std::env::temp_dir().join(format!("weft-bench-{}-{nanos}", std::process::id())), true)
        }
    };
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;
    let result = run_in(args, &rt, &work, cpus);
    if own_work {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

fn run_in(args: &SuiteArgs, rt: &tokio::runtime::Runtime, work: &Path, cpus: usize) -> anyhow::Result<Outcome> {
    let tls = work.join("tls");
    std::fs::create_dir_all(&tls)?;
    let mut env = Env {
        args: args.clone(),
        work: work.to_path_buf(),
        tls,
        app: "127.0.0.1:0".parse().expect("addr"),
        threads: args.proxy_threads.unwrap_or(cpus),
        procs: vec![],
        app_pid: 0,
    };

    // The app: one demo echo server behind every setup.
    let log = work.join("app.log");
    let mut cmd = Command::new(env.bin("weft"));
    cmd.args(["demo-app", "--name", "api", "--listen", "127.0.0.1:0"]);
    let (mut app, rx) = spawn("demo app", cmd, &log)?;
    env.app = *read_addrs(&mut app, &rx, "listening", &log)?
        .get("listening")
        .ok_or_else(|| anyhow!("demo app printed no address"))?;
    env.app_pid = app.pid();
    env.procs.push(app);
    eprintln!("==> demo app on {}", env.app);
    env.make_pki()?;

    let mut started = BTreeMap::new();
    let mut setups = vec![];
    for &s in &args.setups {
        let res = match s {
            Setup::Direct => Ok(Started {
                setup: s,
                addrs: BTreeMap::from([(Proto::H1, Ok(env.app)), (Proto::H2, Ok(env.app))]),
                proxies: vec![],
                admin: None,
            }),
            Setup::Weft => env.start_weft(),
            Setup::Relay | Setup::Haproxy | Setup::HaproxyH1 => env.start_haproxy(s),
            Setup::Nginx => env.start_nginx(),
        };
        match res {
            Ok(mut st) => {
                for (proto, addr) in st.addrs.iter_mut() {
                    if let Ok(a) = addr {
                        if let Err(e) = rt.block_on(smoke(*a, *proto)) {
                            eprintln!("==> {} cannot serve {}: {e}", s.label(), proto.label());
                            *addr = Err(e);
                        }
                    }
                }
                eprintln!("==> {} ready: {:?}", s.label(), st.addrs);
                started.insert(s, Ok(()));
                setups.push(st);
            }
            Err(e) => {
                eprintln!("==> {} could not start: {e:#}", s.label());
                started.insert(s, Err(format!("{e:#}")));
            }
        }
    }

    let all_proxies: Vec<u32> = setups.iter().flat_map(|s| s.proxies.iter().map(|(_, p)| *p)).collect();
    // All fixed-rate points first (memory is then measured before any peak run inflated it),
    // then the peaks.
    let mut points = vec![];
    let rounds = args.repeat.max(1);
    let plan: Vec<(Mode, u32)> =
        [Mode::Fixed, Mode::Peak].into_iter().flat_map(|m| (1..=rounds).map(move |r| (m, r))).collect();
    for (mode, round) in plan {
        for &proto in &args.protos {
            for st in &setups {
                let spec = Spec {
                    addr: "127.0.0.1:0".parse().expect("addr"),
                    path: "/bytes/1024".into(),
                    proto,
                    connections: match proto {
                        Proto::H1 => args.concurrency,
                        Proto::H2 => args.h2_connections,
                    },
                    concurrency: args.concurrency,
                    rate: (mode == Mode::Fixed).then_some(args.rate),
                    warmup: args.warmup,
                    duration: args.duration,
                    timeout: Duration::from_secs(10),
                };
                let command = gen_command(&spec);
                let addr = match &st.addrs[&proto] {
                    Ok(a) => *a,
                    Err(why) => {
                        points.push(Point {
                            setup: st.setup,
                            proto,
                            mode,
                            report: None,
                            usage: vec![],
                            skipped: Some(why.clone()),
                            command,
                            app_cpu_ms: 0.0,
                            generator_cpu_ms: 0.0,
                            other_cpu_ms: 0.0,
                            waited_s: 0.0,
                            attempts: 0,
                            round,
                            pool: None,
                        });
                        continue;
                    }
                };
                let spec = Spec { addr, ..spec };
                let proxies = st.proxies.clone();
                let admin = st.admin;
                let app_pid = env.app_pid;
                let idle: Vec<u32> =
                    all_proxies.iter().copied().filter(|p| !proxies.iter().any(|(_, q)| q == p)).collect();
                let mut ours = all_proxies.clone();
                ours.push(app_pid);
                let mut attempt = 0;
                let (waited, report, probed) = loop {
                    attempt += 1;
                    let waited = wait_quiet(&ours, args.quiet_cores, args.quiet_wait);
                    if waited > Duration::from_secs(3) {
                        eprintln!("    (waited {:.0} s for other CPU load to stop)", waited.as_secs_f64());
                    }
                    let (proxies, idle) = (proxies.clone(), idle.clone());
                    let (report, probed) = rt.block_on(load::run_with(spec.clone(), move |from, end| {
                        probe(proxies, app_pid, idle, admin, from, end)
                    }))?;
                    let other_pct = probed.other_cpu_ms / (report.seconds * 10.0);
                    if other_pct <= crate::report::DISTURBED_PCT || attempt > args.retries {
                        break (waited, report, probed);
                    }
                    eprintln!(
                        "    (other processes used {other_pct:.0} % of a CPU during the point: measuring it again)"
                    );
                };
                let usage = probed.usage;
                eprintln!(
                    "{:<8} {:<8} {:<5} #{round} {}",
                    st.setup.short(),
                    proto.label(),
                    match mode {
                        Mode::Fixed => "fixed",
                        Mode::Peak => "peak",
                    },
                    report.line()
                );
                eprintln!(
                    "                         cpu: generator {:.0} ms, app {:.0} ms, other {:.0} ms",
                    probed.generator_cpu_ms, probed.app_cpu_ms, probed.other_cpu_ms
                );
                for u in &usage {
                    eprintln!(
                        "                         {:<6} rss max {:.1} MB  cpu {:.0} ms ({:.0} ms kernel)",
                        u.role,
                        u.rss_max_kb as f64 / 1024.0,
                        u.cpu_ms,
                        u.sys_ms
                    );
                }
                if let Some(p) = &probed.pool {
                    eprintln!(
                        "                         pool   {} requests on an open peer connection, {} opened",
                        p.reused, p.opened
                    );
                }
                points.push(Point {
                    setup: st.setup,
                    proto,
                    mode,
                    report: Some(report),
                    usage,
                    skipped: None,
                    command,
                    app_cpu_ms: probed.app_cpu_ms,
                    generator_cpu_ms: probed.generator_cpu_ms,
                    other_cpu_ms: probed.other_cpu_ms,
                    waited_s: waited.as_secs_f64(),
                    attempts: attempt,
                    round,
                    pool: probed.pool,
                });
            }
        }
    }
    let mut cross = vec![];
    if args.cross_check {
        let threads = args.threads.unwrap_or(cpus).max(1);
        for &proto in &args.protos {
            for st in &setups {
                let Ok(addr) = st.addrs[&proto] else { continue };
                let mut ours = all_proxies.clone();
                ours.push(env.app_pid);
                wait_quiet(&ours, args.quiet_cores, args.quiet_wait);
                let (command, rps) = cross_check(args, threads, addr, proto);
                eprintln!(
                    "{:<8} {:<8} cross  {}: {}",
                    st.setup.short(),
                    proto.label(),
                    command.split_whitespace().next().unwrap_or(""),
                    match &rps {
                        Ok(r) => format!("{r:.0} rps"),
                        Err(e) => e.clone(),
                    }
                );
                cross.push(CrossCheck { setup: st.setup, proto, command, rps });
            }
        }
    }
    // Stop in reverse start order (clients before servers before the app).
    while let Some(mut p) = env.procs.pop() {
        p.stop();
    }
    Ok(Outcome { points, cross, started })
}

/// The suite's options at their defaults, as `weft-bench suite` with no flags parses them.
#[cfg(test)]
pub(crate) fn default_args() -> SuiteArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        suite: SuiteArgs,
    }
    Cli::parse_from(["weft-bench"]).suite
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every template in bench/conf renders with what the suite fills in: a placeholder the
    /// suite does not know would stop a benchmark run only once it reached that setup.
    #[test]
    fn every_template_renders_with_the_suite_variables() {
        let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/conf");
        let mut args = default_args();
        args.conf_dir = conf.clone();
        let env = Env {
            args,
            work: PathBuf::from("/run/w"),
            tls: PathBuf::from("/run/w/tls"),
            app: SocketAddr::from(([127, 0, 0, 1], 8080)),
            threads: 2,
            procs: vec![],
            app_pid: 0,
        };
        let mut names: Vec<String> =
            std::fs::read_dir(&conf).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert!(names.iter().any(|n| n == "relay-client.cfg"), "templates found: {names:?}");
        for name in &names {
            render(&env.template(name).unwrap(), &env.vars(Setup::Haproxy, 9001, 9002, 9003))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let relay =
            render(&env.template("relay-client.cfg").unwrap(), &env.vars(Setup::Relay, 9001, 9002, 9003)).unwrap();
        assert!(relay.contains("bind 127.0.0.1:9002") && relay.contains("server hop 127.0.0.1:9001"), "{relay}");
        // The two HAProxy pairs differ only in the hop's ALPN.
        for (setup, alpn) in [(Setup::Haproxy, "alpn h2 "), (Setup::HaproxyH1, "alpn http/1.1 ")] {
            let name = format!("{}-client.cfg", setup.template_kind());
            let cfg = render(&env.template(&name).unwrap(), &env.vars(setup, 9001, 9002, 9003)).unwrap();
            assert!(cfg.contains(alpn), "{setup:?}: {cfg}");
        }
    }

    #[test]
    fn an_unknown_placeholder_is_an_error() {
        let err = render("bind {{NOPE}}", &BTreeMap::from([("HOP_PORT", "1".to_string())])).unwrap_err();
        assert!(err.to_string().contains("{{NOPE}}"), "{err}");
    }
}
