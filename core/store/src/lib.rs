//! Berth's replicated state: a raft-rs log persisted in redb, driven by a
//! tokio task, applied to a deterministic [`state::ClusterState`].
//!
//! Every change goes through the log, even with one server. Reads come from
//! the applied state; watchers get [`state::Event`]s after each apply.
#![forbid(unsafe_code)]

pub mod acl;
pub mod backup;
pub mod command;
pub mod deploy;
mod driver;
pub mod events;
pub mod job;
pub mod node;
mod nodes;
pub mod plugins;
pub mod registry;
mod scale;
pub mod snapfile;
pub mod state;
pub mod storage;
pub mod tasks;
pub mod volumes;

pub use deploy::DeployCommand;
pub use events::{Batch, Subscription};
pub use job::JobCommand;
pub use node::{NoPeers, RaftStatus, StateGuard, Store, StoreConfig, Transport};
pub use plugins::{Blob, Mode, PluginCommand, PluginRecord, PluginSettings, PluginVersion};
pub use registry::{RegistryCommand, RegistryLogin, Secret};
pub use state::{App, ClusterState, Command, Envelope, Event, MAX_REQUEST_ID, Outcome, Placement};
pub use tasks::TaskTable;
pub use volumes::{VolumeBinding, VolumeCommand};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("storage: {0}")]
    Db(String),
    /// A file could not be read or written.
    #[error("io: {0}")]
    Io(String),
    /// Stored data does not decode or is inconsistent.
    #[error("corrupt raft data: {0}")]
    Corrupt(String),
    /// raft-rs refused an operation.
    #[error("raft: {0}")]
    Raft(String),
    /// This server is not the leader; the id of the one it knows (0 if none).
    #[error("not the leader (leader is server {0})")]
    NotLeader(u64),
    /// A command could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
    /// The proposal did not commit in time.
    #[error("timed out waiting for the proposal to commit")]
    Timeout,
    /// The driver stopped.
    #[error("store is shut down")]
    Closed,
}

macro_rules! db_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
        }
    )*};
}
db_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
