//! Dashboard sessions and one-time login codes, kept in memory on the control plane.
//!
//! ```text
//!   POST /login (token) ──► check token (API rules) ──► Session { token, role, expiry }
//!   GET /login?code=C   ──► one-time code (made for a token by `weft up` or POST /v1/dashboard/login)
//!                                            └──► cookie `weft_session=<random 256 bits>` (HttpOnly, SameSite=Strict)
//! ```
//!
//! A session stands for the token it was opened with: every page and API call the browser makes
//! goes to the API with that token, so the API's roles decide what the session may see and do, and
//! revoking the token ends what the session can do at its next request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts from login (it is not extended by use).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time login code may wait to be used.
pub const CODE_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The most sessions held at once; past it, expired ones are dropped and then the oldest.
pub const MAX_SESSIONS: usize = 10_000;
/// The most unused login codes held at once (the oldest goes first).
pub const MAX_CODES: usize = 1_000;

#[derive(Clone, Debug)]
pub struct Session {
    /// The API token the session stands for.
    pub token: String,
    /// The token's role when the session opened (admin, operator, writer, read), for display.
    pub role: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    codes: Mutex<HashMap<String, (String, Instant)>>,
}

/// 256 random bits, hex.
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    // The system RNG does not fail on Linux (getrandom). Were it to, a guessable session id
    // would hand out the token it stands for: stopping is the only safe answer.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        panic!("the system random number generator failed");
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Sessions {
    /// Opens a session for `token` (already checked by the caller); returns its id.
    pub fn open(&self, token: String, role: String) -> String {
        let id = random_id();
        let now = Instant::now();
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_SESSIONS {
            m.retain(|_, s| s.expires > now);
        }
        if m.len() >= MAX_SESSIONS {
            if let Some(oldest) = m.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(id.clone(), Session { token, role, expires: now + SESSION_LIFETIME });
        id
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                m.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// How many sessions are held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A one-time login code standing for `token`, usable once within [`CODE_LIFETIME`].
    pub fn code_for(&self, token: &str) -> String {
        let code = random_id();
        let now = Instant::now();
        let mut m = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (_, exp)| *exp > now);
        if m.len() >= MAX_CODES {
            if let Some(oldest) = m.iter().min_by_key(|(_, (_, e))| *e).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(code.clone(), (token.to_string(), now + CODE_LIFETIME));
        code
    }

    /// Uses a code up: the token it stands for, if it is known and not expired.
    pub fn redeem(&self, code: &str) -> Option<String> {
        let (token, exp) = self.codes.lock().unwrap_or_else(|p| p.into_inner()).remove(code)?;
        (exp > Instant::now()).then_some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stands_for_its_token_until_closed() {
        let s = Sessions::default();
        let id = s.open("tok".into(), "read".into());
        assert_eq!(id.len(), 64);
        assert_eq!(s.get(&id).unwrap().token, "tok");
        assert!(s.get("not-a-session").is_none());
        s.close(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn a_login_code_works_once() {
        let s = Sessions::default();
        let c = s.code_for("tok");
        assert_eq!(s.redeem(&c).as_deref(), Some("tok"));
        assert_eq!(s.redeem(&c), None);
        assert_eq!(s.redeem("guess"), None);
    }

    #[test]
    fn ids_differ() {
        assert_ne!(random_id(), random_id());
    }
}
