//! The suite's Markdown report (bench/RESULTS.md).

use crate::load::{Proto, Report};
use crate::pool::PoolUse;
use crate::suite::{Mode, Outcome, Point, Setup, SuiteArgs};
use std::fmt::Write;
use std::process::Command;

/// The per-proxy memory target, bytes.
pub const RSS_TARGET: f64 = 15e6;
/// Peak rps of the weft pair over the HAProxy pair's.
pub const PEAK_TARGET: f64 = 1.5;
/// Share of requests sent on an already-open peer connection at steady state.
pub const POOL_REUSE_TARGET: f64 = 0.99;

pub const NOTES_BEGIN: &str = "<!-- notes -->";
pub const NOTES_END: &str = "<!-- /notes -->";

/// Where and with what the suite ran.
pub struct Machine {
    pub date: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub mem: String,
    pub kernel: String,
    pub weft: String,
    pub haproxy: String,
    pub nginx: String,
    pub rustc: String,
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("({cmd} not found)"))
}

impl Machine {
    pub fn detect(args: &SuiteArgs) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kb| format!("{:.0} GiB RAM", kb / 1024.0 / 1024.0))
            .unwrap_or_default();
        let mut commit = first_line("git", &["rev-parse", "--short", "HEAD"]);
        // The binaries are built from the working tree: say so when the data plane differs from
        // the commit.
        let dirty = Command::new("git")
            .args(["status", "--porcelain", "--", "crates/weft-proxy", "crates/weft-identity"])
            .args(["crates/weft-api", "crates/weft-demo"])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        if dirty {
            commit.push_str(" + uncommitted changes to the data plane");
        }
        let proxy = args.bin_dir.join("weft-proxy");
        Machine {
            date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            cpu_model,
            mem,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            weft: format!(
                "{} (commit {commit}, release-proxy build)",
                first_line(&proxy.display().to_string(), &["--version"])
            ),
            haproxy: first_line("haproxy", &["-v"]),
            nginx: first_line("nginx", &["-v"]),
            rustc: first_line("rustc", &["--version"]),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One point per (setup, protocol, mode) from the rounds: rps and latency percentiles are the
/// median of the rounds (max: the largest), CPU adds up over the rounds (so CPU per request is
/// over all of them), RSS is the largest seen in any round. `round` becomes the number of rounds.
pub fn aggregate(points: &[Point]) -> Vec<Point> {
    let mut keys: Vec<(Setup, Proto, Mode)> = vec![];
    for p in points {
        let k = (p.setup, p.proto, p.mode);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(s, pr, m)| {
            let group: Vec<&Point> = points.iter().filter(|p| p.setup == s && p.proto == pr && p.mode == m).collect();
            let mut agg = group[0].clone();
            agg.round = group.len() as u32;
            let reports: Vec<&Report> = group.iter().filter_map(|p| p.report.as_ref()).collect();
            if reports.len() != group.len() {
                return agg;
            }
            let med = |f: &dyn Fn(&Report) -> f64| median(reports.iter().map(|r| f(r)).collect());
            let mut r = reports[0].clone();
            r.rps = med(&|r| r.rps);
            r.latency.mean = med(&|r| r.latency.mean);
            r.latency.p50 = med(&|r| r.latency.p50);
            r.latency.p90 = med(&|r| r.latency.p90);
            r.latency.p99 = med(&|r| r.latency.p99);
            r.latency.p999 = med(&|r| r.latency.p999);
            r.latency.max = reports.iter().map(|r| r.latency.max).fold(0.0, f64::max);
            r.requests = reports.iter().map(|r| r.requests).sum();
            r.errors = reports.iter().map(|r| r.errors).sum();
            r.seconds = reports.iter().map(|r| r.seconds).sum();
            r.body_bytes = reports.iter().map(|r| r.body_bytes).sum();
            r.error_samples = reports.iter().flat_map(|r| r.error_samples.iter().cloned()).take(5).collect();
            agg.report = Some(r);
            for u in agg.usage.iter_mut() {
                let same: Vec<_> = group.iter().flat_map(|p| p.usage.iter().filter(|x| x.role == u.role)).collect();
                u.cpu_ms = same.iter().map(|x| x.cpu_ms).sum();
                u.sys_ms = same.iter().map(|x| x.sys_ms).sum();
                u.rss_max_kb = same.iter().map(|x| x.rss_max_kb).max().unwrap_or(0);
                u.anon_max_kb = same.iter().map(|x| x.anon_max_kb).max().unwrap_or(0);
                u.rss_mean_kb = same.iter().map(|x| x.rss_mean_kb).sum::<u64>() / same.len().max(1) as u64;
            }
            agg.app_cpu_ms = group.iter().map(|p| p.app_cpu_ms).sum();
            agg.generator_cpu_ms = group.iter().map(|p| p.generator_cpu_ms).sum();
            agg.other_cpu_ms = group.iter().map(|p| p.other_cpu_ms).sum();
            agg.waited_s = group.iter().map(|p| p.waited_s).sum();
            agg.attempts = group.iter().map(|p| p.attempts).max().unwrap_or(1);
            agg.pool = group.iter().map(|p| p.pool).sum();
            agg
        })
        .collect()
}

/// `min–max` of values over rounds, or `None` with fewer than two.
fn range(v: &[f64], fmt: &dyn Fn(f64) -> String) -> Option<String> {
    if v.len() < 2 {
        return None;
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(format!("{}–{}", fmt(lo), fmt(hi)))
}

/// `min–max` of `f` over the rounds of one point.
fn spread(
    raw: &[Point],
    s: Setup,
    p: Proto,
    m: Mode,
    f: &dyn Fn(&Report) -> f64,
    fmt: &dyn Fn(f64) -> String,
) -> String {
    let v: Vec<f64> = raw
        .iter()
        .filter(|x| x.setup == s && x.proto == p && x.mode == m)
        .filter_map(|x| x.report.as_ref().map(f))
        .collect();
    range(&v, fmt).unwrap_or_else(|| "–".into())
}

fn find(o: &Outcome, s: Setup, p: Proto, m: Mode) -> Option<&Point> {
    o.points.iter().find(|x| x.setup == s && x.proto == p && x.mode == m)
}

fn rep(o: &Outcome, s: Setup, p: Proto, m: Mode) -> Option<&Report> {
    find(o, s, p, m)?.report.as_ref()
}

fn ms(v: f64) -> String {
    format!("{v:.3}")
}

fn added(v: f64, base: Option<f64>) -> String {
    match base {
        Some(b) => format!("{:+.3}", v - b),
        None => "–".into(),
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**not met**"
    }
}

/// The setups that terminate TLS and HTTP on both sides of their hop, as weft's pair does.
const MESH_PAIRS: [Setup; 4] = [Setup::Weft, Setup::Haproxy, Setup::HaproxyH1, Setup::Nginx];

/// How far weft's peak could go over a baseline's on this machine, whatever weft did in user
/// space. At peak the cores are saturated, so rps is inversely proportional to the CPU that
/// everyone spends per request: the generator and the app (`rest`), and weft's pair. If the
/// pair did no user-space work at all (no TLS, no HTTP) and spent only `kernel` per request,
/// the least kernel time of any mesh pair in the run, weft's rps would grow by
/// `(rest + pair) / (rest + kernel)`. Below the target, the target is out of reach here.
#[derive(Debug, PartialEq)]
struct Ceiling {
    ratio: f64,
    /// CPU-ms per 1,000 requests.
    kernel: f64,
    rest: f64,
}

fn ceiling(o: &Outcome, b: Setup, p: Proto) -> Option<Ceiling> {
    let w = find(o, Setup::Weft, p, Mode::Peak)?;
    let wr = w.report.as_ref()?;
    let hr = rep(o, b, p, Mode::Peak).filter(|h| h.rps > 0.0)?;
    let rest = w.per_1k(w.generator_cpu_ms + w.app_cpu_ms)?;
    let pair = w.cpu_per_1k()?;
    let kernel =
        MESH_PAIRS.iter().filter_map(|&s| find(o, s, p, Mode::Peak)?.sys_per_1k()).fold(f64::INFINITY, f64::min);
    if !kernel.is_finite() || rest + kernel <= 0.0 {
        return None;
    }
    Some(Ceiling { ratio: wr.rps / hr.rps * (rest + pair) / (rest + kernel), kernel, rest })
}

/// weft's peak rps over `b`'s, round by round (each pair of points measured minutes apart at
/// most, so a change in the machine's speed between rounds cancels out): `min–max`, or `None`
/// with fewer than two rounds.
fn round_ratios(raw: &Outcome, b: Setup, p: Proto) -> Option<String> {
    let rps = |s: Setup, round: u32| {
        raw.points
            .iter()
            .find(|x| x.setup == s && x.proto == p && x.mode == Mode::Peak && x.round == round)
            .and_then(|x| x.report.as_ref())
            .map(|r| r.rps)
    };
    let ratios: Vec<f64> = raw
        .points
        .iter()
        .filter(|x| x.setup == Setup::Weft && x.proto == p && x.mode == Mode::Peak)
        .filter_map(|x| Some(x.report.as_ref()?.rps / rps(b, x.round).filter(|&h| h > 0.0)?))
        .collect();
    range(&ratios, &|v| format!("{v:.2}"))
}

/// The four targets of the issue, per protocol, as table rows: `o` aggregated over the rounds,
/// `raw` round by round.
fn targets(o: &Outcome, raw: &Outcome, protos: &[Proto], out: &mut String) {
    let _ = writeln!(out, "| target | {} |", protos.iter().map(|p| p.label()).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(protos.len()));
    let row = |name: &str, f: &dyn Fn(Proto) -> String| {
        let cells: Vec<String> = protos.iter().map(|&p| f(p)).collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    let missing = "not measured".to_string();
    // The targets compare with "the HAProxy pair". Both HAProxy configurations of the
    // suite (HTTP/2 and HTTP/1.1 hop, see suite.rs) are such a pair, so each that ran gets its
    // own rows.
    let baselines: Vec<Setup> = [Setup::Haproxy, Setup::HaproxyH1]
        .into_iter()
        .filter(|&b| o.points.iter().any(|pt| pt.setup == b && pt.report.is_some()))
        .collect();
    for &b in &baselines {
        out.push_str(&row(&format!("peak rps through weft ≥ 1.5 × HAProxy pair's ({})", b.hop_label()), &|p| match (
            rep(o, Setup::Weft, p, Mode::Peak),
            rep(o, b, p, Mode::Peak),
        ) {
            (Some(w), Some(h)) if h.rps > 0.0 => format!(
                "{}: {:.2} × ({} vs {} rps{})",
                verdict(w.rps >= PEAK_TARGET * h.rps),
                w.rps / h.rps,
                thousands(w.rps),
                thousands(h.rps),
                round_ratios(raw, b, p).map(|r| format!("; {r} × round by round")).unwrap_or_default()
            ),
            _ => missing.clone(),
        }));
    }
    for &b in &baselines {
        out.push_str(&row(&format!("p99 at the fixed rate ≤ HAProxy pair's ({})", b.hop_label()), &|p| match (
            rep(o, Setup::Weft, p, Mode::Fixed),
            rep(o, b, p, Mode::Fixed),
        ) {
            (Some(w), Some(h)) => {
                format!(
                    "{}: {} vs {} ms",
                    verdict(w.latency.p99 <= h.latency.p99),
                    ms(w.latency.p99),
                    ms(h.latency.p99)
                )
            }
            _ => missing.clone(),
        }));
    }
    out.push_str(&row("RSS ≤ 15 MB per weft proxy at the fixed rate", &|p| match find(o, Setup::Weft, p, Mode::Fixed)
    {
        Some(pt) if !pt.usage.is_empty() => {
            let ok = pt.usage.iter().all(|u| mb(u.rss_max_kb) * 1e6 <= RSS_TARGET);
            let parts: Vec<String> =
                pt.usage.iter().map(|u| format!("{} {:.1} MB", u.role, mb(u.rss_max_kb))).collect();
            format!("{}: {}", verdict(ok), parts.join(", "))
        }
        _ => missing.clone(),
    }));
    for &b in &baselines {
        out.push_str(&row(
            &format!("CPU per 1,000 requests at the fixed rate ≤ HAProxy pair's ({})", b.hop_label()),
            &|p| match (
                find(o, Setup::Weft, p, Mode::Fixed).and_then(Point::cpu_per_1k),
                find(o, b, p, Mode::Fixed).and_then(Point::cpu_per_1k),
            ) {
                (Some(w), Some(h)) => format!("{}: {w:.0} vs {h:.0} CPU-ms", verdict(w <= h)),
                _ => missing.clone(),
            },
        ));
    }
    out.push_str(&row("weft hop: requests on an already-open peer connection ≥ 99 % at steady state", &|p| {
        // Every measured window of the weft pair (fixed rate and peak, all rounds): the load was
        // already running for the warm-up when each began.
        let pools: Option<PoolUse> =
            [Mode::Fixed, Mode::Peak].iter().map(|&m| find(o, Setup::Weft, p, m).and_then(|pt| pt.pool)).sum();
        match pools.and_then(|u| Some((u, u.ratio()?))) {
            Some((u, r)) => format!(
                "{}: {:.3} % ({} of {} requests; {} connection(s) opened)",
                verdict(r >= POOL_REUSE_TARGET),
                r * 100.0,
                thousands(u.reused as f64),
                thousands((u.reused + u.opened) as f64),
                u.opened
            ),
            None => missing.clone(),
        }
    }));
    // Not a target: what this machine allows at all (see `Ceiling`).
    for &b in &baselines {
        out.push_str(&row(
            &format!(
                "(reference, not a target) highest peak ÷ HAProxy pair's ({}) weft's pair could reach here: \
                 no user-space work, and the least kernel time per request of any pair in the run",
                b.hop_label()
            ),
            &|p| match ceiling(o, b, p) {
                Some(c) => format!(
                    "{:.2} ×{} (generator + app {:.0}, kernel {:.0} CPU-ms per 1k)",
                    c.ratio,
                    if c.ratio < PEAK_TARGET { ", below 1.5: out of reach here" } else { "" },
                    c.rest,
                    c.kernel
                ),
                None => missing.clone(),
            },
        ));
    }
    // Not a target: how far above HAProxy's peak two proxies get that do no TLS and no HTTP.
    if o.points.iter().any(|pt| pt.setup == Setup::Relay) {
        out.push_str(&row(
            "(reference, not a target) TCP relay pair's peak ÷ HAProxy pair's (HTTP/2 hop)",
            &|p| match (rep(o, Setup::Relay, p, Mode::Peak), rep(o, Setup::Haproxy, p, Mode::Peak)) {
                (Some(r), Some(h)) if h.rps > 0.0 => {
                    format!("{:.2} × ({} vs {} rps)", r.rps / h.rps, thousands(r.rps), thousands(h.rps))
                }
                _ => missing.clone(),
            },
        ));
    }
}

/// CPU used by processes outside the benchmark during the window, in % of one CPU.
/// Above this (% of one CPU) a point is flagged as disturbed.
pub const DISTURBED_PCT: f64 = 10.0;

fn other_load(pt: &Point, r: &Report) -> String {
    let pct = pt.other_cpu_ms / (r.seconds * 10.0);
    if pct > DISTURBED_PCT {
        format!("{pct:.0} % ⚠")
    } else {
        format!("{pct:.0} %")
    }
}

fn fixed_table(o: &Outcome, raw: &[Point], args: &SuiteArgs, p: Proto, out: &mut String) {
    let base = rep(o, Setup::Direct, p, Mode::Fixed).map(|r| r.latency);
    let _ = writeln!(
        out,
        "| setup | rps | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | added p50 | added p99 | added p99.9 | p99 over rounds | errors | other load |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for &s in &args.setups {
        match find(o, s, p, Mode::Fixed) {
            Some(pt @ Point { report: Some(r), .. }) => {
                let l = r.latency;
                let (a50, a99, a999) = if s == Setup::Direct {
                    ("–".to_string(), "–".to_string(), "–".to_string())
                } else {
                    (
                        added(l.p50, base.map(|b| b.p50)),
                        added(l.p99, base.map(|b| b.p99)),
                        added(l.p999, base.map(|b| b.p999)),
                    )
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {a50} | {a99} | {a999} | {} | {} | {} |",
                    s.label(),
                    thousands(r.rps),
                    ms(l.p50),
                    ms(l.p90),
                    ms(l.p99),
                    ms(l.p999),
                    ms(l.max),
                    spread(raw, s, p, Mode::Fixed, &|r| r.latency.p99, &|v| format!("{v:.2}")),
                    r.errors,
                    other_load(pt, r)
                );
            }
            Some(Point { skipped: Some(why), .. }) => {
                let _ = writeln!(out, "| {} | not possible: {} |||||||||| ", s.label(), why);
            }
            _ => {}
        }
    }
}

fn peak_table(o: &Outcome, raw: &[Point], args: &SuiteArgs, p: Proto, out: &mut String) {
    let base = rep(o, Setup::Direct, p, Mode::Peak).map(|r| r.rps);
    let _ = writeln!(
        out,
        "| setup | peak rps | × direct | rps over rounds | p50 ms | p99 ms | p99.9 ms | errors | generator CPU | other load |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for &s in &args.setups {
        match find(o, s, p, Mode::Peak) {
            Some(pt @ Point { report: Some(r), .. }) => {
                let ratio = match base {
                    Some(b) if b > 0.0 => format!("{:.2}", r.rps / b),
                    _ => "–".into(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {ratio} | {} | {} | {} | {} | {} | {:.0} % | {} |",
                    s.label(),
                    thousands(r.rps),
                    spread(raw, s, p, Mode::Peak, &|r| r.rps, &thousands),
                    ms(r.latency.p50),
                    ms(r.latency.p99),
                    ms(r.latency.p999),
                    r.errors,
                    pt.generator_cpu_ms / (r.seconds * 10.0),
                    other_load(pt, r)
                );
            }
            Some(Point { skipped: Some(why), .. }) => {
                let _ = writeln!(out, "| {} | not possible: {} |||||| ", s.label(), why);
            }
            _ => {}
        }
    }
}

fn resource_table(o: &Outcome, args: &SuiteArgs, p: Proto, out: &mut String) {
    let _ = writeln!(
        out,
        "| setup | process | RSS max at {} rps (anon) | CPU-ms / 1k req at {} rps | RSS max at peak (anon) | CPU-ms / 1k req at peak |",
        thousands(args.rate),
        thousands(args.rate)
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|");
    for &s in &args.setups {
        if s == Setup::Direct {
            continue;
        }
        let (Some(fixed), Some(peak)) = (find(o, s, p, Mode::Fixed), find(o, s, p, Mode::Peak)) else {
            continue;
        };
        if fixed.report.is_none() {
            continue;
        }
        let per_1k = |pt: &Point, cpu: f64| pt.per_1k(cpu).map(|c| format!("{c:.0}")).unwrap_or_else(|| "–".into());
        for u in &fixed.usage {
            let pu = peak.usage.iter().find(|x| x.role == u.role);
            let _ = writeln!(
                out,
                "| {} | {} ({} process{}) | {:.1} MB ({:.1}) | {} | {} | {} |",
                s.label(),
                u.role,
                u.pids.len(),
                if u.pids.len() == 1 { "" } else { "es" },
                mb(u.rss_max_kb),
                mb(u.anon_max_kb),
                per_1k(fixed, u.cpu_ms),
                pu.map(|x| format!("{:.1} MB ({:.1})", mb(x.rss_max_kb), mb(x.anon_max_kb)))
                    .unwrap_or_else(|| "–".into()),
                pu.map(|x| per_1k(peak, x.cpu_ms)).unwrap_or_else(|| "–".into()),
            );
        }
        let fmt = |v: Option<f64>| v.map(|v| format!("**{v:.0}**")).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            out,
            "| {} | **pair** | | {} | | {} |",
            s.label(),
            fmt(fixed.cpu_per_1k()),
            fmt(peak.cpu_per_1k())
        );
    }
}

/// The whole report. `previous`: the existing file, whose notes block is carried over.
pub fn markdown_with_notes(args: &SuiteArgs, o: &Outcome, m: &Machine, previous: &str) -> String {
    let mut out = markdown(args, o, m);
    if let (Some(b), Some(e)) = (previous.find(NOTES_BEGIN), previous.find(NOTES_END)) {
        if b < e {
            let notes = &previous[b..e + NOTES_END.len()];
            out = out.replace(&format!("{NOTES_BEGIN}\n{NOTES_END}"), notes);
        }
    }
    out
}

pub fn markdown(args: &SuiteArgs, raw: &Outcome, m: &Machine) -> String {
    let agg = Outcome { points: aggregate(&raw.points), ..raw.clone() };
    let o = &agg;
    let mut out = String::new();
    let _ = writeln!(out, "# weft data-plane benchmark: results\n");
    let _ = writeln!(
        out,
        "Generated by `weft-bench suite` (see [README.md](README.md) for the method and what each number means). \
         Everything below the notes is regenerated on every run.\n"
    );
    let _ = writeln!(out, "- **Date:** {}", m.date);
    let _ = writeln!(out, "- **Machine:** {} CPUs (`nproc`), {}, {}; Linux {}", m.cpus, m.cpu_model, m.mem, m.kernel);
    let _ = writeln!(out, "- **Software:** {}; {}; {}; {}", m.weft, m.haproxy, m.nginx, m.rustc);
    let _ = writeln!(out, "- **Command:** `{}`", args.command);
    let _ = writeln!(
        out,
        "- **Load:** `GET /bytes/1024` (1 KiB bodies) from `weft-bench load`, on the same cores as everything else. \
         Fixed rate: {} rps open loop, latency corrected for coordinated omission. Peak: closed loop. \
         {} requests in flight: HTTP/1.1 over {} keep-alive connections; HTTP/2 (h2c, prior knowledge) over {} connections. \
         Each point: {} s warm-up, then {} s measured, in {} round(s) (all fixed-rate rounds, then all peak rounds; \
         setups interleaved). Tables show the median of the rounds; CPU is over all rounds; RSS is the largest of any round.",
        thousands(args.rate),
        args.concurrency,
        args.concurrency,
        args.h2_connections,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64(),
        args.repeat.max(1)
    );
    let _ = writeln!(
        out,
        "- **Setups:** one demo app (`weft demo-app`) behind all of them. weft: client sidecar → mTLS HTTP/2 hop → server sidecar. \
         HAProxy, twice: client → mTLS HTTP/2 hop → server, and client → mTLS HTTP/1.1 hop (idle connections reused) → server. \
         nginx: client → mTLS HTTP/1.1 hop (upstream keepalive) → server. \
         All hops TLS 1.3 with client certificates from the same CA; {} threads/workers per proxy. \
         TCP relay pair (a reference, not a mesh setup): two HAProxy processes in `mode tcp` that only copy bytes, no TLS, no HTTP, \
         one plain hop connection per generator connection (so, unlike the mesh pairs, no hop writes shared by several requests).",
        args.proxy_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    );
    // Over every round's measurement, not the per-point medians.
    let retried = raw.points.iter().filter(|p| p.attempts > 1).count();
    let measured = raw.points.iter().filter(|p| p.report.is_some()).count();
    let _ = writeln!(
        out,
        "- **Noise control:** before each point the suite waits until processes outside the benchmark use < {:.0} % of a CPU; \
         a point during which they used > {DISTURBED_PCT:.0} % of a CPU is measured again (up to {} more times; {retried} of {measured} measurements were). \
         \"other load\" is what they used during the measured window; ⚠ marks a point still above {DISTURBED_PCT:.0} %.",
        args.quiet_cores * 100.0,
        args.retries
    );
    for (s, r) in &o.started {
        if let Err(e) = r {
            let _ = writeln!(out, "- **{} did not start:** {}", s.label(), e.replace('\n', " "));
        }
    }
    let _ = writeln!(out, "\n{NOTES_BEGIN}\n{NOTES_END}\n");
    let _ = writeln!(out, "## Targets (issue), same run\n");
    targets(o, raw, &args.protos, &mut out);
    for &p in &args.protos {
        let _ = writeln!(out, "\n## {}\n", p.label());
        let _ = writeln!(out, "### {} rps, open loop\n", thousands(args.rate));
        fixed_table(o, &raw.points, args, p, &mut out);
        let _ = writeln!(out, "\n### Peak, closed loop\n");
        peak_table(o, &raw.points, args, p, &mut out);
        let _ = writeln!(out, "\n### Proxy memory and CPU\n");
        resource_table(o, args, p, &mut out);
    }
    if !o.cross.is_empty() {
        let _ = writeln!(out, "\n## Cross-check: peak with wrk / h2load\n");
        let _ = writeln!(
            out,
            "The same peak points measured by independent generators (wrk after a discarded warm-up run; h2load with `--warm-up-time`), \
             to show the ratios do not depend on `weft-bench load`.\n"
        );
        let _ = writeln!(out, "| setup | protocol | tool rps | × direct (same tool) | weft-bench rps |");
        let _ = writeln!(out, "|---|---|--:|--:|--:|");
        for c in &o.cross {
            let base = o
                .cross
                .iter()
                .find(|d| d.setup == Setup::Direct && d.proto == c.proto)
                .and_then(|d| d.rps.as_ref().ok().copied());
            let ours = rep(o, c.setup, c.proto, Mode::Peak).map(|r| thousands(r.rps)).unwrap_or_else(|| "–".into());
            let (rps, ratio) = match (&c.rps, base) {
                (Ok(r), Some(b)) if b > 0.0 => (thousands(*r), format!("{:.2}", r / b)),
                (Ok(r), _) => (thousands(*r), "–".into()),
                (Err(e), _) => (format!("failed: {e}"), "–".into()),
            };
            let _ = writeln!(out, "| {} | {} | {rps} | {ratio} | {ours} |", c.setup.label(), c.proto.label());
        }
        let mut seen = std::collections::BTreeSet::new();
        let _ = writeln!(out);
        for c in &o.cross {
            if seen.insert(c.command.clone()) {
                let _ = writeln!(out, "- `{}`", c.command);
            }
        }
    }
    if args.repeat > 1 {
        let _ = writeln!(out, "\n## Every round\n");
        let _ = writeln!(
            out,
            "| setup | protocol | point | round | rps | p50 ms | p99 ms | p99.9 ms | proxies' CPU-ms / 1k req | other load |"
        );
        let _ = writeln!(out, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|");
        let mut rows: Vec<&Point> = raw.points.iter().filter(|p| p.report.is_some()).collect();
        rows.sort_by_key(|p| (p.proto, p.mode, p.setup, p.round));
        for pt in rows {
            let r = pt.report.as_ref().expect("filtered");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                pt.setup.label(),
                pt.proto.label(),
                match pt.mode {
                    Mode::Fixed => format!("{} rps", thousands(args.rate)),
                    Mode::Peak => "peak".into(),
                },
                pt.round,
                thousands(r.rps),
                ms(r.latency.p50),
                ms(r.latency.p99),
                ms(r.latency.p999),
                pt.cpu_per_1k().map(|c| format!("{c:.0}")).unwrap_or_else(|| "–".into()),
                other_load(pt, r)
            );
        }
    }
    let _ = writeln!(out, "\n## Generator commands\n");
    let _ = writeln!(out, "Each point is equivalent to this stand-alone run against the setup's entry address:\n");
    let mut seen = std::collections::BTreeSet::new();
    for pt in &o.points {
        if seen.insert(pt.command.clone()) {
            let _ = writeln!(out, "- `{}`", pt.command);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(round: u32, attempts: u32) -> Point {
        Point {
            setup: Setup::Weft,
            proto: Proto::H1,
            mode: Mode::Peak,
            report: Some(Report { requests: 1000, seconds: 1.0, rps: 1000.0, ..Default::default() }),
            usage: vec![],
            skipped: None,
            command: String::new(),
            app_cpu_ms: 0.0,
            generator_cpu_ms: 0.0,
            other_cpu_ms: 0.0,
            waited_s: 0.0,
            attempts,
            round,
            pool: None,
        }
    }

    /// A peak point of `setup` over HTTP/1.1: 1,000 requests at `rps`, its pair using `cpu_ms`
    /// of which `sys_ms` in the kernel, and 20 ms each for the generator and the app.
    fn peak(setup: Setup, rps: f64, cpu_ms: f64, sys_ms: f64) -> Point {
        let usage = ["client", "server"]
            .iter()
            .map(|role| crate::suite::Usage {
                role: role.to_string(),
                pids: vec![],
                rss_max_kb: 0,
                rss_mean_kb: 0,
                anon_max_kb: 0,
                cpu_ms: cpu_ms / 2.0,
                sys_ms: sys_ms / 2.0,
            })
            .collect();
        let mut pt = point(1, 1);
        pt.setup = setup;
        pt.report = Some(Report { requests: 1000, seconds: 1.0, rps, ..Default::default() });
        pt.usage = usage;
        pt.generator_cpu_ms = 20.0;
        pt.app_cpu_ms = 20.0;
        pt
    }

    /// The ceiling scales weft's measured ratio by what removing its pair's user-space work would
    /// save, with the least kernel time of any mesh pair in the run; the relay is no mesh pair.
    #[test]
    fn ceiling_takes_the_leanest_kernel_of_the_mesh_pairs() {
        let o = Outcome {
            points: vec![
                peak(Setup::Weft, 20_000.0, 60.0, 30.0),
                peak(Setup::Haproxy, 20_000.0, 50.0, 25.0),
                peak(Setup::HaproxyH1, 12_000.0, 100.0, 40.0),
                peak(Setup::Relay, 30_000.0, 20.0, 10.0),
            ],
            cross: vec![],
            started: Default::default(),
        };
        // Generator and app: 40 CPU-ms per 1k; weft's pair 60; leanest kernel 25 (HAProxy's).
        let c = ceiling(&o, Setup::Haproxy, Proto::H1).unwrap();
        assert_eq!((c.rest, c.kernel), (40.0, 25.0));
        assert!((c.ratio - 100.0 / 65.0).abs() < 1e-9, "{c:?}");
        let c = ceiling(&o, Setup::HaproxyH1, Proto::H1).unwrap();
        assert!((c.ratio - 20.0 / 12.0 * 100.0 / 65.0).abs() < 1e-9, "{c:?}");
        assert_eq!(ceiling(&o, Setup::Nginx, Proto::H1), None, "no nginx point");
        assert_eq!(ceiling(&o, Setup::Haproxy, Proto::H2), None, "no HTTP/2 points");

        let mut md = String::new();
        targets(&o, &o, &[Proto::H1], &mut md);
        assert!(md.contains("1.54 × (generator + app 40, kernel 25 CPU-ms per 1k)"), "{md}");
    }

    /// Each round's weft point is divided by the same round's baseline point, not by another
    /// round's; the aggregated cell gives the ratio of the medians and the rounds' range.
    #[test]
    fn peak_ratios_pair_the_points_of_each_round() {
        let at = |setup, round, rps| {
            let mut pt = peak(setup, rps, 60.0, 30.0);
            pt.round = round;
            pt
        };
        let raw = Outcome {
            points: vec![
                at(Setup::Weft, 1, 30_000.0),
                at(Setup::Haproxy, 1, 20_000.0),
                at(Setup::Weft, 2, 15_000.0),
                at(Setup::Haproxy, 2, 12_500.0),
                at(Setup::Weft, 3, 18_000.0),
                at(Setup::Haproxy, 3, 16_000.0),
            ],
            cross: vec![],
            started: Default::default(),
        };
        // Round by round: 1.50, 1.20, 1.125. Across rounds (30k over 12.5k) it would be 2.4.
        assert_eq!(round_ratios(&raw, Setup::Haproxy, Proto::H1).as_deref(), Some("1.12–1.50"));
        assert_eq!(round_ratios(&raw, Setup::HaproxyH1, Proto::H1), None, "no such baseline");
        let agg = Outcome { points: aggregate(&raw.points), ..raw.clone() };
        let mut md = String::new();
        targets(&agg, &raw, &[Proto::H1], &mut md);
        assert!(md.contains("**not met**: 1.12 × (18,000 vs 16,000 rps; 1.12–1.50 × round by round)"), "{md}");
    }

    /// The noise line counts the measurements of every round that were taken again, not the
    /// per-point medians the tables show.
    #[test]
    fn retried_measurements_are_counted_per_round() {
        let args = crate::suite::default_args();
        let o =
            Outcome { points: vec![point(1, 2), point(2, 4), point(3, 1)], cross: vec![], started: Default::default() };
        let s = String::new;
        let m = Machine {
            date: s(),
            cpus: 2,
            cpu_model: s(),
            mem: s(),
            kernel: s(),
            weft: s(),
            haproxy: s(),
            nginx: s(),
            rustc: s(),
        };
        let md = markdown(&args, &o, &m);
        assert!(md.contains("2 of 3 measurements were"), "{md}");
    }
}
