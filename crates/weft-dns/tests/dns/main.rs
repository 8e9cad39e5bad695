//! Tier-2 tests: real `DnsServer`s on 127.0.0.1:0, queried over real UDP and TCP sockets.

mod answers;
mod clusters;
mod forwarding;
mod load;
mod robustness;
mod support;
