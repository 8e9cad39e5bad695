//! Serving UDP: a few tasks on one socket, each receiving a query, answering it in place and
//! sending the answer itself.
//!
//! hickory-server's own UDP loop (used before) hands every datagram to a new task and every answer
//! back through a channel to the one task that owns the socket; under load that task does all the
//! receiving and sending, and the hand-offs cost more CPU than the answers. Here each task owns a
//! duplicate of the socket (they share one receive queue) and runs a query's handler on the spot;
//! only a handler that has to wait (a forwarded name, a full send buffer) moves to a task of its
//! own, so a slow upstream never holds up the other queries.
//!
//! The rules hickory's loop applies are kept: datagrams shorter than a header, responses and
//! sources that cannot be answered (port 0, unspecified or broadcast addresses) are dropped;
//! a query that does not parse gets FORMERR.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};

use crate::handler::Handler;

/// The largest datagram we read (a UDP payload can be no longer).
const MAX_DATAGRAM: usize = 65_535;

/// The UDP tasks of one server; dropping this stops them.
#[derive(Debug, Default)]
pub(crate) struct UdpTasks(Vec<JoinHandle<()>>);

impl UdpTasks {
    /// One task per socket (the sockets are duplicates of one).
    pub(crate) fn spawn(sockets: Vec<UdpSocket>, handler: Arc<Handler>) -> Self {
        UdpTasks(sockets.into_iter().map(|s| tokio::spawn(serve(Arc::new(s), handler.clone()))).collect())
    }

    /// Stops the tasks and waits until they are gone (and their sockets closed).
    pub(crate) async fn stop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
        for task in self.0.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for UdpTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn serve(socket: Arc<UdpSocket>, handler: Arc<Handler>) {
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        let (len, src) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // The socket is gone (as hickory-server judges it): stop rather than spin.
            Err(error) if matches!(error.kind(), io::ErrorKind::NotConnected | io::ErrorKind::ConnectionAborted) => {
                error!(%error, "DNS: the UDP socket failed; UDP queries are no longer answered");
                return;
            }
            // ICMP errors for earlier answers (ECONNREFUSED) and the like: the socket is fine.
            Err(error) => {
                debug!(%error, "receiving a UDP query");
                continue;
            }
        };
        if !answerable(src) {
            debug!(%src, "dropping a datagram from an address that cannot be answered");
            continue;
        }
        let mut answer = Box::pin(answer(buf[..len].to_vec(), src, socket.clone(), handler.clone()));
        // Answer in place; an answer that has to wait (upstream, send buffer) goes on by itself.
        if std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx).is_pending())).await {
            tokio::spawn(answer);
        }
    }
}

/// Answers one datagram: nothing for a runt or a response, FORMERR for what does not parse, else
/// the handler's answer.
async fn answer(bytes: Vec<u8>, src: SocketAddr, socket: Arc<UdpSocket>, handler: Arc<Handler>) {
    let responder = Responder { socket, dst: src };
    let mut decoder = BinDecoder::new(&bytes);
    let Ok(header) = Header::read(&mut decoder) else { return };
    if header.metadata.message_type == MessageType::Response {
        return;
    }
    let request = match Request::from_bytes(bytes, src, Protocol::Udp) {
        Ok(request) => request,
        Err(error) => {
            debug!(%error, %src, id = header.metadata.id, "unparsable query: FORMERR");
            let mut decoder = BinDecoder::new(&[]);
            let Ok(queries) = Queries::read(&mut decoder, 0) else { return };
            let response =
                MessageResponseBuilder::new(&queries, None).error_msg(&header.metadata, ResponseCode::FormErr);
            let _ = responder.clone().send_response(response).await;
            return;
        }
    };
    handler.handle_request::<_, TokioTime>(&request, responder).await;
}

/// Whether an answer can be sent to `src` (as hickory-server checks).
fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast(),
            IpAddr::V6(v6) => !v6.is_unspecified(),
        }
}

/// Encodes an answer and sends it from the socket the query came in on.
#[derive(Clone)]
struct Responder {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for Responder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, bytes) = encode(response)?;
        self.socket.send_to(&bytes, self.dst).await?;
        Ok(info)
    }
}

/// The answer as one datagram: no larger than the client's EDNS buffer, or 512 bytes without EDNS
/// (RFC 1035 §4.2.1); what does not fit is left out and the TC bit set. An answer that cannot be
/// encoded becomes SERVFAIL.
fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> Result<(ResponseInfo, Vec<u8>), NetError> {
    let id = response.metadata().id;
    let max_size = response.edns().map_or(512, |edns| edns.max_payload());
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max_size);
    let error = match response.destructive_emit(&mut encoder) {
        Ok(info) => return Ok((info, bytes)),
        Err(error) => error,
    };
    warn!(%error, id, "cannot encode a DNS answer: SERVFAIL");
    bytes.clear();
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header { metadata, counts: HeaderCounts::default() };
    header.emit(&mut BinEncoder::new(&mut bytes))?;
    Ok((ResponseInfo::from(header), bytes))
}
