//! Forwarding names outside our zones to the upstream resolver.
//!
//! The client's query goes upstream byte for byte over UDP from a fresh ephemeral socket. When
//! the answer comes back truncated and the client asked over TCP, the query is repeated over TCP,
//! so a TCP client gets the whole answer rather than a TC bit it cannot act on.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tracing::debug;

/// Queries waiting on the upstream at once; each holds a socket. Past this, SERVFAIL at once.
pub(crate) const MAX_FORWARDS_IN_FLIGHT: usize = 1024;

/// Why a query could not be forwarded; the client gets SERVFAIL.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error(
        "upstream {upstream} did not answer within {timeout:?} (setting `forward_timeout`); is it up and reachable?"
    )]
    Timeout { upstream: SocketAddr, timeout: Duration },
    #[error("exchanging a query with upstream {upstream} over {transport}: {source}")]
    Io { upstream: SocketAddr, transport: &'static str, source: io::Error },
    #[error("{MAX_FORWARDS_IN_FLIGHT} queries already wait on upstream {upstream}; is it slow or down?")]
    Busy { upstream: SocketAddr },
}

/// Sends queries to one upstream resolver.
#[derive(Debug)]
pub(crate) struct Forwarder {
    upstream: SocketAddr,
    timeout: Duration,
    in_flight: Semaphore,
}

impl Forwarder {
    pub(crate) fn new(upstream: SocketAddr, timeout: Duration) -> Self {
        Forwarder { upstream, timeout, in_flight: Semaphore::new(MAX_FORWARDS_IN_FLIGHT) }
    }

    /// Sends `query` (a whole DNS message with id `id`) and returns the upstream's response.
    pub(crate) async fn forward(&self, query: &[u8], id: u16, client_on_tcp: bool) -> Result<Message, ForwardError> {
        let _permit = self.in_flight.try_acquire().map_err(|_| ForwardError::Busy { upstream: self.upstream })?;
        let response = self.within_timeout(self.udp(query, id)).await?;
        if response.metadata.truncation && client_on_tcp {
            debug!(upstream = %self.upstream, "truncated over UDP; asking again over TCP");
            return self.within_timeout(self.tcp(query, id)).await;
        }
        Ok(response)
    }

    async fn within_timeout(
        &self,
        exchange: impl std::future::Future<Output = Result<Message, ForwardError>>,
    ) -> Result<Message, ForwardError> {
        timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(ForwardError::Timeout { upstream: self.upstream, timeout: self.timeout }))
    }

    async fn udp(&self, query: &[u8], id: u16) -> Result<Message, ForwardError> {
        let io_err = |source| ForwardError::Io { upstream: self.upstream, transport: "UDP", source };
        let local: SocketAddr = match self.upstream {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await.map_err(io_err)?;
        // Connected: the kernel drops datagrams from anyone but the upstream.
        socket.connect(self.upstream).await.map_err(io_err)?;
        socket.send(query).await.map_err(io_err)?;
        let mut buf = vec![0; usize::from(u16::MAX)];
        loop {
            let len = socket.recv(&mut buf).await.map_err(io_err)?;
            match parse_response(&buf[..len], id) {
                Some(message) => return Ok(message),
                None => debug!(upstream = %self.upstream, "ignoring a datagram that is not our response"),
            }
        }
    }

    async fn tcp(&self, query: &[u8], id: u16) -> Result<Message, ForwardError> {
        let io_err = |source| ForwardError::Io { upstream: self.upstream, transport: "TCP", source };
        let len = u16::try_from(query.len())
            .map_err(|_| io_err(io::Error::new(io::ErrorKind::InvalidInput, "query longer than 65535 bytes")))?;
        let mut stream = TcpStream::connect(self.upstream).await.map_err(io_err)?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.map_err(io_err)?;
        loop {
            let mut len = [0; 2];
            stream.read_exact(&mut len).await.map_err(io_err)?;
            let mut buf = vec![0; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await.map_err(io_err)?;
            match parse_response(&buf, id) {
                Some(message) => return Ok(message),
                None => debug!(upstream = %self.upstream, "ignoring a TCP message that is not our response"),
            }
        }
    }
}

/// `bytes` as a response with id `id`, or `None`.
fn parse_response(bytes: &[u8], id: u16) -> Option<Message> {
    Message::from_vec(bytes).ok().filter(|m| m.metadata.id == id && m.metadata.message_type == MessageType::Response)
}
