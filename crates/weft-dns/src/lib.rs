//! DNS for mesh names, so that unmodified applications find services by name.
//!
//! A [`DnsServer`] listens on one address over UDP and TCP and answers Kubernetes-style and
//! Consul-style names from a [`Table`] of services, which the registry watcher replaces whole
//! with [`DnsServer::set_table`] (an atomic swap: the next query sees the new table). Names it
//! does not know go to an optional upstream resolver.
//!
//! ```text
//!   app ──UDP/TCP──▶ DnsServer ──▶ handler ──▶ Index (ArcSwap, rebuilt by set_table)
//!                                     │
//!                                     └── unknown names ──UDP (TCP if truncated)──▶ upstream
//! ```
//!
//! UDP queries are received by one task per runtime worker thread (at most [`MAX_UDP_TASKS`];
//! [`DnsConfig::udp_tasks`]) sharing one socket, whose receive buffer is
//! [`DnsConfig::udp_receive_buffer`] (4 MiB by default; the kernel caps it at
//! `net.core.rmem_max`). Each task answers a query where it received it and sends the answer
//! itself; only a query that must wait (forwarded upstream) moves to a task of its own. TCP is
//! hickory-server's listener.
//!
//! # Names
//!
//! All names are case-insensitive. `<dc>` is [`Table::cluster`]. Only healthy instances are
//! answered.
//!
//! | name | types | answer |
//! |------|-------|--------|
//! | `<svc>.<ns>.svc.cluster.local` | A, AAAA | addresses of the service's instances |
//! | `_<port>._<proto>.<svc>.<ns>.svc.cluster.local` | SRV | one per instance: priority 1 (2 for another cluster's instance), weight 1, the instance port, target `<node>.<svc>.<ns>.svc.cluster.local.`, with A/AAAA additionals. Any port name is accepted (instances carry no port names) |
//! | `<node>.<svc>.<ns>.svc.cluster.local` | A, AAAA | that instance's address (the SRV targets above) |
//! | `<svc>.service.consul`, `<svc>.service.<dc>.consul` | A, AAAA, SRV | addresses; for SRV as below |
//! | `<tag>.<svc>.service.consul`, `<tag>.<svc>.service.<dc>.consul` | A, AAAA, SRV | only instances carrying the tag |
//! | `_<svc>._tcp.service.consul`, `_<svc>._tcp.service.<dc>.consul` | SRV | RFC 2782: priority 1, weight 1, the instance port, target `<node>.node.<dc>.consul.`, with A/AAAA additionals for the targets. As in Consul, `_<svc>._<tag>` filters by tag |
//! | `<node>.node.<dc>.consul`, `<node>.node.consul` | A, AAAA | addresses of the node's healthy instances |
//! | `<svc>-<cluster>.<ns>.svc.cluster.local` | A, AAAA, SRV | the mirror of one cluster (Linkerd): only that cluster's instances |
//! | `<svc>.<ns>.global`, `<svc>.<ns>.<cluster>.global` | A, AAAA | every cluster's instances; one cluster's |
//! | `[<tag>.]<svc>.service.<dc>.consul`, `_<svc>._tcp.service.<dc>.consul` with `<dc>` a linked cluster | A, AAAA, SRV | that cluster's instances |
//! | `<svc>.<ns>.svc.clusterset.local`, `_<port>._<proto>.<svc>.<ns>.svc.clusterset.local` | A, AAAA, SRV | every cluster's instances (Kubernetes MCS) |
//! | `cluster.local`, `clusterset.local`, `global`, `consul` | SOA | the synthesized zone SOA; other types NODATA |
//!
//! Choices, for the cases the name forms leave open:
//! - **No healthy instance.** A service in the table whose instances are all unhealthy exists
//!   with no records: NOERROR with an empty answer (NODATA) and the zone SOA, for A, AAAA and SRV
//!   alike. Consul answers such a name with no records too. The same holds for a tag nobody
//!   carries and for an address family the service has no instance of.
//! - **Consul names see namespace [`CONSUL_NAMESPACE`] (`"default"`) only**, as Consul's DNS has
//!   no namespace label; services of other namespaces have Kubernetes names only.
//! - **Node names** (`<node>.node.<dc>.consul`) exist while the node backs at least one healthy
//!   instance in that namespace. SRV targets of instances whose node is no valid DNS name are left
//!   out.
//! - **Parents of our names** (`svc.cluster.local`, `<ns>.svc.cluster.local` for a namespace with
//!   services, `service.consul`, `<dc>.consul`, …) are NODATA, not NXDOMAIN (RFC 8020).
//! - **Other record types** for our names are NODATA; zone transfers (AXFR, IXFR) and classes
//!   other than IN are REFUSED.
//! - Answers rotate from one query to the next, so clients that take the first record spread
//!   over the instances. Records carry [`DnsConfig::ttl`]; negative answers carry the zone SOA
//!   whose minimum is the same TTL (RFC 2308).
//!
//! # Names across clusters
//!
//! [`Table::links`] names the linked clusters and whether each link is up; each
//! [`Instance::cluster`] says where it runs; [`ServiceEntry::vips`] carries virtual IPs.
//! - **Spanning names** (`<svc>.<ns>.svc.cluster.local`, `<svc>.<ns>.global`,
//!   `<svc>.<ns>.svc.clusterset.local`) answer every cluster's healthy instances, **this
//!   cluster's first**: rotation turns this cluster's answers among themselves and the others
//!   among themselves, so a first-pick client always gets a local instance while there is one.
//! - **One-cluster names** (`<svc>-<cluster>.<ns>.svc.cluster.local`, `<svc>.<ns>.<cluster>.global`,
//!   `<svc>.service.<dc>.consul`) answer only that cluster's instances. A real service named
//!   `<svc>-<cluster>` wins over the mirror name. `<svc>.service.consul` (no datacenter) stays
//!   this cluster's own, as Consul answers the agent's datacenter only.
//! - **Virtual IPs.** A name whose instances may be in another cluster answers its virtual IP
//!   instead of addresses: a spanning name when the service has instances in another cluster
//!   (whatever their health, so the answer does not flip with it), and a one-cluster name of
//!   another cluster. Names that only this cluster's instances answer keep their addresses. A
//!   name with no healthy instance answers NODATA, VIP or not. SRV for a VIP name (and for
//!   every `clusterset.local` and linked-datacenter SRV) has one record per port the instances
//!   listen on, whose target is the service's own name, with its A/AAAA as additionals.
//! - **A link that is down** (not `active` or `restored`): that cluster's instances leave every
//!   answer, and its one-cluster names answer an empty NOERROR (NODATA), not a stale answer —
//!   `.global` and Consul names of that cluster for any service, mirror names for a service known
//!   here. Unknown clusters and services are NXDOMAIN; a Consul datacenter that is not linked is
//!   forwarded as before.
//!
//! # Names not in the table
//!
//! | name | with [`DnsConfig::upstream`] | without |
//! |------|------------------------------|---------|
//! | in our zones (`cluster.local.`, `clusterset.local.`, `global.`, `consul.`), not in the table | NXDOMAIN | NXDOMAIN |
//! | another Consul datacenter's (`….service.<dc>.consul`, `….node.<dc>.consul`, `<dc>` neither ours nor linked) | forwarded | NXDOMAIN |
//! | outside our zones | forwarded | REFUSED |
//!
//! We are authoritative for our zones: a name there that the table lacks does not exist, and the
//! upstream is never asked (it could otherwise answer for names the mesh does not have). The one
//! exception is a Consul name of another datacenter, which a peer owns and the upstream (a Consul
//! agent, a peer cluster's weft) may know. Forwarded queries go upstream unchanged over UDP; if
//! the upstream does not answer within [`DnsConfig::forward_timeout`] the client gets SERVFAIL.
//! When the answer is truncated and the client asked over TCP, the query is repeated over TCP.
//! Two servers must not name each other as upstream: unknown names would go round between them.
//!
//! # Bad input
//!
//! Packets shorter than a DNS header, and responses sent as queries, are dropped; unparsable
//! queries and queries without exactly one question get FORMERR; opcodes other than QUERY get
//! NOTIMP. Nothing a client sends stops the server. hickory-server, which serves TCP, logs every
//! TCP request at `info` under the `hickory_server` target; filter it there if that is too much.
//! UDP queries are not logged one by one.
#![forbid(unsafe_code)]

mod forward;
mod handler;
mod index;
mod names;
mod server;
mod table;
mod udp;

pub use server::{
    DnsConfig, DnsError, DnsServer, DEFAULT_FORWARD_TIMEOUT, DEFAULT_TCP_IDLE_TIMEOUT, DEFAULT_TTL,
    DEFAULT_UDP_RECEIVE_BUFFER, MAX_UDP_TASKS,
};
pub use table::{Instance, Link, ServiceEntry, Table, VirtualIp, CONSUL_NAMESPACE};
