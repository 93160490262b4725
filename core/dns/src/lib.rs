//! Berth's service discovery: a DNS server, built on `hickory-server`,
//! that an agent runs on its node's bridge address and on loopback. It
//! answers `<app>.<namespace>.berth` (A: the ready instances' addresses),
//! `_<port>._tcp.<app>.<namespace>.berth` (SRV: node and host port per
//! ready instance), `<task>.<namespace>.berth` and `<node>.node.berth`
//! from a [`Table`] the agent keeps in step with the servers' endpoint
//! watch; other names go to the host's resolver.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod table;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::ServerFuture;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
pub use table::{Answer, Endpoint, Kind, Port, Rec, Table};

/// How long answers may be cached: an instance that stops being ready
/// leaves within this.
pub const TTL: u32 = 5;

/// The handler: the table, and where other names go.
pub struct Dns {
    table: Arc<RwLock<Table>>,
    upstream: Option<SocketAddr>,
    /// Rotates the order of answers, so clients that take the first
    /// address spread over the instances.
    turn: std::sync::atomic::AtomicUsize,
}

impl Dns {
    /// Answers from `table`; forwards other names to `upstream`.
    pub fn new(table: Arc<RwLock<Table>>, upstream: Option<SocketAddr>) -> Dns {
        Dns {
            table,
            upstream,
            turn: Default::default(),
        }
    }

    fn answer(&self, q: &Query) -> Answer {
        let kind = match q.query_type() {
            RecordType::A => Kind::A,
            RecordType::SRV => Kind::Srv,
            _ => Kind::Other,
        };
        let t = self.table.read().unwrap_or_else(|p| p.into_inner());
        t.lookup(&q.name().to_ascii(), kind)
    }

    /// Sends the query on to the host's resolver; its answer, or SERVFAIL.
    async fn forward(&self, request: &Request) -> Option<Message> {
        let upstream = self.upstream?;
        let mut m = Message::new();
        m.set_id(request.id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true);
        for q in request.queries() {
            m.add_query(q.original().clone());
        }
        let bytes = m.to_vec().ok()?;
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
        sock.send_to(&bytes, upstream).await.ok()?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Message::from_vec(&buf[..n]).ok()
    }
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(format!("{s}.")).ok()
}

#[async_trait::async_trait]
impl RequestHandler for Dns {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        let fail = |code| {
            let mut h = Header::response_from_request(request.header());
            h.set_response_code(code);
            ResponseInfo::from(h)
        };
        let Some(q) = request.queries().first().map(|q| q.original().clone()) else {
            let msg = builder.error_msg(request.header(), ResponseCode::FormErr);
            return response
                .send_response(msg)
                .await
                .unwrap_or_else(|_| fail(ResponseCode::ServFail));
        };
        match self.answer(&q) {
            Answer::NotOurs => {
                let Some(up) = self.forward(request).await else {
                    let msg = builder.error_msg(request.header(), ResponseCode::ServFail);
                    return response
                        .send_response(msg)
                        .await
                        .unwrap_or_else(|_| fail(ResponseCode::ServFail));
                };
                header.set_response_code(up.response_code());
                header.set_recursion_available(true);
                let msg = builder.build(
                    header,
                    up.answers(),
                    up.name_servers(),
                    std::iter::empty(),
                    up.additionals(),
                );
                response
                    .send_response(msg)
                    .await
                    .unwrap_or_else(|_| fail(ResponseCode::ServFail))
            }
            Answer::NxDomain => {
                let msg = builder.error_msg(request.header(), ResponseCode::NXDomain);
                response
                    .send_response(msg)
                    .await
                    .unwrap_or_else(|_| fail(ResponseCode::ServFail))
            }
            Answer::Records(mut recs) => {
                header.set_authoritative(true);
                if !recs.is_empty() {
                    let n = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let len = recs.len();
                    recs.rotate_left(n % len);
                }
                let owner = q.name().clone();
                let mut answers = Vec::new();
                let mut extra = Vec::new();
                for r in recs {
                    match r {
                        Rec::A(ip) => {
                            answers.push(Record::from_rdata(owner.clone(), TTL, RData::A(A(ip))));
                        }
                        Rec::Srv { target, port, ip } => {
                            let Some(t) = name(&target) else { continue };
                            let srv = SRV::new(0, 10, port, t.clone());
                            answers.push(Record::from_rdata(owner.clone(), TTL, RData::SRV(srv)));
                            extra.push(Record::from_rdata(t, TTL, RData::A(A(ip))));
                        }
                    }
                }
                let msg = builder.build(
                    header,
                    answers.iter(),
                    std::iter::empty(),
                    std::iter::empty(),
                    extra.iter(),
                );
                response
                    .send_response(msg)
                    .await
                    .unwrap_or_else(|_| fail(ResponseCode::ServFail))
            }
        }
    }
}

/// The first nameserver of `/etc/resolv.conf` that is not one of `own`
/// (so a node whose resolver is its own agent does not loop).
pub fn host_resolver(own: &[SocketAddr]) -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .find(|a| !own.contains(a))
}

/// Serves `dns` on UDP and TCP at each of `addrs` until the returned
/// future is dropped; addresses that cannot be bound are skipped with a
/// warning (another agent on this machine may hold loopback's port 53).
pub async fn serve(dns: Dns, addrs: &[SocketAddr]) -> std::io::Result<ServerFuture<Dns>> {
    let mut server = ServerFuture::new(dns);
    let mut bound = 0;
    for a in addrs {
        match tokio::net::UdpSocket::bind(a).await {
            Ok(s) => {
                server.register_socket(s);
                bound += 1;
            }
            Err(e) => {
                tracing::warn!(addr = %a, error = %e, "DNS: cannot listen (UDP)");
                continue;
            }
        }
        match tokio::net::TcpListener::bind(a).await {
            Ok(l) => server.register_listener(l, Duration::from_secs(5)),
            Err(e) => tracing::warn!(addr = %a, error = %e, "DNS: cannot listen (TCP)"),
        }
    }
    if bound == 0 {
        return Err(std::io::Error::other("DNS: no address could be bound"));
    }
    Ok(server)
}
