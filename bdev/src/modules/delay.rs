//! delay: a pass-through vbdev that holds each I/O for a configured latency
//! before forwarding it to its (claimed) base, to test how initiators cope with
//! slow devices and timeouts.
//!
//! Reads wait the read latencies; writes and every other type but reset wait the
//! write latencies. One I/O in a hundred (per channel and direction) waits the
//! p99 value instead of the average. Each channel keeps four FIFOs (average and
//! p99, read and write); since every entry of one FIFO waited the same latency,
//! each stays sorted by due time, and a per-channel poller forwards the heads
//! that are due. Latencies may change at run time
//! ([`update_latency`]); I/O already queued keeps its due time, and an I/O
//! queued after a latency drop waits behind the older ones, as in SPDK.
//!
//! A reset completes every queued I/O on every channel with
//! [`IoError::Aborted`], then goes to the base.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_reactor::{self as reactor, ticks, Poll, PollerId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::vbdev;
use crate::{
    Bdev, BdevBackend, BdevError, BdevIo, BdevParams, ChannelBackend, Desc, IoChannel, IoError,
    IoType,
};

pub const MODULE: &str = "delay";

/// `bdev_delay_create` parameters. Latencies are in microseconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    pub base_bdev_name: String,
    pub name: String,
    pub avg_read_latency: u64,
    pub p99_read_latency: u64,
    pub avg_write_latency: u64,
    pub p99_write_latency: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
}

/// `bdev_delay_delete` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    pub name: String,
}

/// `bdev_delay_update_latency` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateLatencyParams {
    pub delay_bdev_name: String,
    /// `avg_read`, `p99_read`, `avg_write` or `p99_write`.
    pub latency_type: String,
    pub latency_us: u64,
}

/// The four latencies, in the order of [`LATENCY_TYPES`].
const AVG_READ: usize = 0;
const P99_READ: usize = 1;
const AVG_WRITE: usize = 2;
const P99_WRITE: usize = 3;
const LATENCY_TYPES: [&str; 4] = ["avg_read", "p99_read", "avg_write", "p99_write"];

/// Latencies shared by the bdev and its channels; updates are seen at once.
struct Latencies {
    us: [AtomicU64; 4],
    ticks: [AtomicU64; 4],
}

impl Latencies {
    fn new(us: [u64; 4]) -> Latencies {
        let l = Latencies {
            us: Default::default(),
            ticks: Default::default(),
        };
        for (i, v) in us.into_iter().enumerate() {
            l.set(i, v);
        }
        l
    }

    fn set(&self, i: usize, us: u64) {
        self.us[i].store(us, Ordering::Relaxed);
        self.ticks[i].store(us_to_ticks(us), Ordering::Relaxed);
    }

    fn us(&self, i: usize) -> u64 {
        self.us[i].load(Ordering::Relaxed)
    }
}

/// Rounds up, so an I/O never waits less than asked.
fn us_to_ticks(us: u64) -> u64 {
    let t = (us as u128 * reactor::tick_rate() as u128).div_ceil(1_000_000);
    t.min(u64::MAX as u128) as u64
}

/// Live delay bdevs by name, for `bdev_delay_update_latency`.
static NODES: Mutex<Vec<(String, Arc<Latencies>)>> = Mutex::new(Vec::new());
static NEXT_NODE_ID: AtomicU64 = AtomicU64::new(1);

fn nodes() -> MutexGuard<'static, Vec<(String, Arc<Latencies>)>> {
    NODES.lock().unwrap_or_else(|e| e.into_inner())
}

struct DelayNode {
    /// Names this node's channels in each reactor's [`CHANNELS`].
    id: u64,
    name: String,
    base_name: String,
    /// Taken (closing the base) by `destruct`.
    desc: Mutex<Option<Desc>>,
    latencies: Arc<Latencies>,
    supports: [bool; 8],
}

/// Makes a delay bdev over `p.base_bdev_name`; returns its name.
pub fn create(p: CreateParams) -> Result<String, BdevError> {
    if p.p99_read_latency < p.avg_read_latency || p.p99_write_latency < p.avg_write_latency {
        return Err(BdevError::Invalid(
            "a p99 latency must not be less than the average latency".into(),
        ));
    }
    if p.name.is_empty() {
        return Err(BdevError::Invalid("bdev name must not be empty".into()));
    }
    if crate::get(&p.name).is_some() {
        return Err(BdevError::Exists(format!("bdev {} already exists", p.name)));
    }
    let name = p.name.clone();
    let desc = vbdev::open_claimed(&p.base_bdev_name, MODULE, move || {
        vbdev::unregister_if_module(&name, MODULE)
    })?;
    let base = desc.bdev().clone();
    let latencies = Arc::new(Latencies::new([
        p.avg_read_latency,
        p.p99_read_latency,
        p.avg_write_latency,
        p.p99_write_latency,
    ]));
    let node = DelayNode {
        id: NEXT_NODE_ID.fetch_add(1, Ordering::Relaxed),
        name: p.name.clone(),
        base_name: base.name().to_string(),
        desc: Mutex::new(Some(desc)),
        latencies: latencies.clone(),
        supports: vbdev::supported_types(&base),
    };
    // On failure the node (and with it the base descriptor) is dropped here.
    let bdev = crate::register(
        BdevParams {
            name: p.name,
            uuid: p.uuid,
            product_name: "delay".into(),
            block_size: base.block_size(),
            num_blocks: base.num_blocks(),
        },
        Box::new(node),
    )?;
    nodes().push((bdev.name().to_string(), latencies));
    Ok(bdev.name().to_string())
}

/// Deletes a delay bdev once every user has closed it, releasing its base.
pub fn delete(name: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    super::delete_of_module(name, MODULE, done)
}

/// Changes one latency of a delay bdev; I/O submitted from now on waits the new value.
pub fn update_latency(p: UpdateLatencyParams) -> Result<(), BdevError> {
    let Some(i) = LATENCY_TYPES.iter().position(|&t| t == p.latency_type) else {
        return Err(BdevError::Invalid(format!(
            "unknown latency_type '{}' (use avg_read, p99_read, avg_write or p99_write)",
            p.latency_type
        )));
    };
    let bdev = super::find_of_module(&p.delay_bdev_name, MODULE)?;
    let nodes = nodes();
    let (_, lat) = nodes
        .iter()
        .find(|(n, _)| n == bdev.name())
        .ok_or_else(|| BdevError::NotFound(format!("delay bdev {} is gone", bdev.name())))?;
    lat.set(i, p.latency_us);
    tracing::info!(
        "delay bdev {}: {} latency now {} us",
        bdev.name(),
        p.latency_type,
        p.latency_us
    );
    Ok(())
}

impl DelayNode {
    fn values(&self) -> serde_json::Map<String, Value> {
        let l = &self.latencies;
        let mut m = serde_json::Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("base_bdev_name".into(), json!(self.base_name));
        m.insert("avg_read_latency".into(), json!(l.us(AVG_READ)));
        m.insert("p99_read_latency".into(), json!(l.us(P99_READ)));
        m.insert("avg_write_latency".into(), json!(l.us(AVG_WRITE)));
        m.insert("p99_write_latency".into(), json!(l.us(P99_WRITE)));
        m
    }
}

impl BdevBackend for DelayNode {
    fn module(&self) -> &'static str {
        MODULE
    }

    fn supports(&self, t: IoType) -> bool {
        self.supports[t as usize]
    }

    fn create_channel(&self, bdev: &Arc<Bdev>) -> Box<dyn ChannelBackend> {
        let base = match self.desc.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(d) => d.channel(),
            None => return Box::new(vbdev::RemovedChannel),
        };
        let state = Rc::new(DelayState {
            node_id: self.id,
            base,
            latencies: self.latencies.clone(),
            queues: RefCell::new(std::array::from_fn(|_| VecDeque::with_capacity(256))),
            queued: Cell::new(0),
            reads: Cell::new(0),
            writes: Cell::new(0),
            resets: RefCell::new(Vec::new()),
            next_reset: Cell::new(0),
        });
        let s = state.clone();
        let poller = reactor::register_poller(&format!("delay_{}", bdev.name()), move || s.poll());
        CHANNELS.with(|m| m.borrow_mut().insert(self.id, Rc::downgrade(&state)));
        Box::new(DelayChannel { state, poller })
    }

    fn info(&self) -> Value {
        json!({ "delay": self.values() })
    }

    fn config(&self, bdev: &Bdev) -> Option<Value> {
        let mut params = self.values();
        params.insert("uuid".into(), json!(bdev.uuid().to_string()));
        Some(json!({ "method": "bdev_delay_create", "params": params }))
    }

    fn destruct(&self) {
        nodes().retain(|(_, l)| !Arc::ptr_eq(l, &self.latencies));
        let desc = self.desc.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(desc);
    }
}

thread_local! {
    /// This reactor's delay channels by node id, for resets that sweep every channel.
    static CHANNELS: RefCell<HashMap<u64, Weak<DelayState>>> = RefCell::new(HashMap::new());
}

fn local_state(node_id: u64) -> Option<Rc<DelayState>> {
    CHANNELS
        .try_with(|m| m.borrow().get(&node_id).and_then(Weak::upgrade))
        .ok()
        .flatten()
}

/// One reactor's half of a delay bdev, shared by the channel and its poller.
struct DelayState {
    node_id: u64,
    base: IoChannel,
    latencies: Arc<Latencies>,
    /// Waiting I/O with its due tick, indexed like the latencies.
    queues: RefCell<[VecDeque<(u64, BdevIo)>; 4]>,
    queued: Cell<usize>,
    /// Reads and writes seen, to pick the one in a hundred that waits the p99.
    reads: Cell<u64>,
    writes: Cell<u64>,
    /// Resets waiting for every channel to abort its queue.
    resets: RefCell<Vec<(u64, BdevIo)>>,
    next_reset: Cell<u64>,
}

impl DelayState {
    fn enqueue(&self, io: BdevIo, io_type: IoType) {
        let (counter, avg, p99) = if io_type == IoType::Read {
            (&self.reads, AVG_READ, P99_READ)
        } else {
            (&self.writes, AVG_WRITE, P99_WRITE)
        };
        let n = counter.get() + 1;
        counter.set(n);
        let q = if n % 100 == 0 { p99 } else { avg };
        let wait = self.latencies.ticks[q].load(Ordering::Relaxed);
        let due = ticks().saturating_add(wait);
        self.queues.borrow_mut()[q].push_back((due, io));
        self.queued.set(self.queued.get() + 1);
    }

    /// Forwards the I/O that is due. While anything waits the poller reports busy,
    /// so the reactor does not go to sleep with no timer to wake it.
    fn poll(&self) -> Poll {
        if self.queued.get() == 0 {
            return Poll::Idle;
        }
        let now = ticks();
        for q in 0..4 {
            loop {
                let io = {
                    let mut queues = self.queues.borrow_mut();
                    match queues[q].front() {
                        Some(&(due, _)) if due <= now => queues[q].pop_front().map(|(_, io)| io),
                        _ => None,
                    }
                };
                let Some(io) = io else { break };
                self.queued.set(self.queued.get() - 1);
                io.forward(&self.base, |_| {});
            }
        }
        Poll::Busy
    }

    /// Completes every queued I/O of this channel as aborted.
    fn abort_queued(&self) {
        for q in 0..4 {
            loop {
                let io = self.queues.borrow_mut()[q].pop_front();
                let Some((_, io)) = io else { break };
                self.queued.set(self.queued.get() - 1);
                io.complete(Err(IoError::Aborted));
            }
        }
    }

    /// Sweeps every reactor's channel of this bdev, then sends the reset down.
    fn reset(&self, io: BdevIo) {
        let token = self.next_reset.get();
        self.next_reset.set(token + 1);
        self.resets.borrow_mut().push((token, io));
        let node = self.node_id;
        reactor::for_each_reactor(
            move || {
                if let Some(s) = local_state(node) {
                    s.abort_queued();
                }
            },
            move |_| {
                let Some(s) = local_state(node) else { return };
                let io = {
                    let mut resets = s.resets.borrow_mut();
                    let at = resets.iter().position(|(t, _)| *t == token);
                    at.map(|i| resets.swap_remove(i).1)
                };
                if let Some(io) = io {
                    io.forward(&s.base, |_| {});
                }
            },
        );
    }
}

struct DelayChannel {
    state: Rc<DelayState>,
    poller: PollerId,
}

impl ChannelBackend for DelayChannel {
    fn submit(&mut self, io: BdevIo) {
        let io_type = io.params().io_type;
        if io_type == IoType::Reset {
            self.state.reset(io);
        } else {
            self.state.enqueue(io, io_type);
        }
    }
}

impl Drop for DelayChannel {
    fn drop(&mut self) {
        // Not on a reactor when the thread is exiting: the poller goes with it.
        if reactor::current_index().is_some() {
            reactor::unregister_poller(self.poller);
        }
        let id = self.state.node_id;
        let _ = CHANNELS.try_with(|m| m.borrow_mut().remove(&id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_conversion_rounds_up() {
        let rate = reactor::tick_rate();
        assert_eq!(us_to_ticks(0), 0);
        assert!(us_to_ticks(1) >= 1);
        let t = us_to_ticks(2000) as u128;
        assert!(t * 1_000_000 >= 2000 * rate as u128);
        assert!(us_to_ticks(u64::MAX) >= u64::MAX / 1_000_000);
    }

    #[test]
    fn params_are_spdk_shaped() {
        let p: CreateParams = serde_json::from_str(
            r#"{"base_bdev_name":"Malloc0","name":"Delay0","avg_read_latency":10,
                "p99_read_latency":20,"avg_write_latency":30,"p99_write_latency":40}"#,
        )
        .unwrap();
        assert_eq!(p.p99_write_latency, 40);
        assert!(serde_json::from_str::<DeleteParams>(r#"{"name":"a","x":1}"#).is_err());
        let u: UpdateLatencyParams = serde_json::from_str(
            r#"{"delay_bdev_name":"Delay0","latency_type":"p99_read","latency_us":5}"#,
        )
        .unwrap();
        assert_eq!(u.latency_us, 5);
    }
}
