//! Each probe kind run once with `probe()` against real backends on 127.0.0.1 and real processes.

mod support;

use support::*;
use weft_api::kinds::CheckSpec;
use weft_health::{probe, CheckResult, ProbeContext, Status};

async fn run(spec: &CheckSpec) -> CheckResult {
    probe(spec, &ProbeContext::new("default/api-1")).await
}

fn http(url: String) -> CheckSpec {
    CheckSpec { http: Some(url), ..check("http") }
}

#[tokio::test]
async fn http_maps_status_codes() {
    let echo = weft_testkit::http_echo("api").await;

    let r = run(&http(format!("http://{echo}/"))).await;
    assert_eq!(r.status, Status::Passing, "{}", r.output);
    assert!(r.output.contains("200 OK"), "{}", r.output);

    let r = run(&http(format!("http://{echo}/status/503"))).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(r.output.contains("503"), "{}", r.output);

    let r = run(&http(format!("http://{echo}/status/429"))).await;
    assert_eq!(r.status, Status::Warning, "{}", r.output);

    // By name, as operators write it.
    let r = run(&http(format!("http://localhost:{}/status/204", echo.port()))).await;
    assert_eq!(r.status, Status::Passing, "{}", r.output);
}

#[tokio::test]
async fn http_warning_from_a_server_answering_429() {
    let code = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(429));
    let addr = status_server(code).await;
    let r = run(&http(format!("http://{addr}/health"))).await;
    assert_eq!(r.status, Status::Warning, "{}", r.output);
    assert!(r.output.contains("answering 429"), "{}", r.output);
}

#[tokio::test]
async fn http_critical_on_closed_port_and_bad_urls() {
    let closed = closed_port().await;
    let r = run(&http(format!("http://{closed}/"))).await;
    assert_eq!(r.status, Status::Critical);
    assert!(r.output.contains("connect"), "{}", r.output);

    for (url, says) in [
        ("http://[::1", "invalid URL"),
        ("not a url at all", "invalid URL"),
        ("ftp://example.com/", "must start with http://"),
        ("/just/a/path", "must start with http://"),
        ("https://127.0.0.1:1/", "https:// is not supported"),
    ] {
        let r = run(&http(url.into())).await;
        assert_eq!(r.status, Status::Critical, "{url}: {}", r.output);
        assert!(r.output.contains(says), "{url}: {}", r.output);
    }
}

#[tokio::test]
async fn tcp_passing_and_critical() {
    let echo = weft_testkit::tcp_echo().await;
    let r = run(&CheckSpec { tcp: Some(echo), ..check("tcp") }).await;
    assert_eq!(r.status, Status::Passing, "{}", r.output);

    let r = run(&CheckSpec { tcp: Some(closed_port().await), ..check("tcp") }).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
}

#[tokio::test]
async fn h2ping_passing_against_http2_and_critical_against_plain_tcp() {
    let echo = weft_testkit::http_echo("api").await;
    let r = run(&CheckSpec { h2ping: Some(echo), ..check("h2") }).await;
    assert_eq!(r.status, Status::Passing, "{}", r.output);

    let tcp = weft_testkit::tcp_echo().await;
    let r = run(&CheckSpec { h2ping: Some(tcp), ..check("h2") }).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);

    let r = run(&CheckSpec { h2ping: Some(closed_port().await), ..check("h2") }).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
}

fn script(argv: &[&str]) -> CheckSpec {
    CheckSpec { script: Some(argv.iter().map(|s| s.to_string()).collect()), ..check("script") }
}

#[tokio::test]
async fn script_exit_codes() {
    let r = run(&script(&["sh", "-c", "echo all good; exit 0"])).await;
    assert_eq!(r.status, Status::Passing, "{}", r.output);
    assert!(r.output.contains("all good"), "{}", r.output);

    let r = run(&script(&["sh", "-c", "echo degraded >&2; exit 1"])).await;
    assert_eq!(r.status, Status::Warning, "{}", r.output);
    assert!(r.output.contains("degraded"), "{}", r.output);

    let r = run(&script(&["sh", "-c", "exit 2"])).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);

    let r = run(&script(&["/nonexistent/check"])).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(r.output.contains("did not start"), "{}", r.output);

    let r = run(&script(&[])).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
}

#[tokio::test]
async fn script_killed_at_timeout() {
    let mut spec = script(&["sleep", "5"]);
    spec.timeout = ms(200);
    let started = std::time::Instant::now();
    let r = run(&spec).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(r.output.contains("timed out"), "{}", r.output);
    // Bounded by the timeout, not by the 5 s sleep.
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

#[tokio::test]
async fn script_output_is_capped() {
    let r = run(&script(&["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"])).await;
    assert_eq!(r.status, Status::Passing, "{}", r.output);
    assert!(r.output.len() < weft_health::OUTPUT_MAX + 200, "{}", r.output.len());
}

#[tokio::test]
async fn invalid_specs_are_critical_not_panics() {
    let empty = check("nothing");
    let r = run(&empty).await;
    assert_eq!(r.status, Status::Critical);
    assert!(r.output.contains("exactly one"), "{}", r.output);

    let two = CheckSpec { tcp: Some(closed_port().await), script: Some(vec!["true".into()]), ..check("two") };
    assert_eq!(run(&two).await.status, Status::Critical);

    // A zero timeout times out at once.
    let zero = CheckSpec { tcp: Some(closed_port().await), timeout: ms(0), ..check("zero") };
    assert_eq!(run(&zero).await.status, Status::Critical);

    // Alias without a monitor, TTL probed directly.
    let alias = CheckSpec { alias: Some("db-1".into()), ..check("alias") };
    let r = run(&alias).await;
    assert_eq!(r.status, Status::Critical);
    assert!(r.output.contains("default/db-1"), "{}", r.output);
    let ttl = CheckSpec { ttl: Some(weft_api::Duration::from_secs(1)), ..check("ttl") };
    assert_eq!(run(&ttl).await.status, Status::Critical);
}

#[test]
fn alias_names_resolve_in_the_workload_namespace() {
    assert_eq!(weft_health::resolve_alias("default/api-1", "db-1"), "default/db-1");
    assert_eq!(weft_health::resolve_alias("shop/api-1", "db-1"), "shop/db-1");
    assert_eq!(weft_health::resolve_alias("api-1", "db-1"), "db-1");
    assert_eq!(weft_health::resolve_alias("default/api-1", "other/db-1"), "other/db-1");
}

#[test]
fn status_orders_and_displays() {
    assert!(Status::Passing < Status::Warning && Status::Warning < Status::Critical);
    assert_eq!(
        [Status::Passing, Status::Warning, Status::Critical].map(|s| s.to_string()),
        ["passing", "warning", "critical"]
    );
}
