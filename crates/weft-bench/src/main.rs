//! `weft-bench`: the data-plane benchmark (see bench/README.md).
//!
//! - `weft-bench load`: the load generator alone, against any HTTP/1.1 or h2c address.
//! - `weft-bench suite`: direct vs weft vs HAProxy vs nginx pairs (and a TCP relay pair as a
//!   reference), written up as Markdown.

mod load;
mod mcscale;
mod pool;
mod procstat;
mod report;
mod stats;
mod suite;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "weft-bench", version, about = "weft data-plane benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[derive(clap::Args, Clone)]
struct LoadArgs {
    /// Target address (plain HTTP/1.1 or h2c), e.g. 127.0.0.1:8080.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, default_value = "/bytes/1024")]
    path: String,
    #[arg(long, value_enum, default_value = "h1")]
    proto: load::Proto,
    /// Requests in flight at most (workers). HTTP/1.1: also the number of connections.
    #[arg(long, short = 'c', default_value_t = 100)]
    concurrency: usize,
    /// HTTP/2 only: connections the workers share.
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Open loop at this many requests per second (latency corrected for coordinated
    /// omission). Omit for closed loop (peak).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, value_parser = duration, default_value = "10s")]
    duration: Duration,
    /// Load sent before measuring starts (connections warm, pools filled).
    #[arg(long, value_parser = duration, default_value = "2s")]
    warmup: Duration,
    #[arg(long, value_parser = duration, default_value = "10s")]
    timeout: Duration,
    /// Generator threads (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the report as one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

impl LoadArgs {
    fn spec(&self) -> load::Spec {
        load::Spec {
            addr: self.addr,
            path: self.path.clone(),
            proto: self.proto,
            connections: self.connections,
            concurrency: self.concurrency,
            rate: self.rate,
            warmup: self.warmup,
            duration: self.duration,
            timeout: self.timeout,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Send load to one address and report throughput and latency percentiles.
    Load(LoadArgs),
    /// Run the whole comparison (needs the release `weft` and `weft-proxy`, haproxy, nginx and
    /// openssl) and print the Markdown report.
    Suite(suite::SuiteArgs),
    /// Multi-cluster scale simulation: N linked control planes with many exported services
    /// (bench/multicluster.sh).
    Mcscale(mcscale::McScaleArgs),
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        b.worker_threads(t.max(1));
    }
    Ok(b.enable_all().build()?)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Load(a) => {
            let report = runtime(a.threads)?.block_on(load::run(a.spec()))?;
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.line());
                for e in &report.error_samples {
                    println!("error: {e}");
                }
            }
            Ok(())
        }
        Cmd::Mcscale(a) => mcscale::run(&a),
        Cmd::Suite(a) => {
            let outcome = suite::run(&a)?;
            let machine = report::Machine::detect(&a);
            let previous = a.out.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
            let md = report::markdown_with_notes(&a, &outcome, &machine, &previous);
            if let Some(p) = &a.json {
                std::fs::write(p, serde_json::to_string_pretty(&outcome)?)?;
            }
            if let Some(p) = &a.out {
                std::fs::write(p, &md)?;
                eprintln!("==> wrote {}", p.display());
            }
            println!("{md}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("3").unwrap(), Duration::from_secs(3));
        assert!(duration("3h").is_err());
    }
}
