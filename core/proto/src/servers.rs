//! Reaching a replicated control plane: a list of server addresses
//! (`BERTH_ADDR=a,b,c`), the leader found and followed, calls retried.
//!
//! Servers that cannot serve a call (a follower asked to write, a server
//! cut off from the majority) answer `UNAVAILABLE`, naming the leader they
//! know in the [`LEADER_HEADER`] metadata. [`Servers::call`] then moves to
//! that address (or the next one in the list when none is named, or the
//! server cannot be reached) and tries again until its deadline. Writes
//! carry client-generated request ids, which the state machine
//! deduplicates, so a retried write is applied once.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

/// Response metadata naming the leader's client address.
pub const LEADER_HEADER: &str = "berth-leader";

/// Request metadata asking for a stale read (served from the contacted
/// server's applied state without confirming it is current).
pub const STALE_HEADER: &str = "berth-stale";

/// Where the control plane is and which server answered last.
#[derive(Debug)]
pub struct Servers {
    addrs: Mutex<Vec<String>>,
    current: Mutex<usize>,
    channels: Mutex<Vec<(String, Channel)>>,
    /// How long [`Servers::call`] keeps trying.
    pub deadline: Duration,
    /// TLS for every connection (none: plaintext, benchmarks only).
    tls: Option<ClientTlsConfig>,
}

/// `host:port` or a URL, as a URL.
fn uri(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// An endpoint for `addr` (`host:port` or a URL): over TLS with `tls`.
pub fn endpoint(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, String> {
    let bare = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let e = match tls {
        Some(t) => {
            Endpoint::from_shared(format!("https://{bare}")).and_then(|e| e.tls_config(t.clone()))
        }
        None => Endpoint::from_shared(format!("http://{bare}")),
    };
    e.map_err(|e| format!("{addr:?}: {e}"))
}

impl Servers {
    /// Parses a comma-separated list of `host:port` addresses.
    pub fn parse(list: &str) -> Result<Servers, String> {
        let addrs: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            return Err(format!("{list:?}: no server address"));
        }
        for a in &addrs {
            Endpoint::from_shared(uri(a)).map_err(|e| format!("{a:?}: {e}"))?;
        }
        Ok(Servers {
            addrs: Mutex::new(addrs),
            current: Mutex::new(0),
            channels: Mutex::new(Vec::new()),
            deadline: Duration::from_secs(15),
            tls: None,
        })
    }

    /// Every connection over TLS with `tls` (dialing servers).
    pub fn with_tls(mut self, tls: Option<ClientTlsConfig>) -> Servers {
        self.tls = tls;
        self
    }

    /// The address calls go to now.
    pub fn current(&self) -> String {
        let addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        let i = *self.current.lock().unwrap_or_else(|p| p.into_inner());
        addrs[i % addrs.len()].clone()
    }

    /// Every known address.
    pub fn all(&self) -> Vec<String> {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A (lazily connecting) channel to `addr`, reused between calls.
    pub fn channel_to(&self, addr: &str) -> Channel {
        let mut chans = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = chans.iter().find(|(a, _)| a == addr) {
            return c.clone();
        }
        let ch = endpoint(addr, self.tls.as_ref())
            .expect("checked in parse")
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            // Large listings (thousands of tasks, a node's inventory) are
            // not held to HTTP/2's 64 KiB initial window: it grows with
            // the measured bandwidth-delay product.
            .http2_adaptive_window(true)
            .connect_lazy();
        chans.push((addr.to_string(), ch.clone()));
        ch
    }

    /// A channel to the current server.
    pub fn channel(&self) -> Channel {
        self.channel_to(&self.current())
    }

    /// Moves to the leader `st` names, or to the next server. Returns
    /// whether the call is worth retrying.
    pub fn redirect(&self, st: &Status) -> bool {
        if !retryable(st) {
            return false;
        }
        let hint = st
            .metadata()
            .get(LEADER_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && Endpoint::from_shared(uri(s)).is_ok())
            .map(str::to_string);
        let mut addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match hint {
            Some(h) if addrs[*cur % addrs.len()] != h => {
                *cur = match addrs.iter().position(|a| *a == h) {
                    Some(i) => i,
                    None => {
                        addrs.push(h);
                        addrs.len() - 1
                    }
                };
            }
            _ => *cur = (*cur + 1) % addrs.len(),
        }
        true
    }

    /// Runs `f` against the current server, following the leader and
    /// moving past unreachable servers until it succeeds, fails for a
    /// reason retrying cannot fix, or the deadline passes.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        // Calls in a row that reached no server at all: after two rounds of
        // the list nobody is there to wait for (a stopped cluster, a typo),
        // so give up at once rather than at the deadline.
        let mut unanswered = 0;
        loop {
            match f(self.channel()).await {
                Ok(v) => return Ok(v),
                Err(st) => {
                    if answered(&st) {
                        unanswered = 0;
                    } else {
                        unanswered += 1;
                    }
                    let hopeless = unanswered >= 2 * self.all().len();
                    if !self.redirect(&st) || hopeless || start.elapsed() + pause > self.deadline {
                        return Err(st);
                    }
                    // A named leader is tried at once; otherwise wait a little
                    // (an election takes about a second).
                    if st.metadata().get(LEADER_HEADER).is_none() {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(300));
                    }
                }
            }
        }
    }
}

/// Whether another server (or the same one later) may answer `st`.
pub fn retryable(st: &Status) -> bool {
    match st.code() {
        Code::Unavailable => true,
        // Connection resets surface as `Unknown` with a transport error.
        Code::Unknown => st.message().contains("transport") || st.message().contains("connection"),
        _ => false,
    }
}

/// Whether a server answered (as opposed to a connection that failed):
/// Berth's own "unavailable" answers all speak of the leader.
fn answered(st: &Status) -> bool {
    st.code() != Code::Unavailable
        || st.metadata().get(LEADER_HEADER).is_some()
        || st.message().contains("leader")
        || st.message().contains("retry")
        || st.message().contains("shutting down")
}

/// A not-the-leader answer naming the leader's address, if known.
pub fn not_leader(leader: Option<&str>) -> Status {
    let mut st = Status::unavailable(match leader {
        Some(l) => format!("not the leader; the leader is {l}"),
        None => "no leader yet (election in progress or no quorum)".to_string(),
    });
    if let Some(l) = leader
        && let Ok(v) = l.parse()
    {
        st.metadata_mut().insert(LEADER_HEADER, v);
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_follow() {
        assert!(Servers::parse(" , ").is_err());
        assert!(Servers::parse("a b:1").is_err());
        let s = Servers::parse("127.0.0.1:1, 127.0.0.1:2").unwrap();
        assert_eq!(s.current(), "127.0.0.1:1");
        // Named leader: go there (even one not in the list).
        assert!(s.redirect(&not_leader(Some("127.0.0.1:3"))));
        assert_eq!(s.current(), "127.0.0.1:3");
        // No leader named: the next one.
        assert!(s.redirect(&not_leader(None)));
        assert_eq!(s.current(), "127.0.0.1:1");
        // Not retryable.
        assert!(!s.redirect(&Status::invalid_argument("spec.name")));
        assert_eq!(s.current(), "127.0.0.1:1");
    }

    #[tokio::test]
    async fn call_waits_for_an_election_but_not_for_nobody() {
        let mut s = Servers::parse("127.0.0.1:1,127.0.0.1:2").unwrap();
        s.deadline = Duration::from_millis(300);
        // Servers answer "no leader": keep trying until the deadline.
        let mut tries = 0;
        let start = Instant::now();
        let r: Result<(), Status> = s
            .call(|_| {
                tries += 1;
                async { Err(not_leader(None)) }
            })
            .await;
        assert!(r.is_err());
        assert!(tries >= 3 && start.elapsed() >= Duration::from_millis(100));
        // Nobody answers: two rounds of the list, then give up.
        let mut tries = 0;
        let r: Result<(), Status> = s
            .call(|_| {
                tries += 1;
                async { Err(Status::unavailable("tcp connect error")) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(tries, 4);
    }
}

/// This process's token, sent with every call made through [`Bearer`]
/// (a CLI, a hollow-node benchmark: one identity per process).
static TOKEN: std::sync::OnceLock<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
    std::sync::OnceLock::new();

/// Sets the token [`Bearer`] sends; an unusable one (not visible ASCII)
/// is an error naming it.
pub fn set_token(secret: &str) -> Result<(), String> {
    let v = format!("Bearer {}", secret.trim())
        .parse()
        .map_err(|_| "token: not printable ASCII".to_string())?;
    let _ = TOKEN.set(v);
    Ok(())
}

/// This process's `authorization` value (see [`set_token`]), if any.
pub fn token_header() -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    TOKEN.get().cloned()
}

/// Adds this process's token (see [`set_token`]) to `req`.
pub fn authorize<T>(req: &mut tonic::Request<T>) {
    if let Some(t) = TOKEN.get() {
        req.metadata_mut().insert("authorization", t.clone());
    }
}

/// Adds this process's token (see [`set_token`]) to each request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bearer;

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        authorize(&mut req);
        Ok(req)
    }
}

/// A channel whose requests carry this process's token.
pub type Authed = tonic::codegen::InterceptedService<Channel, Bearer>;
