//! The server: configuration, sockets, and the atomically swapped table.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{info, warn};

use crate::forward::Forwarder;
use crate::handler::{Handler, Shared};
use crate::index::Index;
use crate::table::Table;
use crate::udp::UdpTasks;

/// Default record TTL (seconds): short, so that registry changes reach clients quickly.
pub const DEFAULT_TTL: u32 = 5;
/// Default time to wait for the upstream's answer before answering SERVFAIL.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// A TCP connection that sends no query for this long is closed.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection before the sender waits.
const TCP_RESPONSE_BUFFER: usize = 32;
/// With port 0, how often to pick a new port when UDP got one that TCP cannot have.
const BIND_ATTEMPTS: usize = 16;
/// Default UDP receive buffer (SO_RCVBUF): room for several thousand queries that arrive at once.
/// The kernel's default (about 200 KiB) holds a few hundred; a burst past that is dropped unseen.
pub const DEFAULT_UDP_RECEIVE_BUFFER: usize = 4 << 20;
/// With `udp_tasks` 0, at most this many tasks receive and answer UDP queries.
pub const MAX_UDP_TASKS: usize = 4;
/// Largest `udp_receive_buffer` accepted (the kernel takes an `int`, and doubles it).
const MAX_UDP_RECEIVE_BUFFER: usize = 1 << 30;
/// Largest `udp_tasks` accepted.
const MAX_UDP_TASKS_SETTING: usize = 64;

/// How the DNS server listens and answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// UDP and TCP address (same port for both). Port 0 picks a free one; see
    /// [`DnsServer::local_addr`].
    pub listen: SocketAddr,
    /// Names outside `cluster.local.` and `consul.` are forwarded here over UDP (TCP when the
    /// client is on TCP and the UDP answer is truncated). `None`: such names are REFUSED.
    pub upstream: Option<SocketAddr>,
    /// TTL of every record we answer, and the negative-caching TTL (SOA minimum).
    pub ttl: u32,
    /// How long to wait for the upstream before answering SERVFAIL.
    pub forward_timeout: Duration,
    /// Receive buffer of the UDP socket (SO_RCVBUF, bytes): queries that arrive while it is full
    /// are dropped by the kernel. The kernel caps it at `net.core.rmem_max`; a start that gets
    /// less than asked logs a warning saying so. 0 keeps the kernel's default.
    pub udp_receive_buffer: usize,
    /// Tasks that receive and answer UDP queries on the one socket. 0: one per runtime worker
    /// thread, at most [`MAX_UDP_TASKS`].
    pub udp_tasks: usize,
}

impl DnsConfig {
    /// `listen` with no upstream, [`DEFAULT_TTL`] and [`DEFAULT_FORWARD_TIMEOUT`].
    pub fn new(listen: SocketAddr) -> Self {
        DnsConfig {
            listen,
            upstream: None,
            ttl: DEFAULT_TTL,
            forward_timeout: DEFAULT_FORWARD_TIMEOUT,
            udp_receive_buffer: DEFAULT_UDP_RECEIVE_BUFFER,
            udp_tasks: 0,
        }
    }

    /// Checks the rules [`DnsServer::start`] relies on.
    pub fn validate(&self) -> Result<(), DnsError> {
        // RFC 2181 §8: TTLs above 2^31 - 1 are read as 0.
        if self.ttl > i32::MAX as u32 {
            return Err(DnsError::InvalidConfig {
                setting: "ttl",
                value: self.ttl.to_string(),
                fix: "use at most 2147483647 seconds (RFC 2181); a few seconds suits a mesh",
            });
        }
        if self.udp_receive_buffer > MAX_UDP_RECEIVE_BUFFER {
            return Err(DnsError::InvalidConfig {
                setting: "udp_receive_buffer",
                value: self.udp_receive_buffer.to_string(),
                fix: "use at most 1 GiB (1073741824 bytes); 4 MiB holds thousands of queries",
            });
        }
        if self.udp_tasks > MAX_UDP_TASKS_SETTING {
            return Err(DnsError::InvalidConfig {
                setting: "udp_tasks",
                value: self.udp_tasks.to_string(),
                fix: "use at most 64, or 0 for one per runtime worker thread",
            });
        }
        if self.upstream.is_some() && self.forward_timeout.is_zero() {
            return Err(DnsError::InvalidConfig {
                setting: "forward_timeout",
                value: format!("{:?}", self.forward_timeout),
                fix: "use a positive duration such as 2s",
            });
        }
        Ok(())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A setting breaks a rule.
    #[error("dns: setting `{setting}` = {value} is invalid: {fix}")]
    InvalidConfig { setting: &'static str, value: String, fix: &'static str },
    /// The UDP socket could not be bound.
    #[error("dns: cannot bind UDP {addr} (setting `listen`): {source}; is another DNS server there? port 53 needs CAP_NET_BIND_SERVICE; port 0 picks a free port")]
    BindUdp { addr: SocketAddr, source: io::Error },
    /// The bound UDP socket could not be set up (receive buffer, duplicates for the tasks).
    #[error("dns: cannot set up UDP socket {addr}: {what}: {source}")]
    SetupUdp { addr: SocketAddr, what: &'static str, source: io::Error },
    /// The TCP listener could not be bound.
    #[error("dns: cannot bind TCP {addr} (setting `listen`): {source}; UDP and TCP share the port, so it must be free for both")]
    BindTcp { addr: SocketAddr, source: io::Error },
    /// The upstream is this server.
    #[error("dns: setting `upstream` = {upstream} is this server's own address ({local}); forwarding would loop. Point it at another resolver or set it to None")]
    UpstreamLoop { upstream: SocketAddr, local: SocketAddr },
}

/// A DNS server for mesh names on one UDP and TCP address. Dropping it stops it too; prefer
/// [`DnsServer::shutdown`], which waits for the sockets to close.
pub struct DnsServer {
    local_addr: SocketAddr,
    index: Arc<ArcSwap<Index>>,
    ttl: u32,
    /// Serial of the newest table built (SOA serial).
    next_serial: AtomicU32,
    /// Serial of the table published; a table built earlier never replaces a newer one.
    published: Mutex<u32>,
    /// TCP (hickory-server's listener).
    server: Server<Shared>,
    /// UDP (ours, see `udp.rs`).
    udp: UdpTasks,
}

impl fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsServer")
            .field("local_addr", &self.local_addr)
            .field("serial", &*self.published.lock().unwrap_or_else(|e| e.into_inner()))
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `cfg.listen` and starts answering from `table`.
    pub async fn start(cfg: DnsConfig, table: Table) -> Result<DnsServer, DnsError> {
        cfg.validate()?;
        let (udp, tcp) = bind(cfg.listen).await?;
        let local_addr = udp.local_addr().map_err(|source| DnsError::BindUdp { addr: cfg.listen, source })?;
        let udp = udp_sockets(udp, local_addr, &cfg)?;
        if let Some(upstream) = cfg.upstream.filter(|u| is_self(local_addr, *u)) {
            return Err(DnsError::UpstreamLoop { upstream, local: local_addr });
        }

        let index = Arc::new(ArcSwap::from_pointee(Index::new(&table, cfg.ttl, 1)));
        let handler = Arc::new(Handler {
            index: index.clone(),
            forwarder: cfg.upstream.map(|upstream| Forwarder::new(upstream, cfg.forward_timeout)),
            rotation: AtomicUsize::new(0),
        });
        let udp_tasks = udp.len();
        let udp = UdpTasks::spawn(udp, handler.clone());
        let mut server = Server::new(Shared(handler));
        server.register_listener(tcp, DEFAULT_TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        info!(%local_addr, upstream = ?cfg.upstream, cluster = %table.cluster, udp_tasks, "DNS server listening (UDP and TCP)");
        Ok(DnsServer {
            local_addr,
            index,
            ttl: cfg.ttl,
            next_serial: AtomicU32::new(2),
            published: Mutex::new(1),
            server,
            udp,
        })
    }

    /// The bound address (UDP and TCP), with the real port when `listen` had port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the table; the next query sees the new one. Indexing happens before the swap,
    /// outside any lock, so queries are never held up.
    pub fn set_table(&self, table: Table) {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        self.publish(serial, Index::new(&table, self.ttl, serial));
    }

    /// Swaps `index` in unless a table built later (higher serial, RFC 1982 arithmetic) already
    /// was: with concurrent `set_table` calls, the last one called wins, not the last to finish.
    fn publish(&self, serial: u32, index: Index) {
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        if (serial.wrapping_sub(*published) as i32) > 0 {
            self.index.store(Arc::new(index));
            *published = serial;
        }
    }

    /// Stops accepting queries and waits for the sockets to close.
    pub async fn shutdown(mut self) {
        self.udp.stop().await;
        if let Err(error) = self.server.shutdown_gracefully().await {
            warn!(%error, local_addr = %self.local_addr, "DNS server stopped with an error");
        }
    }
}

/// Binds UDP and then TCP on the same port. With port 0 the UDP port may be taken for TCP; then
/// both are bound again on a new port.
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(listen).await.map_err(|source| DnsError::BindUdp { addr: listen, source })?;
        let addr = udp.local_addr().map_err(|source| DnsError::BindUdp { addr: listen, source })?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS => continue,
            Err(source) => return Err(DnsError::BindTcp { addr, source }),
        }
    }
}

/// Sizes the receive buffer of the bound UDP socket and returns it with duplicates, one per UDP
/// task. The duplicates share one socket and one receive queue (dup(2)): each task takes the next
/// datagram that is waiting, so any one client's queries spread over all of them.
fn udp_sockets(udp: UdpSocket, local_addr: SocketAddr, cfg: &DnsConfig) -> Result<Vec<UdpSocket>, DnsError> {
    let setup = |what| move |source| DnsError::SetupUdp { addr: local_addr, what, source };
    let socket = socket2::Socket::from(udp.into_std().map_err(setup("taking it from the runtime"))?);
    if cfg.udp_receive_buffer > 0 {
        socket.set_recv_buffer_size(cfg.udp_receive_buffer).map_err(setup("setting SO_RCVBUF"))?;
        // Linux reports twice what it grants (the other half is its bookkeeping).
        let granted = socket.recv_buffer_size().map_err(setup("reading SO_RCVBUF"))? / 2;
        if granted < cfg.udp_receive_buffer {
            warn!(
                %local_addr,
                asked = cfg.udp_receive_buffer,
                granted,
                "DNS: the kernel capped the UDP receive buffer at net.core.rmem_max; bursts of queries \
                 past it are dropped. Raise it: sysctl -w net.core.rmem_max={}",
                cfg.udp_receive_buffer
            );
        }
    }
    let tasks = match cfg.udp_tasks {
        0 => tokio::runtime::Handle::current().metrics().num_workers().clamp(1, MAX_UDP_TASKS),
        n => n,
    };
    let mut sockets = Vec::with_capacity(tasks);
    for _ in 1..tasks {
        let dup = socket.try_clone().map_err(setup("duplicating it for another task"))?;
        sockets.push(UdpSocket::from_std(dup.into()).map_err(setup("registering it with the runtime"))?);
    }
    sockets.push(UdpSocket::from_std(socket.into()).map_err(setup("registering it with the runtime"))?);
    Ok(sockets)
}

/// Whether `upstream` is the server bound at `local` (which may be a wildcard address).
fn is_self(local: SocketAddr, upstream: SocketAddr) -> bool {
    upstream.port() == local.port()
        && (upstream.ip() == local.ip() || (local.ip().is_unspecified() && upstream.ip().is_loopback()))
}

#[cfg(test)]
mod tests;
