//! Raft traffic between Berth servers, over tonic.
//!
//! [`Peers`] is the store's [`Transport`]: one tokio task per peer owns a
//! bounded queue and a client stream (`Raft.Messages`) to that peer;
//! snapshots go through `Raft.Snapshot` in chunks. A full queue, a refused
//! connection or a broken stream is reported to raft as an unreachable
//! peer (raft then slows down to probing), a snapshot's outcome as its
//! status. [`RaftService`] is the receiving side: it steps every message
//! into the local store.
//!
//! Peer addresses come from the replicated membership
//! ([`berth_store::ClusterState::members`]), plus seeds a joining server
//! learns from the server that admitted it.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use berth_proto as pb;
use berth_proto::raft_client::RaftClient;
use berth_store::{Store, Transport};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// Messages queued per peer before new ones are dropped (and the peer
/// reported unreachable).
const QUEUE: usize = 4096;

/// Snapshot data per chunk.
const CHUNK: usize = 1 << 20;

struct Peer {
    addr: String,
    tx: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
}

struct Inner {
    me: u64,
    local_ip: Option<IpAddr>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    peers: Mutex<HashMap<u64, Peer>>,
    seeds: Mutex<BTreeMap<u64, String>>,
    store: OnceLock<Store>,
}

/// The outgoing side: raft messages to the other servers.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

impl Peers {
    /// Peers of server `me`. Outgoing connections leave from `local_ip`
    /// when given (the address this server listens on), so a firewall can
    /// tell servers apart on one host.
    pub fn new(me: u64, local_ip: Option<IpAddr>) -> Peers {
        Peers::with_tls(me, local_ip, None)
    }

    /// [`Peers::new`] dialing over mutual TLS with `tls` (the server's
    /// certificate; peers must show theirs).
    pub fn with_tls(
        me: u64,
        local_ip: Option<IpAddr>,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Peers {
        Peers {
            inner: Arc::new(Inner {
                me,
                local_ip,
                tls,
                peers: Mutex::new(HashMap::new()),
                seeds: Mutex::new(BTreeMap::new()),
                store: OnceLock::new(),
            }),
        }
    }

    /// Connects the transport to its store (for reports to raft) and
    /// follows the replicated membership from then on.
    pub fn attach(&self, store: Store) {
        if self.inner.store.set(store.clone()).is_err() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut applied = store.applied();
            let mut known = None;
            loop {
                // Most applied entries leave the membership alone: compare
                // before copying it.
                let changed = known.as_ref() != Some(&store.read().members);
                if changed {
                    let members = store.read().members.clone();
                    me.update(&members);
                    known = Some(members);
                }
                if applied.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Addresses to use until the replicated membership names them (a
    /// joining server learns them from the server that admitted it).
    pub fn seed(&self, members: &BTreeMap<u64, String>) {
        self.inner
            .seeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(members.iter().map(|(k, v)| (*k, v.clone())));
        let state = self
            .inner
            .store
            .get()
            .map(|s| s.read().members.clone())
            .unwrap_or_default();
        self.update(&state);
    }

    /// The peer addresses in use.
    pub fn addresses(&self) -> BTreeMap<u64, String> {
        let peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.iter().map(|(k, p)| (*k, p.addr.clone())).collect()
    }

    fn update(&self, members: &BTreeMap<u64, String>) {
        let mut want = self
            .inner
            .seeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        want.extend(members.iter().map(|(k, v)| (*k, v.clone())));
        want.remove(&self.inner.me);
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|id, p| {
            let keep = want.get(id) == Some(&p.addr);
            if !keep {
                p.task.abort();
            }
            keep
        });
        for (id, addr) in want {
            if peers.contains_key(&id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let task = tokio::spawn(run_peer(self.clone(), id, addr.clone(), rx));
            peers.insert(id, Peer { addr, tx, task });
        }
    }

    fn unreachable(&self, id: u64) {
        if let Some(s) = self.inner.store.get() {
            s.report_unreachable(id);
        }
    }

    fn snapshot_done(&self, id: u64, ok: bool) {
        if let Some(s) = self.inner.store.get() {
            s.report_snapshot(id, ok);
        }
    }
}

impl Transport for Peers {
    fn send(&self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        for m in msgs {
            let to = m.to;
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let queued = peers.get(&to).map(|p| p.tx.try_send(m).is_ok());
            if queued != Some(true) {
                tracing::debug!(
                    peer = to,
                    "raft message dropped: peer unknown or its queue is full"
                );
                self.unreachable(to);
                if snapshot {
                    self.snapshot_done(to, false);
                }
            }
        }
    }
}

fn endpoint(
    addr: &str,
    local_ip: Option<IpAddr>,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<Endpoint, String> {
    Ok(berth_proto::servers::endpoint(addr, tls)?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .local_address(local_ip))
}

/// One peer: connect, stream messages, reconnect after failures.
async fn run_peer(peers: Peers, id: u64, addr: String, mut rx: mpsc::Receiver<Message>) {
    let mut pause = Duration::from_millis(50);
    loop {
        let channel = match endpoint(&addr, peers.inner.local_ip, peers.inner.tls.as_ref()) {
            Ok(e) => e.connect().await,
            Err(e) => {
                tracing::error!(peer = id, %addr, error = %e, "bad peer address");
                return;
            }
        };
        let channel = match channel {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(peer = id, %addr, error = %e, "peer unreachable");
                peers.unreachable(id);
                // Drop what queued meanwhile: raft resends what matters.
                while let Ok(m) = rx.try_recv() {
                    if m.get_msg_type() == MessageType::MsgSnapshot {
                        peers.snapshot_done(id, false);
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        pause = Duration::from_millis(50);
        if !stream_to(&peers, id, channel, &mut rx).await {
            return;
        }
        peers.unreachable(id);
    }
}

/// Streams queued messages to one peer until the stream breaks (true) or
/// the queue closes (false).
async fn stream_to(
    peers: &Peers,
    id: u64,
    channel: Channel,
    rx: &mut mpsc::Receiver<Message>,
) -> bool {
    let client = RaftClient::new(channel);
    let (stx, srx) = mpsc::channel::<pb::RaftMessage>(256);
    let mut call = {
        let mut c = client.clone();
        tokio::spawn(async move { c.messages(ReceiverStream::new(srx)).await })
    };
    loop {
        let m = tokio::select! {
            m = rx.recv() => m,
            _ = &mut call => return true,
        };
        let Some(m) = m else { return false };
        if m.get_msg_type() == MessageType::MsgSnapshot {
            let ok = send_snapshot(client.clone(), m).await;
            if let Err(e) = &ok {
                tracing::warn!(peer = id, error = %e, "sending a snapshot failed");
            }
            peers.snapshot_done(id, ok.is_ok());
            continue;
        }
        let bytes = match m.write_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "encoding a raft message failed");
                continue;
            }
        };
        if stx.send(pb::RaftMessage { message: bytes }).await.is_err() {
            return true;
        }
    }
}

async fn send_snapshot(mut client: RaftClient<Channel>, mut m: Message) -> Result<(), Status> {
    let data = m.mut_snapshot().take_data();
    let head = m
        .write_to_bytes()
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut chunks = vec![pb::SnapshotChunk {
        message: head,
        data: Vec::new(),
    }];
    chunks.extend(data.chunks(CHUNK).map(|c| pb::SnapshotChunk {
        message: Vec::new(),
        data: c.to_vec(),
    }));
    let deadline = Duration::from_secs(30);
    tokio::time::timeout(deadline, client.snapshot(tokio_stream::iter(chunks)))
        .await
        .map_err(|_| Status::deadline_exceeded("snapshot transfer took over 30 s"))??;
    Ok(())
}

/// The receiving side: raft messages from the other servers into the
/// local store.
pub struct RaftService {
    store: Store,
}

impl RaftService {
    /// The service for `store`.
    pub fn new(store: Store) -> RaftService {
        RaftService { store }
    }

    /// As a tonic service.
    pub fn server(store: Store) -> pb::raft_server::RaftServer<RaftService> {
        pb::raft_server::RaftServer::new(RaftService::new(store))
            .max_decoding_message_size(64 << 20)
    }
}

fn decode(bytes: &[u8]) -> Result<Message, Status> {
    Message::parse_from_bytes(bytes)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn messages(
        &self,
        req: Request<Streaming<pb::RaftMessage>>,
    ) -> Result<Response<pb::Ack>, Status> {
        let mut s = req.into_inner();
        while let Some(m) = s.message().await? {
            let msg = decode(&m.message)?;
            self.store
                .step(msg)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        Ok(Response::new(pb::Ack {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::Ack>, Status> {
        let mut s = req.into_inner();
        let first = s
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let mut msg = decode(&first.message)?;
        if msg.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Status::invalid_argument("not a snapshot message"));
        }
        let mut data = first.data;
        while let Some(c) = s.message().await? {
            data.extend_from_slice(&c.data);
        }
        msg.mut_snapshot().set_data(data.into());
        self.store
            .step(msg)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::Ack {}))
    }
}
