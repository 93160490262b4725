//! Nodes: what an agent registers and what the control plane records of it.

use std::collections::BTreeMap;

use berth_hostprobe::Inventory;
use serde::{Deserialize, Serialize};

use crate::quantity::{Bytes, MilliCpu};

/// What an agent tells the control plane about its node when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique node name (defaults to the hostname).
    pub name: String,
    /// Where the agent's own API (logs) listens, `host:port`.
    pub address: String,
    /// Allocatable CPU.
    pub cpu: MilliCpu,
    /// Allocatable memory.
    pub memory: Bytes,
    /// Operator-assigned labels.
    pub labels: BTreeMap<String, String>,
    /// The node's hardware, as its agent probed it (or a fixture says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Box<Inventory>>,
    /// The host ports dynamic ports are chosen from on this node (first,
    /// last); `None`: the default 20000-32000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_ports: Option<(u16, u16)>,
}

/// Parses a port range `FIRST-LAST` (1 <= FIRST <= LAST <= 65535).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a port range FIRST-LAST (for example 20000-32000)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// Whether a node takes work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Registered and heartbeating.
    #[default]
    Ready,
    /// Missed its heartbeat deadline.
    Down,
}

impl NodeStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
        }
    }
}

/// A node record in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// What the agent registered.
    pub info: NodeInfo,
    /// Ready or down.
    pub status: NodeStatus,
    /// Drained by an operator: takes no new work.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
    /// Its bridge subnet: the index of its /24 in the cluster's range (`--node-subnets`), given
    /// out by the servers when it first registers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<u32>,
}

/// The range node bridge subnets come from: one /24 per node, 32,768 of
/// them (10.128.0.0/24, 10.128.1.0/24, ...).
pub const NODE_SUBNETS: &str = "10.128.0.0/9";

/// Parses a range of node subnets `a.b.c.d/p` (p from 8 to 24): its base
/// address and how many /24s it holds.
pub fn parse_subnets(range: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{range:?} is not an IPv4 range like 10.128.0.0/9 (prefix 8 to 24)");
    let (ip, p) = range.split_once('/').ok_or_else(bad)?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let p: u32 = p.parse().map_err(|_| bad())?;
    if !(8..=24).contains(&p) {
        return Err(bad());
    }
    let mask = u32::MAX << (32 - p);
    Ok((u32::from(ip) & mask, 1 << (24 - p)))
}

/// The /24 with index `i` of `range` (see [`parse_subnets`]), as
/// `10.x.y.0/24`; none past its end or for a bad range.
pub fn node_subnet_in(range: &str, i: u32) -> Option<String> {
    let (base, count) = parse_subnets(range).ok()?;
    (i < count).then(|| format!("{}/24", std::net::Ipv4Addr::from(base + (i << 8))))
}
