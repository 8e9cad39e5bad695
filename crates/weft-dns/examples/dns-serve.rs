//! Serves a synthetic table for the DNS benchmark (bench/dns.sh), and writes the same names as a
//! hosts file so that another server (dnsmasq) can answer them too.
//!
//! `dns-serve SERVICES HOSTS_FILE [LISTEN]`: services `svc-0` … `svc-<SERVICES-1>` in namespace
//! `default`, one healthy instance each at `10.<i/65536>.<i/256%256>.<i%256>`, answered as
//! `svc-<i>.service.consul` and `svc-<i>.default.svc.cluster.local`. Prints `listening <addr>` and
//! serves until killed, on a multi-threaded runtime with one worker per CPU, as `weft control` does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use weft_dns::{DnsConfig, DnsServer, Instance, ServiceEntry, Table};

fn address(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(services), Some(hosts)) = (args.first().and_then(|n| n.parse::<u32>().ok()), args.get(1)) else {
        eprintln!("usage: dns-serve SERVICES HOSTS_FILE [LISTEN (default 127.0.0.1:0)]");
        return ExitCode::from(2);
    };
    let listen: SocketAddr = match args.get(2).map(|l| l.parse()) {
        None => "127.0.0.1:0".parse().expect("constant"),
        Some(Ok(l)) => l,
        Some(Err(e)) => {
            eprintln!("LISTEN {:?}: {e}; give ip:port", args[2]);
            return ExitCode::from(2);
        }
    };
    let mut table = Table { cluster: "bench".into(), ..Default::default() };
    let mut hosts_text = String::new();
    for i in 0..services {
        let name = format!("svc-{i}");
        hosts_text.push_str(&format!("{} {name}.service.consul {name}.default.svc.cluster.local\n", address(i)));
        table.services.push(ServiceEntry {
            name: name.clone(),
            namespace: "default".into(),
            instances: vec![Instance {
                address: address(i),
                port: 8080,
                tags: Vec::new(),
                healthy: true,
                node: name,
                cluster: String::new(),
            }],
            ..Default::default()
        });
    }
    if let Err(e) = std::fs::write(hosts, hosts_text) {
        eprintln!("writing {hosts}: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match DnsServer::start(DnsConfig::new(listen), table).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        println!("listening {}", server.local_addr());
        std::future::pending::<()>().await;
        ExitCode::SUCCESS
    })
}
