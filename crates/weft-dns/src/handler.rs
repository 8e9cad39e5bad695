//! One request in, one response out: names in the table from the index, other names upstream.
//!
//! | name                                   | upstream set      | no upstream |
//! |----------------------------------------|-------------------|-------------|
//! | in the table (even with no healthy instance) | answered here | answered here |
//! | in our zones, not in the table         | NXDOMAIN          | NXDOMAIN    |
//! | another Consul datacenter's, not linked (`*.service.<dc>.consul`) | forwarded | NXDOMAIN |
//! | outside our zones                      | forwarded         | REFUSED     |
//!
//! hickory-server owns the sockets, framing, truncation and FORMERR for unparsable messages; this
//! is the `RequestHandler` it calls with each parsed request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::{debug, warn};

use crate::forward::Forwarder;
use crate::index::{Index, Resolution};
use crate::names::Zone;

/// The EDNS version we speak (RFC 6891).
const EDNS_VERSION: u8 = 0;

pub(crate) struct Handler {
    /// The current table; swapped whole by `DnsServer::set_table`.
    pub(crate) index: Arc<ArcSwap<Index>>,
    /// `None`: names outside our zones are REFUSED.
    pub(crate) forwarder: Option<Forwarder>,
    /// Turns the order of answers from one query to the next (round robin for first-pick clients).
    pub(crate) rotation: AtomicUsize,
}

/// The handler shared between the UDP tasks (`udp.rs`) and hickory-server's TCP listener.
pub(crate) struct Shared(pub(crate) Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for Shared {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response_handle: R) -> ResponseInfo {
        self.0.handle_request::<R, T>(request, response_handle).await
    }
}

/// What to send back, before it is encoded.
struct Reply {
    metadata: Metadata,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn error(request: &Request, code: ResponseCode) -> Self {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = code;
        Reply { metadata, answers: Vec::new(), authorities: Vec::new(), additionals: Vec::new() }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let response_edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(EDNS_VERSION);
            edns
        });
        let reply = self.reply(request).await;
        let metadata = reply.metadata;
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &response_edns {
            builder.edns(edns);
        }
        let response =
            builder.build(metadata, reply.answers.iter(), reply.authorities.iter(), [], reply.additionals.iter());
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                warn!(%error, src = %request.src(), "cannot send DNS response");
                let mut metadata = metadata;
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

impl Handler {
    async fn reply(&self, request: &Request) -> Reply {
        if request.edns.as_ref().is_some_and(|e| e.version() > EDNS_VERSION) {
            return Reply::error(request, ResponseCode::BADVERS);
        }
        if request.metadata.op_code != OpCode::Query {
            return Reply::error(request, ResponseCode::NotImp);
        }
        // Exactly one question, as every resolver sends.
        let Ok(info) = request.request_info() else {
            return Reply::error(request, ResponseCode::FormErr);
        };
        let query = info.query;
        let qname = Name::from(query.name());
        let qtype = query.query_type();
        let index = self.index.load();
        let resolution = index.resolve(&qname, qtype);
        let ours = !matches!(resolution, Resolution::Outside);
        if ours && (query.query_class() != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR)) {
            return Reply::error(request, ResponseCode::Refused);
        }

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = self.forwarder.is_some();
        match resolution {
            Resolution::Found { zone, mut answers, additionals, lead } => {
                // This cluster's answers stay first; each group turns on its own.
                let turn = self.rotation.fetch_add(1, Ordering::Relaxed);
                let lead = lead.min(answers.len());
                let (local, remote) = answers.split_at_mut(lead);
                for group in [local, remote] {
                    if !group.is_empty() {
                        group.rotate_left(turn % group.len());
                    }
                }
                // NODATA carries the SOA so that resolvers cache the absence (RFC 2308).
                let authorities = if answers.is_empty() { vec![index.soa(zone)] } else { Vec::new() };
                Reply { metadata, answers, authorities, additionals }
            }
            // A peer datacenter's name, perhaps known upstream (a Consul agent, a peer weft).
            Resolution::OtherDatacenter if self.forwarder.is_some() => self.forward(request).await,
            Resolution::OtherDatacenter => {
                metadata.response_code = ResponseCode::NXDomain;
                let authorities = vec![index.soa(Zone::Consul)];
                Reply { metadata, answers: Vec::new(), authorities, additionals: Vec::new() }
            }
            // We are authoritative for our zones: a name the table lacks does not exist, upstream
            // or not. Forwarding it would let the upstream invent mesh names.
            Resolution::NxDomain { zone } => {
                metadata.response_code = ResponseCode::NXDomain;
                Reply { metadata, answers: Vec::new(), authorities: vec![index.soa(zone)], additionals: Vec::new() }
            }
            Resolution::Outside => self.forward(request).await,
        }
    }

    async fn forward(&self, request: &Request) -> Reply {
        let Some(forwarder) = &self.forwarder else {
            debug!(query = ?request.queries.queries(), "outside our zones and no upstream: REFUSED");
            return Reply::error(request, ResponseCode::Refused);
        };
        let on_tcp = request.protocol() == Protocol::Tcp;
        match forwarder.forward(request.as_slice(), request.metadata.id, on_tcp).await {
            Ok(upstream) => relay(request, upstream),
            Err(error) => {
                warn!(%error, "forwarding failed: SERVFAIL");
                let mut reply = Reply::error(request, ResponseCode::ServFail);
                reply.metadata.recursion_available = true;
                reply
            }
        }
    }
}

/// The upstream's answer, re-encoded for our client (EDNS and size limits are ours).
fn relay(request: &Request, upstream: Message) -> Reply {
    let from = upstream.metadata;
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = from.response_code;
    metadata.authoritative = from.authoritative;
    metadata.truncation = from.truncation;
    metadata.recursion_available = from.recursion_available;
    metadata.authentic_data = from.authentic_data;
    Reply { metadata, answers: upstream.answers, authorities: upstream.authorities, additionals: upstream.additionals }
}
