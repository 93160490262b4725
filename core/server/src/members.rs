//! The replicated control plane as clients see it: who leads, answers that
//! point at the leader, linearizable reads, and the `Membership` service
//! (members, join, leave, transfer leadership).

use berth_proto as pb;
use berth_proto::membership_server::Membership;
use berth_proto::servers::{STALE_HEADER, not_leader};
use berth_store::{Command, Envelope, RaftStatus, Store, StoreError};
use raft::eraftpb::{ConfChange, ConfChangeType};
use tonic::{Request, Response, Status};

use crate::api::Api;

impl Api {
    /// The client address of the leader this server knows, if any.
    pub(crate) fn leader_address(&self) -> Option<String> {
        let leader = self.store.leader();
        (leader != 0)
            .then(|| self.store.read().members.get(&leader).cloned())
            .flatten()
    }

    /// "Not the leader", naming the leader's address when known.
    pub(crate) fn not_leader(&self) -> Status {
        not_leader(self.leader_address().as_deref())
    }

    /// A store error as the client should see it: anything a retry on the
    /// leader (or later) can fix is `UNAVAILABLE`.
    pub(crate) fn store_status(&self, e: StoreError) -> Status {
        match e {
            StoreError::NotLeader(_) => self.not_leader(),
            StoreError::Timeout => Status::unavailable(format!("{e}; retry")),
            StoreError::Closed => Status::unavailable("the server is shutting down"),
            other => Status::internal(other.to_string()),
        }
    }

    /// Makes a read linearizable (raft ReadIndex, confirmed by a quorum)
    /// unless the caller asked for a stale read.
    pub(crate) async fn barrier<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if req.metadata().contains_key(STALE_HEADER) {
            return Ok(());
        }
        self.store
            .read_barrier()
            .await
            .map(|_| ())
            .map_err(|e| self.store_status(e))
    }

    async fn raft_status(&self) -> Result<RaftStatus, Status> {
        self.store.status().await.map_err(|e| self.store_status(e))
    }

    async fn members_response(&self) -> Result<pb::MembersResponse, Status> {
        let st: RaftStatus = self.raft_status().await?;
        let book = self.store.read().members.clone();
        let members = st
            .voters
            .iter()
            .map(|id| pb::Member {
                id: *id,
                address: book.get(id).cloned().unwrap_or_default(),
                leader: *id == st.leader,
                matched: st.matched.get(id).copied().unwrap_or(0),
            })
            .collect();
        Ok(pb::MembersResponse {
            members,
            leader: st.leader,
            term: st.term,
            commit: st.commit,
            applied: st.applied,
            id: st.id,
            role: st.role.to_string(),
            snapshot: st.snapshot,
            snapshot_bytes: st.snapshot_bytes,
        })
    }

    async fn change(&self, cc: ConfChange) -> Result<Response<pb::MembersResponse>, Status> {
        if !self.store.is_leader() {
            return Err(self.not_leader());
        }
        self.store
            .change_membership(cc)
            .await
            .map_err(|e| match e {
                StoreError::Raft(why) => Status::failed_precondition(why),
                other => self.store_status(other),
            })?;
        Ok(Response::new(self.members_response().await?))
    }

    fn member_id(&self, id: u64, address: &str) -> Result<u64, Status> {
        if id != 0 {
            return Ok(id);
        }
        let book = self.store.read().members.clone();
        book.iter()
            .find(|(_, a)| a.as_str() == address)
            .map(|(id, _)| *id)
            .ok_or_else(|| Status::not_found(format!("no server at {address:?}")))
    }
}

#[tonic::async_trait]
impl Membership for Api {
    async fn audit(&self, req: Request<pb::AuditBatch>) -> Result<Response<pb::Ack>, Status> {
        let entries: Vec<berth_store::acl::AuditEntry> = req
            .into_inner()
            .entries
            .into_iter()
            .map(|e| berth_store::acl::AuditEntry {
                at_ms: e.at_ms,
                who: e.who,
                action: e.action,
                target: e.target,
                outcome: e.outcome,
            })
            .collect();
        if !self.store.is_leader() {
            return Err(self.not_leader());
        }
        self.commit(
            None,
            berth_store::Command::Acl(berth_store::acl::AclCommand::Audit { entries }),
        )
        .await?;
        Ok(Response::new(pb::Ack {}))
    }
    async fn members(
        &self,
        _: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        Ok(Response::new(self.members_response().await?))
    }

    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        let r = req.into_inner();
        if r.id == 0 {
            return Err(Status::invalid_argument("id: must be non-zero"));
        }
        if r.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "address: {:?} is not host:port",
                r.address
            )));
        }
        let st = self.raft_status().await?;
        // Joining again (a retry, or a restart with the same data) is a no-op.
        if st.voters.contains(&r.id) {
            return Ok(Response::new(self.members_response().await?));
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = r.id;
        cc.context = r.address.into_bytes().into();
        self.change(cc).await
    }

    async fn leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        let r = req.into_inner();
        let id = self.member_id(r.id, &r.address)?;
        let st = self.raft_status().await?;
        if !st.voters.contains(&id) {
            return Err(Status::not_found(format!("server {id} is not a member")));
        }
        if st.voters.len() == 1 {
            return Err(Status::failed_precondition(
                "the last server cannot leave its cluster",
            ));
        }
        if id == st.id && st.leader == st.id {
            return Err(Status::failed_precondition(
                "this server leads: transfer leadership first (berth server transfer-leader)",
            ));
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::RemoveNode);
        cc.node_id = id;
        self.change(cc).await
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        if !self.store.is_leader() {
            return Err(self.not_leader());
        }
        let st = self.raft_status().await?;
        let want = req.into_inner().id;
        let to = if want != 0 {
            if !st.voters.contains(&want) {
                return Err(Status::not_found(format!("server {want} is not a member")));
            }
            want
        } else {
            st.matched
                .iter()
                .filter(|(id, _)| **id != st.id)
                .max_by_key(|(_, m)| **m)
                .map(|(id, _)| *id)
                .ok_or_else(|| Status::failed_precondition("no other server to lead"))?
        };
        if to != st.id {
            self.store
                .transfer_leader(to)
                .await
                .map_err(|e| self.store_status(e))?;
            let mut role = self.store.role();
            let moved = role.wait_for(|(_, leader)| *leader == to);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), moved).await;
        }
        Ok(Response::new(self.members_response().await?))
    }
}

/// On the leader: records this server's client address in the replicated
/// membership when it is missing or changed (the first server of a
/// cluster, or one that moved).
pub(crate) async fn advertise(store: Store, address: String) {
    let mut role = store.role();
    loop {
        let missing = store.read().members.get(&store.id()) != Some(&address);
        if store.is_leader() && missing {
            let cmd = Command::SetMember {
                id: store.id(),
                address: address.clone(),
            };
            let env = Envelope {
                at_ms: 0,
                request_id: None,
                command: cmd,
            };
            if let Err(e) = store.propose(env).await {
                tracing::debug!(error = %e, "recording this server's address failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            continue;
        }
        if role.changed().await.is_err() {
            return;
        }
    }
}
