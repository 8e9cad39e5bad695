//! Consul-style health checks for the weft control plane.
//!
//! A workload registers checks ([`weft_api::kinds::CheckSpec`], one probe each); [`probe`] runs
//! one check once, and a [`Monitor`] runs every workload's checks on their intervals, applies the
//! thresholds and keeps per-check and per-workload status for discovery to read.
//!
//! ```text
//!   WorkloadSpec.checks ──► Monitor::set_checks("default/api-1", checks)
//!                               │ one Tokio task per check
//!                               ▼
//!           probe() ──► thresholds ──► check status ──► worst of the workload's checks
//!                                                           │
//!       workload_status() / checks() / expired() ◄──────────┤
//!       subscribe(): watch<u64> generation ◄────────────────┘ (on every workload status change)
//! ```
//!
//! # Probe kinds
//!
//! | kind | spec | default interval | passing | warning | critical |
//! |---|---|---|---|---|---|
//! | `http` | `http: http://host:port/path` | 30s | 2xx | 429 | any other status; connect error; bad or `https://` URL |
//! | `tcp` | `tcp: host:port` | 10s | connection accepted | — | refused, unreachable |
//! | `grpc` | `grpc: host:port`, `grpcService` (default `""`: the server) | 10s | `SERVING` | — | any other status; an error (`NotFound` for an unknown service) |
//! | `h2ping` | `h2ping: host:port` (HTTP/2 prior knowledge, no TLS) | 10s | PING answered | — | not HTTP/2; no answer |
//! | `script` | `script: [cmd, args...]` (no shell) | 30s | exit 0 | exit 1 | any other exit; killed by a signal; did not start; timed out (killed) |
//! | `ttl` | `ttl: 30s` | — (the timer is the TTL) | reported pass | reported warn | reported fail; no report for the TTL; never reported yet |
//! | `alias` | `alias: db-1` (same namespace) | 10s, and at once on any status change | target passing | target warning | target critical; not registered |
//! | `docker` | `docker: {container, args, socket}` | 30s | exit 0 | exit 1 | any other exit; Docker API error; no engine at the socket |
//!
//! - **Timeout**: `timeout`, default 10s, capped at the interval ([`CheckSpec::timeout`]). A probe
//!   that runs out of time is critical, "timed out"; a script's process is killed.
//! - **Intervals** are [`CheckSpec::interval`], never shorter than [`MIN_INTERVAL`] (100ms). A
//!   check first runs as soon as it is set.
//! - **Thresholds**: a check flips only after `successThreshold` consecutive results better than
//!   what it shows, or `failureThreshold` consecutive results worse (Consul's
//!   `success_before_passing` / `failures_before_critical`; default 1 each). While a change waits
//!   for its threshold the check keeps its status, and its output carries the latest result with
//!   a note such as `(failure 2 of 3 before critical)`. TTL reports and alias mirrors apply at
//!   once, as in Consul.
//! - **Initial status** is critical (Consul's default): a check turns passing after its first
//!   `successThreshold` passes; a TTL check after the workload's first report.
//! - **Workload status** is the worst of its checks; passing if it has none.
//! - **Check ids** (for TTL reports, as Consul's `/v1/agent/check/pass|warn|fail/<id>`) are
//!   `<workload>/<check name>`: `default/api-1/heartbeat`.
//! - **Deregistration**: [`Monitor::expired`] lists workloads with a check that has
//!   `deregisterCriticalAfter` and has been critical that long (from registration if it never
//!   passed); the caller deregisters them.
//! - **Output** keeps at most [`OUTPUT_MAX`] (4 KiB) of what a probe saw.
//! - **Restarts**: a monitor made with [`Monitor::with_store`] saves every check's status,
//!   output, time, threshold counts, critical-since time and TTL deadline, and a new monitor on
//!   the same store resumes them for checks whose definition did not change: a passing check stays
//!   passing, a critical one critical, a TTL runs on to its saved deadline (critical at once if
//!   that passed). A probe's status change is saved at once (by a writer task), output or count
//!   changes at most once a second, batched; a TTL report that changes status or output before
//!   `ttl_update` returns, repeated identical TTL reports at most once per [`TTL_SAVE_EVERY`];
//!   unchanged probe results are not written.
//!
//! Nothing here panics on any spec: an invalid one (no probe, two probes, a bad URL, an empty
//! command) is a critical check whose output says what is wrong.
//!
//! [`CheckSpec::timeout`]: weft_api::kinds::CheckSpec::timeout
//! [`CheckSpec::interval`]: weft_api::kinds::CheckSpec::interval
#![forbid(unsafe_code)]

mod monitor;
mod probe;
mod status;

pub use monitor::{CheckStateStore, Monitor, MIN_INTERVAL, SCRIPT_CHECKS_OFF, TTL_SAVE_EVERY};
pub use probe::{kind_name, probe, resolve_alias, ProbeContext, OUTPUT_MAX, USER_AGENT};
pub use status::{CheckResult, HealthError, Status};
