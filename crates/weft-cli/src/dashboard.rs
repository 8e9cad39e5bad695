//! `weft dashboard`: a one-time URL that logs a browser into the control plane's web dashboard as
//! the token in use (the dashboard runs with `weft control --dashboard`, and in `weft up`); and the
//! dashboard's lines in `weft up`'s summary.

use crate::client::Conn;

#[derive(clap::Args)]
pub struct DashboardArgs {
    /// Print only the login URL (for scripts).
    #[arg(long)]
    pub url_only: bool,
    #[command(flatten)]
    pub conn: Conn,
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let v = args.conn.call("POST", "/v1/dashboard/login", String::new()).await?;
    let url = v["url"].as_str().unwrap_or_default();
    if args.url_only {
        crate::outln!("{url}")?;
    } else {
        crate::outln!("dashboard  {}", v["dashboard"].as_str().unwrap_or_default())?;
        crate::outln!(
            "login      {url}\n           (works once, within {} minutes, as the token this command used)",
            v["expires_in_seconds"].as_u64().unwrap_or(0) / 60
        )?;
    }
    Ok(())
}

/// Prints `weft up`'s line for a control plane's dashboard (nothing when it runs without one).
pub fn print_up(cp: &weft_control::ControlPlane, indent: &str) {
    if let Some(m) = cp.metrics_addr {
        println!("{indent}metrics: http://{m}/metrics  (the control plane's own Prometheus metrics)");
    }
    if let Some(d) = &cp.dashboard {
        println!(
            "{indent}dashboard: {}  (log in once: {}  or with the admin token below; `weft dashboard` makes another link)",
            d.url(),
            d.login_url(&cp.admin_token)
        );
    }
}
