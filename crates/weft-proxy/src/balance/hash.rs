//! Hash keys of the consistent-hashing balancers (from a header, a cookie, the source IP or a
//! query parameter), the stable hash they are taken with, and the per-thread random numbers of
//! the randomised balancers.
//!
//! The hash is FNV-1a followed by MurmurHash3's 64-bit finaliser: stable across builds and
//! processes (so every proxy puts a key on the same endpoint), unlike `DefaultHasher`.

use http::header::{HeaderName, HeaderValue, COOKIE};
use http::Request;
use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use weft_api::backend_policy::HashOn as HashOnConfig;

/// FNV-1a over `bytes` (from a seeded basis), then fmix64.
pub fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish() | 1);
}

/// A uniform u64 from a per-thread xorshift64* (no lock, no shared state).
pub fn random() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// Where a request's hash key comes from, compiled from the policy.
#[derive(Clone, Debug)]
pub enum HashOn {
    Header(HeaderName),
    Cookie { name: String, max_age: u64, path: String },
    SourceIp,
    Query(String),
}

impl HashOn {
    pub fn from_config(h: &HashOnConfig) -> Option<HashOn> {
        if let Some(name) = &h.header {
            return HeaderName::try_from(name.as_str()).ok().map(HashOn::Header);
        }
        if let Some(c) = &h.cookie {
            return Some(HashOn::Cookie {
                name: c.name.clone(),
                max_age: std::time::Duration::from(c.ttl).as_secs(),
                path: c.path.clone().unwrap_or_else(|| "/".into()),
            });
        }
        if h.source_ip {
            return Some(HashOn::SourceIp);
        }
        h.query_parameter.clone().map(HashOn::Query)
    }
}

/// A request's hash key, and the cookie to set on its response when the key is a cookie the
/// request did not carry.
#[derive(Debug, Default)]
pub struct RequestKey {
    pub hash: Option<u64>,
    pub set_cookie: Option<HeaderValue>,
}

fn cookie<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers().get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

fn query<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// The `sourceIP` key of a request or TCP connection from `ip`.
pub fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash64(&v4.octets(), 0),
        IpAddr::V6(v6) => hash64(&v6.octets(), 0),
    }
}

/// The key of `req` (from the app at `client`). A missing header or query parameter gives no
/// key (the balancer then spreads the request at random); a missing cookie gets a new random
/// value, set on the response so the client's next requests keep their endpoint.
pub fn key_of<B>(how: &HashOn, req: &Request<B>, client: Option<IpAddr>) -> RequestKey {
    let hash = |b: &[u8]| Some(hash64(b, 0));
    match how {
        HashOn::Header(h) => {
            RequestKey { hash: req.headers().get(h).and_then(|v| hash(v.as_bytes())), set_cookie: None }
        }
        HashOn::Query(q) => RequestKey {
            hash: req.uri().query().and_then(|s| query(s, q)).and_then(|v| hash(v.as_bytes())),
            set_cookie: None,
        },
        HashOn::SourceIp => RequestKey { hash: client.map(ip_key), set_cookie: None },
        HashOn::Cookie { name, max_age, path } => match cookie(req, name) {
            Some(v) => RequestKey { hash: hash(v.as_bytes()), set_cookie: None },
            None => {
                let value = format!("{:016x}", random());
                let set = format!("{name}={value}; Max-Age={max_age}; Path={path}; HttpOnly");
                RequestKey { hash: hash(value.as_bytes()), set_cookie: HeaderValue::try_from(set).ok() }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn keys_come_from_where_the_policy_says() {
        let h = HashOn::Header(HeaderName::from_static("x-user"));
        let a = key_of(&h, &req("/", &[("x-user", "alice")]), None).hash;
        assert!(a.is_some());
        assert_eq!(a, key_of(&h, &req("/other", &[("x-user", "alice")]), None).hash, "same value, same key");
        assert_ne!(a, key_of(&h, &req("/", &[("x-user", "bob")]), None).hash);
        assert_eq!(key_of(&h, &req("/", &[]), None).hash, None, "absent: no key");

        let q = HashOn::Query("user".into());
        assert_eq!(key_of(&q, &req("/p?a=1&user=alice", &[]), None).hash, a, "same bytes, same key");
        assert_eq!(key_of(&q, &req("/p?a=1", &[]), None).hash, None);

        let ip = HashOn::SourceIp;
        let k1 = key_of(&ip, &req("/", &[]), Some("10.0.0.1".parse().unwrap())).hash;
        assert!(k1.is_some() && k1 != key_of(&ip, &req("/", &[]), Some("10.0.0.2".parse().unwrap())).hash);

        let c = HashOn::Cookie { name: "sticky".into(), max_age: 60, path: "/".into() };
        let had = key_of(&c, &req("/", &[("cookie", "a=1; sticky=alice")]), None);
        assert_eq!((had.hash, had.set_cookie), (a, None), "a cookie present is the key");
        let fresh = key_of(&c, &req("/", &[("cookie", "a=1")]), None);
        let set = fresh.set_cookie.expect("absent: set");
        let set = set.to_str().unwrap();
        assert!(set.starts_with("sticky=") && set.contains("Max-Age=60") && set.contains("Path=/"), "{set}");
        let value = set.trim_start_matches("sticky=").split(';').next().unwrap();
        let again = key_of(&c, &req("/", &[("cookie", &format!("sticky={value}"))]), None);
        assert_eq!(again.hash, fresh.hash, "the cookie set brings the next request to the same key");
    }

    #[test]
    fn the_hash_is_stable_and_spread() {
        // Pinned: every proxy, every build, the same key on the same point.
        assert_eq!(hash64(b"alice", 0), hash64(b"alice", 0));
        assert_ne!(hash64(b"alice", 0), hash64(b"alice", 1));
        let mut buckets = [0u32; 16];
        for i in 0..16_000u32 {
            buckets[(hash64(&i.to_le_bytes(), 0) >> 60) as usize] += 1;
        }
        // 1000 expected per bucket; σ ≈ 31, so ±150 is ~5σ.
        assert!(buckets.iter().all(|&b| (850..=1150).contains(&b)), "{buckets:?}");
    }
}
