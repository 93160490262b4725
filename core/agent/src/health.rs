//! Health and readiness checks, run by the agent for each running task
//! (the kubelet's and the Nomad client's job): an HTTP GET, a TCP connect
//! or a command inside the container's namespaces, every `interval`,
//! failing after `failures` in a row, failures in the first `grace` not
//! counted. Only transitions are reported.

use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Probe {
    /// GET `path` on `ip:port`: 2xx or 3xx passes.
    Http {
        /// `127.0.0.1` for a host port; the task's bridge address for a
        /// container port (unspecified until it is known).
        ip: std::net::Ipv4Addr,
        /// The port.
        port: u16,
        /// Path, from `/`.
        path: String,
    },
    /// Connect to `ip:port`.
    Tcp {
        /// As for `Http`.
        ip: std::net::Ipv4Addr,
        /// The port.
        port: u16,
    },
    /// Run a command in the container's namespaces: exit 0 passes.
    Exec {
        /// The command and its arguments.
        argv: Vec<String>,
    },
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Http { ip, port, path } if ip.is_loopback() => write!(f, "http :{port}{path}"),
            Probe::Http { ip, port, path } => write!(f, "http {ip}:{port}{path}"),
            Probe::Tcp { ip, port } if ip.is_loopback() => write!(f, "tcp :{port}"),
            Probe::Tcp { ip, port } => write!(f, "tcp {ip}:{port}"),
            Probe::Exec { argv } => write!(f, "exec {}", argv.join(" ")),
        }
    }
}

/// A check with its timing, resolved for one task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckPlan {
    /// What to run.
    pub probe: Probe,
    /// Time between checks.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Failures in the first `grace` after the start do not count.
    pub grace: Duration,
    /// Consecutive failures before the check fails.
    pub failures: u32,
}

impl CheckPlan {
    /// The plan with a container port's address filled in: the task's
    /// bridge address `ip` where the plan left it unspecified.
    pub fn at(&self, ip: Option<std::net::Ipv4Addr>) -> CheckPlan {
        let mut c = self.clone();
        if let (Probe::Http { ip: a, .. } | Probe::Tcp { ip: a, .. }, Some(ip)) = (&mut c.probe, ip)
            && a.is_unspecified()
        {
            *a = ip;
        }
        c
    }
}

/// Runs `probe` once (within `timeout`); `pid` is the container's init
/// for `exec`. `Err` says why it failed.
pub async fn probe_once(probe: &Probe, timeout: Duration, pid: u32) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(probe, pid)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

async fn run(probe: &Probe, pid: u32) -> Result<(), String> {
    match probe {
        Probe::Tcp { ip, port } => TcpStream::connect((*ip, *port))
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Probe::Http { ip, port, path } => http_get(*ip, *port, path).await,
        Probe::Exec { argv } => {
            let status = tokio::process::Command::new("nsenter")
                .args([
                    "--target",
                    &pid.to_string(),
                    "--mount",
                    "--uts",
                    "--ipc",
                    "--net",
                    "--pid",
                    "--",
                ])
                .args(argv)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("running nsenter: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("exited with {status}"))
            }
        }
    }
}

async fn http_get(ip: std::net::Ipv4Addr, port: u16, path: &str) -> Result<(), String> {
    let stream = TcpStream::connect((ip, port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("{ip}:{port}"))
        .header(hyper::header::USER_AGENT, "berth-health")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = send.send_request(req).await.map_err(|e| e.to_string());
    conn.abort();
    let status = res?.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

/// Which check a verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The liveness check (`health`): failing it restarts the container.
    Liveness,
    /// The readiness check (`ready`): it only gates.
    Readiness,
}

/// A check's verdict changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckEvent {
    /// Which check.
    pub which: Which,
    /// Its new verdict.
    pub verdict: Verdict,
    /// Why the last check failed (empty when it passed).
    pub why: String,
}

/// Runs `plan` against the container whose init is `pid` (started at
/// `started`) until the returned task is aborted or `tx` is closed,
/// sending each change of verdict.
pub fn spawn(
    which: Which,
    plan: CheckPlan,
    pid: u32,
    started: Instant,
    tx: tokio::sync::mpsc::UnboundedSender<CheckEvent>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tracker = Tracker::new(&plan, started);
        let mut tick = tokio::time::interval(plan.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let r = probe_once(&plan.probe, plan.timeout, pid).await;
            let why = r.as_ref().err().cloned().unwrap_or_default();
            if let Some(verdict) = tracker.observe(Instant::now(), r.is_ok())
                && tx
                    .send(CheckEvent {
                        which,
                        verdict,
                        why,
                    })
                    .is_err()
            {
                return;
            }
        }
    })
}

/// Where a check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No result counted yet.
    Unknown,
    /// The last check passed.
    Passing,
    /// `failures` in a row failed.
    Failing,
}

/// A check's verdict over time (pure: the caller gives the time).
#[derive(Debug, Clone)]
pub struct Tracker {
    needed: u32,
    grace_until: Instant,
    in_a_row: u32,
    verdict: Verdict,
}

impl Tracker {
    /// A tracker for a container started at `started`.
    pub fn new(plan: &CheckPlan, started: Instant) -> Tracker {
        Tracker {
            needed: plan.failures.max(1),
            grace_until: started + plan.grace,
            in_a_row: 0,
            verdict: Verdict::Unknown,
        }
    }

    /// Counts a result at `now`; returns the new verdict when it changed.
    pub fn observe(&mut self, now: Instant, passed: bool) -> Option<Verdict> {
        let next = if passed {
            self.in_a_row = 0;
            Verdict::Passing
        } else if now < self.grace_until {
            return None;
        } else {
            self.in_a_row += 1;
            if self.in_a_row < self.needed {
                return None;
            }
            Verdict::Failing
        };
        (next != self.verdict).then(|| {
            self.verdict = next;
            next
        })
    }

    /// The verdict so far.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(failures: u32, grace: u64) -> CheckPlan {
        CheckPlan {
            probe: Probe::Tcp {
                ip: std::net::Ipv4Addr::LOCALHOST,
                port: 1,
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            grace: Duration::from_secs(grace),
            failures,
        }
    }

    #[test]
    fn failures_count_after_grace_and_in_a_row() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = Tracker::new(&plan(3, 10), t0);
        // In grace: failures do not count.
        for s in 0..10 {
            assert_eq!(t.observe(at(s), false), None);
        }
        assert_eq!(t.verdict(), Verdict::Unknown);
        assert_eq!(t.observe(at(10), true), Some(Verdict::Passing));
        assert_eq!(t.observe(at(11), false), None);
        assert_eq!(t.observe(at(12), false), None);
        // A pass in between resets the count.
        assert_eq!(t.observe(at(13), true), None);
        assert_eq!(t.observe(at(14), false), None);
        assert_eq!(t.observe(at(15), false), None);
        assert_eq!(t.observe(at(16), false), Some(Verdict::Failing));
        assert_eq!(t.observe(at(17), false), None, "only transitions");
        assert_eq!(t.observe(at(18), true), Some(Verdict::Passing));
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_a_real_listener() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let status = if req.starts_with("GET /ok ") {
                        "200 OK"
                    } else {
                        "503 Busy"
                    };
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                });
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(
            probe_once(
                &Probe::Tcp {
                    ip: std::net::Ipv4Addr::LOCALHOST,
                    port
                },
                t,
                0
            )
            .await,
            Ok(())
        );
        let ok = Probe::Http {
            ip: std::net::Ipv4Addr::LOCALHOST,
            port,
            path: "/ok".into(),
        };
        assert_eq!(probe_once(&ok, t, 0).await, Ok(()));
        let busy = Probe::Http {
            ip: std::net::Ipv4Addr::LOCALHOST,
            port,
            path: "/busy".into(),
        };
        assert_eq!(probe_once(&busy, t, 0).await, Err("HTTP 503".into()));
        // Nothing listens on a port just freed.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(
            probe_once(
                &Probe::Tcp {
                    ip: std::net::Ipv4Addr::LOCALHOST,
                    port: free
                },
                t,
                0
            )
            .await
            .is_err()
        );
    }
}
