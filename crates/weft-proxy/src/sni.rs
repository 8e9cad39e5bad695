//! The mesh's SNI naming scheme, and reading the SNI from a ClientHello without terminating TLS.
//!
//! Every mTLS connection between proxies names its destination in SNI:
//!
//! ```text
//!   <port>.<service>.<namespace>.<cluster>.weft
//!   8080  .api      .default    .east     .weft
//! ```
//!
//! The destination sidecar reads the port to pick the local app port; an east-west gateway reads
//! service, namespace and cluster to pick a local endpoint, and forwards the still-encrypted bytes.

/// Suffix of every mesh SNI.
pub const SNI_SUFFIX: &str = "weft";

/// The destination named by a mesh SNI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SniTarget {
    pub port: u16,
    pub service: String,
    pub namespace: String,
    pub cluster: String,
}

impl SniTarget {
    pub fn to_sni(&self) -> String {
        format!("{}.{}.{}.{}.{SNI_SUFFIX}", self.port, self.service, self.namespace, self.cluster)
    }

    /// Parses `<port>.<service>.<namespace>.<cluster>.weft`.
    pub fn parse(sni: &str) -> Option<SniTarget> {
        let mut parts = sni.split('.');
        let port = parts.next()?.parse().ok().filter(|p| *p != 0)?;
        let service = parts.next()?.to_string();
        let namespace = parts.next()?.to_string();
        let cluster = parts.next()?.to_string();
        if parts.next()? != SNI_SUFFIX || parts.next().is_some() {
            return None;
        }
        if [&service, &namespace, &cluster].iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(SniTarget { port, service, namespace, cluster })
    }
}

/// Result of looking for the SNI in the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Peek {
    /// The ClientHello is complete; it carries this SNI (or none).
    Sni(Option<String>),
    /// More bytes are needed.
    NeedMore,
    /// Not a TLS ClientHello.
    NotTls,
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| ((b[0] as usize) << 8) | b[1] as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }
}

/// Finds the SNI in the first TLS record. Only the first record is read: ClientHellos from weft
/// proxies (and nearly every client) fit in one.
pub fn peek_sni(buf: &[u8]) -> Peek {
    let mut rec = Cursor { buf };
    let Some(content_type) = rec.u8() else {
        return Peek::NeedMore;
    };
    if content_type != 0x16 {
        return Peek::NotTls;
    }
    let Some(version) = rec.take(2) else {
        return Peek::NeedMore;
    };
    if version[0] != 3 {
        return Peek::NotTls;
    }
    let Some(len) = rec.u16() else {
        return Peek::NeedMore;
    };
    if len > 16 * 1024 + 2048 {
        return Peek::NotTls;
    }
    let Some(body) = rec.take(len) else {
        return Peek::NeedMore;
    };
    parse_client_hello(body).unwrap_or(Peek::NotTls)
}

fn parse_client_hello(body: &[u8]) -> Option<Peek> {
    let mut c = Cursor { buf: body };
    if c.u8()? != 1 {
        return None; // not a ClientHello
    }
    let hs_len = c.u24()?;
    let mut c = Cursor { buf: c.take(hs_len)? };
    c.take(2 + 32)?; // legacy_version, random
    let sid = c.u8()?;
    c.take(sid)?;
    let suites = c.u16()?;
    c.take(suites)?;
    let comp = c.u8()?;
    c.take(comp)?;
    if c.buf.is_empty() {
        return Some(Peek::Sni(None));
    }
    let ext_len = c.u16()?;
    let mut exts = Cursor { buf: c.take(ext_len)? };
    while !exts.buf.is_empty() {
        let ty = exts.u16()?;
        let len = exts.u16()?;
        let data = exts.take(len)?;
        if ty == 0 {
            let mut d = Cursor { buf: data };
            let list_len = d.u16()?;
            let mut list = Cursor { buf: d.take(list_len)? };
            while !list.buf.is_empty() {
                let name_type = list.u8()?;
                let name_len = list.u16()?;
                let name = list.take(name_len)?;
                if name_type == 0 {
                    let name = std::str::from_utf8(name).ok()?;
                    return Some(Peek::Sni(Some(name.to_ascii_lowercase())));
                }
            }
        }
    }
    Some(Peek::Sni(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_round_trip() {
        let t = SniTarget { port: 8080, service: "api".into(), namespace: "default".into(), cluster: "east".into() };
        assert_eq!(t.to_sni(), "8080.api.default.east.weft");
        assert_eq!(SniTarget::parse(&t.to_sni()), Some(t));
        for bad in [
            "",
            "api.default.east.weft",
            "0.a.b.c.weft",
            "1.a.b.c.com",
            "1.a.b.c.weft.x",
            "1..b.c.weft",
            "99999.a.b.c.weft",
        ] {
            assert_eq!(SniTarget::parse(bad), None, "{bad}");
        }
    }

    fn client_hello(sni: &str) -> Vec<u8> {
        // A real ClientHello from rustls.
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
        let mut out = vec![];
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_sni_from_real_client_hello() {
        let hello = client_hello("8080.api.default.east.weft");
        assert_eq!(peek_sni(&hello), Peek::Sni(Some("8080.api.default.east.weft".into())));
        for cut in [0, 1, 5, 40, hello.len() - 1] {
            assert_eq!(peek_sni(&hello[..cut]), Peek::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(peek_sni(b"GET / HTTP/1.1\r\n"), Peek::NotTls);
        let hello = client_hello("a.b.c.d.weft");
        // Corrupt every byte in turn: the parser must answer without panicking.
        for i in 0..hello.len() {
            let mut h = hello.clone();
            h[i] ^= 0xff;
            let _ = peek_sni(&h);
        }
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut buf = vec![0x16, 3, 1, 0, 200];
            for _ in 0..200 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf.push(x as u8);
            }
            let _ = peek_sni(&buf);
        }
    }
}
