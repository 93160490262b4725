//! Node classes: nodes whose every input to a decision is equal except
//! their name, grouped so that a decision runs filters and scorers once
//! per class instead of once per node.
//!
//! Two nodes are in one class when they are of one *kind* (the same
//! capacity, hardware and labels: everything that does not change as
//! tasks come and go, but the name, the `hostname` label and device
//! uuids) and in the same *state* (ready or not, CPU and memory used, and
//! which GPU thousandths, MIG instances, cores, NICs and devices are
//! taken). Kinds are found once, when the [`Cluster`](crate::Cluster) is
//! built; a node's class is found again each time it changes
//! ([`Classes::update`]), by a hash of (kind, state) and a comparison with
//! one member: the cost of a placement is one node's state, not the
//! cluster.
//!
//! Left out of the key on purpose, because only some tasks read them:
//! host ports in use and tasks per group (app) on the node. A filter that
//! reads them for a task says so ([`crate::FilterPlugin::class_pure`]) and
//! runs once per node for that task; the classes split only there.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::NodeState;
use crate::policy::hash::{FxBuild, FxHasher};
use crate::{Free, Need};

/// The attribute that repeats the node's name.
pub const HOSTNAME: &str = "hostname";

/// One class: its members (node indexes, ascending).
#[derive(Debug, Clone, Default)]
pub struct Class {
    /// What every member has free.
    pub free: Free,
    /// Whether the members are ready.
    pub ready: bool,
    hash: u64,
    members: BTreeSet<u32>,
    /// The smallest member (kept, not looked up: decisions read it often).
    first: u32,
    /// Position in [`Classes::live`].
    pos: u32,
    /// Its id (a slot, reused after the class dies).
    id: u32,
    /// Unique to this class among every class of the process, ever: what
    /// is kept about a class's state holds while `birth` is the same.
    birth: u64,
}

/// The next [`Class::birth`].
static NEXT_BIRTH: AtomicU64 = AtomicU64::new(1);

impl Class {
    /// The member that sorts first (the class's representative; the
    /// name-order tie-break picks it among its class).
    pub fn first(&self) -> usize {
        self.first as usize
    }

    /// Members, ascending.
    pub fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.members.iter().map(|&i| i as usize)
    }

    /// The smallest member greater than node `i`.
    pub fn after(&self, i: usize) -> Option<usize> {
        self.members
            .range(i as u32 + 1..)
            .next()
            .map(|&m| m as usize)
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Its id: less than the most classes alive at once, reused after it
    /// dies (see [`Class::birth`]).
    pub fn id(&self) -> usize {
        self.id as usize
    }

    /// A number no other class of this process ever had: with
    /// [`Class::id`], it names this state for as long as the class lives.
    pub fn birth(&self) -> u64 {
        self.birth
    }

    /// Whether it has no nodes (never true of a live class).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// The classes of a cluster's nodes, kept as nodes change.
#[derive(Debug, Clone, Default)]
pub struct Classes {
    /// Kind of each node.
    kind: Vec<u32>,
    /// Class id of each node.
    of: Vec<u32>,
    /// Classes by id; ids of empty ones are in `spare`.
    slots: Vec<Class>,
    spare: Vec<u32>,
    /// Ids of the classes with members.
    live: Vec<u32>,
    /// What each of `live` has free, and whether it is ready, in `live`
    /// order: a decision's first pass reads these packed lines only.
    live_free: Vec<(Free, bool)>,
    /// (kind, state) hash → class ids with that hash.
    index: HashMap<u64, Vec<u32>, FxBuild>,
    /// Kinds found.
    kinds: usize,
    /// Most classes alive at once.
    peak: usize,
}

impl Classes {
    /// The classes of `nodes` (indexes are positions in it).
    pub fn new(nodes: &[NodeState]) -> Classes {
        let mut c = Classes {
            kind: vec![0; nodes.len()],
            of: vec![u32::MAX; nodes.len()],
            ..Default::default()
        };
        let mut kinds: HashMap<u64, Vec<u32>, FxBuild> = HashMap::default();
        for (i, n) in nodes.iter().enumerate() {
            let mut h = FxHasher::default();
            hash_kind(n, &mut h);
            let list = kinds.entry(h.finish()).or_default();
            c.kind[i] = match list.iter().find(|&&r| same_kind(&nodes[r as usize], n)) {
                Some(&r) => c.kind[r as usize],
                None => {
                    list.push(i as u32);
                    c.kinds += 1;
                    c.kinds as u32 - 1
                }
            };
            c.join(nodes, i);
        }
        c
    }

    /// Live classes, in no particular order.
    pub fn live(&self) -> impl ExactSizeIterator<Item = &Class> + '_ {
        self.live.iter().map(|&id| &self.slots[id as usize])
    }

    /// Live classes that `need` does not rule out, in no particular order
    /// (one pass over packed lines; the rest are not touched).
    pub fn meeting(&self, need: Need) -> impl Iterator<Item = &Class> + '_ {
        self.live_free
            .iter()
            .zip(&self.live)
            .filter(move |((free, ready), _)| need.met(*ready, free))
            .map(|(_, &id)| &self.slots[id as usize])
    }

    /// How many classes have nodes.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether there are none (no nodes).
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Most classes alive at once since the cluster was built.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Distinct kinds of node (classes when every node is idle).
    pub fn kinds(&self) -> usize {
        self.kinds
    }

    /// The class of node `i`.
    pub fn of(&self, i: usize) -> &Class {
        &self.slots[self.of[i] as usize]
    }

    /// Node `i` changed (took or released resources, became ready or not):
    /// it moves to the class of its new state.
    pub fn update(&mut self, nodes: &[NodeState], i: usize) {
        self.leave(i);
        self.join(nodes, i);
    }

    fn state_hash(&self, n: &NodeState, i: usize) -> u64 {
        let mut h = FxHasher::default();
        h.write_u32(self.kind[i]);
        hash_state(n, &mut h);
        h.finish()
    }

    fn join(&mut self, nodes: &[NodeState], i: usize) {
        let n = &nodes[i];
        let hash = self.state_hash(n, i);
        let kind = self.kind[i];
        let found = self.index.get(&hash).and_then(|ids| {
            ids.iter().copied().find(|&id| {
                let r = self.slots[id as usize].first();
                self.kind[r] == kind && same_state(&nodes[r], n)
            })
        });
        let id = match found {
            Some(id) => id,
            None => {
                let id = self.spare.pop().unwrap_or_else(|| {
                    self.slots.push(Class::default());
                    self.slots.len() as u32 - 1
                });
                let slot = &mut self.slots[id as usize];
                slot.id = id;
                slot.birth = NEXT_BIRTH.fetch_add(1, Ordering::Relaxed);
                slot.hash = hash;
                slot.free = n.free;
                slot.ready = n.ready;
                slot.pos = self.live.len() as u32;
                self.live.push(id);
                self.live_free.push((n.free, n.ready));
                self.peak = self.peak.max(self.live.len());
                self.index.entry(hash).or_default().push(id);
                id
            }
        };
        let slot = &mut self.slots[id as usize];
        if slot.members.is_empty() || (i as u32) < slot.first {
            slot.first = i as u32;
        }
        slot.members.insert(i as u32);
        self.of[i] = id;
    }

    fn leave(&mut self, i: usize) {
        let id = self.of[i];
        let slot = &mut self.slots[id as usize];
        slot.members.remove(&(i as u32));
        if let Some(&first) = slot.members.first() {
            slot.first = first;
            return;
        }
        let (hash, pos) = (slot.hash, slot.pos as usize);
        self.live.swap_remove(pos);
        self.live_free.swap_remove(pos);
        if let Some(&moved) = self.live.get(pos) {
            self.slots[moved as usize].pos = pos as u32;
        }
        if let Some(ids) = self.index.get_mut(&hash) {
            ids.retain(|&x| x != id);
            if ids.is_empty() {
                self.index.remove(&hash);
            }
        }
        self.spare.push(id);
    }
}

/// Feeds a node's kind into `h` (see [`same_kind`]).
fn hash_kind(n: &NodeState, h: &mut impl Hasher) {
    (n.cpu_capacity, n.mem_capacity, n.dynamic_ports).hash(h);
    for (k, v) in n.attributes.iter().filter(|(k, _)| *k != HOSTNAME) {
        (k, v).hash(h);
    }
    for g in &n.gpus {
        (
            g.index,
            &g.model,
            g.memory_bytes,
            g.numa,
            &g.switch,
            &g.nvlinks,
        )
            .hash(h);
        for m in &g.mig {
            m.profile.hash(h);
        }
    }
    for c in &n.cores {
        (c.id, c.numa, &c.pus).hash(h);
    }
    for x in &n.nics {
        (&x.name, x.speed_mbps, x.rdma, x.up, x.numa, &x.switch).hash(h);
    }
    for d in &n.devices {
        (&d.kind, &d.qualified, d.numa).hash(h);
    }
}

/// Whether two nodes are of one kind: equal in everything that does not
/// change with allocations, but their name, `hostname` label and device
/// uuids.
pub fn same_kind(a: &NodeState, b: &NodeState) -> bool {
    fn attrs(n: &NodeState) -> impl Iterator<Item = (&String, &String)> {
        n.attributes.iter().filter(|(k, _)| *k != HOSTNAME)
    }
    a.cpu_capacity == b.cpu_capacity
        && a.mem_capacity == b.mem_capacity
        && a.dynamic_ports == b.dynamic_ports
        && a.gpus.len() == b.gpus.len()
        && a.gpus.iter().zip(&b.gpus).all(|(x, y)| {
            x.index == y.index
                && x.model == y.model
                && x.memory_bytes == y.memory_bytes
                && x.numa == y.numa
                && x.switch == y.switch
                && x.nvlinks == y.nvlinks
                && x.mig.len() == y.mig.len()
                && x.mig
                    .iter()
                    .zip(&y.mig)
                    .all(|(m, n)| m.profile == n.profile)
        })
        && a.cores.len() == b.cores.len()
        && a.cores
            .iter()
            .zip(&b.cores)
            .all(|(x, y)| x.id == y.id && x.numa == y.numa && x.pus == y.pus)
        && a.nics.len() == b.nics.len()
        && a.nics.iter().zip(&b.nics).all(|(x, y)| {
            x.name == y.name
                && x.speed_mbps == y.speed_mbps
                && x.rdma == y.rdma
                && x.up == y.up
                && x.numa == y.numa
                && x.switch == y.switch
        })
        && a.devices.len() == b.devices.len()
        && a.devices
            .iter()
            .zip(&b.devices)
            .all(|(x, y)| x.kind == y.kind && x.qualified == y.qualified && x.numa == y.numa)
        && attrs(a).eq(attrs(b))
}

/// Feeds a node's state into `h` (see [`same_state`]).
fn hash_state(n: &NodeState, h: &mut impl Hasher) {
    (n.ready, n.cpu_used, n.mem_used).hash(h);
    for g in &n.gpus {
        h.write_u32(g.milli_used);
        for m in &g.mig {
            h.write_u8(u8::from(m.taken));
        }
    }
    // Taken flags, 64 to a word (nodes of one kind have as many).
    let taken = n
        .cores
        .iter()
        .map(|c| c.taken)
        .chain(n.nics.iter().map(|x| x.taken))
        .chain(n.devices.iter().map(|d| d.taken));
    let (mut bits, mut k) = (0u64, 0);
    for t in taken {
        bits = bits << 1 | u64::from(t);
        k += 1;
        if k == 64 {
            h.write_u64(bits);
            (bits, k) = (0, 0);
        }
    }
    h.write_u64(bits);
}

/// Whether two nodes of one kind are in the same state: ready alike, the
/// same CPU and memory used, the same thousandths used of each GPU, and
/// the same MIG instances, cores, NICs and devices taken.
pub fn same_state(a: &NodeState, b: &NodeState) -> bool {
    a.ready == b.ready
        && a.cpu_used == b.cpu_used
        && a.mem_used == b.mem_used
        && a.gpus.len() == b.gpus.len()
        && a.gpus.iter().zip(&b.gpus).all(|(x, y)| {
            x.milli_used == y.milli_used
                && x.mig.len() == y.mig.len()
                && x.mig.iter().zip(&y.mig).all(|(m, n)| m.taken == n.taken)
        })
        && a.cores.len() == b.cores.len()
        && a.cores
            .iter()
            .zip(&b.cores)
            .all(|(x, y)| x.taken == y.taken)
        && a.nics.len() == b.nics.len()
        && a.nics.iter().zip(&b.nics).all(|(x, y)| x.taken == y.taken)
        && a.devices.len() == b.devices.len()
        && a.devices
            .iter()
            .zip(&b.devices)
            .all(|(x, y)| x.taken == y.taken)
}
