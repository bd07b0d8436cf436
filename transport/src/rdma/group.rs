//! A reactor's RDMA poll group: per device one completion queue shared by all
//! the reactor's queue pairs, one shared receive queue kept full of arena
//! buffers, and a completion channel that wakes the reactor when it sleeps;
//! one RDMA CM event channel for all the reactor's connections; and the
//! poller that reaps completions in batches and routes them by wr_id.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrayvec::ArrayVec;
use ferrite_reactor::mem::{Buffer, SMALL_BUF_SIZE};
use ferrite_reactor::{self as reactor, Poll};
use slab::Slab;

use super::conn::{
    decode_wr_id, key_index, make_key, recv_wr_id, send_wr_id, CloseReason, Conn, ConnInner,
    ConnectFailure, Done, Handler, QpConfig, Recv, State, WcError, WrId, MAX_CONNS_PER_REACTOR,
    MAX_SEND_WR, RESERVED_TAG,
};
use super::device::{device_for, Device};
use super::sys::{
    self, CmEvent, CmEventKind, CmId, ConnParam, Cq, EventChannel, QpCaps, RecvSges, SendWr, Sge,
    Srq, Verbs, WcBatch, WrOp,
};

/// Sizes of each reactor's per-device queues. Set with [`configure`] before
/// the first connection; later changes apply to groups made afterwards.
#[derive(Debug, Clone, Copy)]
pub struct RdmaConfig {
    /// Receives kept posted on each shared receive queue.
    pub srq_depth: u32,
    /// Size of each receive buffer: the largest message a peer may SEND, or
    /// with `recv_header_len` the largest part after the header. At most 8 KiB
    /// uses the arena's small buffers (larger takes 128 KiB ones).
    pub recv_len: usize,
    /// When not 0, each receive has two entries: the first `recv_header_len`
    /// bytes of a message land in one buffer ([`Recv::buf`]) and the rest at
    /// the start of another ([`Recv::data`]), so a message of a header and up
    /// to `recv_len` bytes of data (an iSER header and BHS then 8 KiB of
    /// immediate data; an SRP_CMD then its immediate data) needs no 128 KiB
    /// buffer and its data no copy.
    pub recv_header_len: usize,
    /// Initial completion queue size (grown as queue pairs are added).
    pub cq_depth: u32,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        RdmaConfig {
            srq_depth: 512,
            recv_len: SMALL_BUF_SIZE,
            recv_header_len: 0,
            cq_depth: 2048,
        }
    }
}

static CONFIG: Mutex<Option<RdmaConfig>> = Mutex::new(None);

/// Sets the queue sizes used by reactors that have not made their RDMA
/// queues yet.
pub fn configure(config: RdmaConfig) {
    *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(config);
}

fn config() -> RdmaConfig {
    CONFIG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_default()
}

/// Completions reaped per poll call at most (batches of `WC_BATCH`).
const WC_BATCH: usize = 32;
const MAX_BATCHES: usize = 4;
/// How often CM and async events and drain time-outs are looked at.
const SLOW_PERIOD: Duration = Duration::from_millis(1);
/// A connection whose drain marker has not come back by then is torn down
/// anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// After its drain marker, how long a closing QP waits for
/// IBV_EVENT_QP_LAST_WQE_REACHED before it is destroyed anyway (Debian 12's
/// soft-RoCE never raises the event).
const LAST_WQE_WAIT: Duration = Duration::from_millis(500);
/// How often the ports of connections closed while their port was down are
/// asked whether it is back.
const HELD_CHECK_PERIOD: Duration = Duration::from_millis(100);
/// The period of the timed poller that runs those time-outs while anything
/// is closing or held (a timed poller wakes a sleeping reactor).
const TIMEOUTS_PERIOD: Duration = Duration::from_millis(50);
const RESOLVE_TIMEOUT_MS: i32 = 2000;

/// Port events (error, active) seen on any device: the port state is asked
/// (a system call; on soft-RoCE over a dummy link it also logs a line in the
/// kernel's log) only when this moved or a close is due to an error.
static PORT_EVENTS: AtomicU64 = AtomicU64::new(0);
/// A held connection's port is asked again at least this often regardless.
const HELD_RECHECK: Duration = Duration::from_secs(5);

/// Which reactor owns a QP, for routing async QP events (control path).
static QP_OWNERS: Mutex<Vec<(Verbs, u32, usize)>> = Mutex::new(Vec::new());

/// QP numbers to connection keys, looked up once per receive: a multiplicative
/// hash of the number instead of SipHash (QP numbers are not attacker-chosen).
type QpMap = HashMap<u32, u32, BuildHasherDefault<QpnHasher>>;

#[derive(Default)]
struct QpnHasher(u64);

impl Hasher for QpnHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// What one receive slot holds: the buffer, and the data part's in two-part mode.
type RecvBuffers = (Buffer, Option<Buffer>);

/// One device's queues on one reactor.
pub(crate) struct Queues {
    pub(crate) device: Arc<Device>,
    srq: Srq,
    cq: Cq,
    /// The buffers posted in each receive slot (header and data parts in
    /// two-part mode).
    slots: RefCell<Vec<Option<RecvBuffers>>>,
    /// Slots waiting for buffers.
    empty: RefCell<Vec<u32>>,
    recv_len: usize,
    /// 0, or the length of the first part of a two-part receive.
    header_len: usize,
    /// The CQ asks for an event at its next completion.
    armed: Cell<bool>,
    /// Send-queue entries of the QPs on this CQ (it must hold them all).
    send_entries: Cell<u32>,
    /// QP number to connection key.
    qps: RefCell<QpMap>,
}

impl Queues {
    /// Posts a fresh buffer in every empty receive slot (as many as the pool
    /// gives). Returns whether it posted any.
    fn refill(&self) -> bool {
        let mut empty = self.empty.borrow_mut();
        if empty.is_empty() {
            return false;
        }
        let mut slots = self.slots.borrow_mut();
        let lkey = self.device.lkey();
        let mut batch: ArrayVec<(u64, RecvSges), { sys::MAX_RECV_BATCH }> = ArrayVec::new();
        let mut posted = false;
        loop {
            while !batch.is_full() {
                let Some(&slot) = empty.last() else {
                    break;
                };
                // An empty pool is back-pressure: the slot waits for the next poll.
                let Some(bufs) = self.alloc_recv() else {
                    break;
                };
                empty.pop();
                let mut sges = RecvSges::new();
                match &bufs {
                    (hdr, Some(data)) => {
                        sges.push(self.recv_sge(hdr, self.header_len, lkey));
                        sges.push(self.recv_sge(data, self.recv_len, lkey));
                    }
                    (buf, None) => sges.push(self.recv_sge(buf, self.recv_len, lkey)),
                }
                batch.push((recv_wr_id(slot), sges));
                slots[slot as usize] = Some(bufs);
            }
            if batch.is_empty() {
                break;
            }
            if let Err(e) = self.srq.post_recv(&batch) {
                tracing::error!("RDMA {}: posting receives: {e}", self.device.name());
                for (wr_id, _) in &batch {
                    let slot = *wr_id as u32;
                    slots[slot as usize] = None;
                    empty.push(slot);
                }
                break;
            }
            posted = true;
            let full = batch.is_full();
            batch.clear();
            if !full {
                break;
            }
        }
        posted
    }

    fn alloc_recv(&self) -> Option<RecvBuffers> {
        if self.header_len == 0 {
            return Some((Buffer::alloc(self.recv_len)?, None));
        }
        let hdr = Buffer::alloc(self.header_len)?;
        let data = Buffer::alloc(self.recv_len)?;
        Some((hdr, Some(data)))
    }

    fn recv_sge(&self, buf: &Buffer, len: usize, lkey: u32) -> Sge {
        Sge {
            addr: buf.as_ptr() as u64,
            len: len as u32,
            lkey,
        }
    }

    fn posted_recvs(&self) -> usize {
        self.slots.borrow().len() - self.empty.borrow().len()
    }
}

struct Group {
    reactor: usize,
    channel: EventChannel,
    queues: RefCell<Vec<Rc<Queues>>>,
    conns: RefCell<Slab<Rc<ConnInner>>>,
    /// Per slab index, the generation of its next key.
    generations: RefCell<Vec<u32>>,
    /// Connections closing: waiting for their drain marker.
    closing: RefCell<Vec<Rc<ConnInner>>>,
    /// Connections ready to be finished at the next poll.
    to_finish: RefCell<Vec<Rc<ConnInner>>>,
    /// Devices whose async events this reactor reads.
    async_devices: RefCell<Vec<Arc<Device>>>,
    /// Connections closed while their port was down, QP destroyed, kept only
    /// for their CM id: the DREQ to the peer (and the id's destruction, which
    /// would send one) waits until the port is active again.
    held: RefCell<Vec<Rc<ConnInner>>>,
    next_held_check: Cell<u64>,
    /// `PORT_EVENTS` and the time at the last check of the held ports.
    held_checked: Cell<(u64, u64)>,
    /// The timed poller for drain, LAST_WQE and held time-outs, while needed.
    timeouts: Cell<Option<reactor::PollerId>>,
    next_slow: Cell<u64>,
    slow_period: u64,
}

thread_local! {
    static GROUP: RefCell<Option<Rc<Group>>> = const { RefCell::new(None) };
}

fn current() -> Option<Rc<Group>> {
    GROUP.with(|g| g.borrow().clone())
}

/// This reactor's group, made on first use.
fn group() -> io::Result<Rc<Group>> {
    if let Some(g) = current() {
        return Ok(g);
    }
    let reactor = reactor::current_index().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "RDMA connections live on reactors",
        )
    })?;
    super::device::pin_devices()?;
    let channel = EventChannel::new()?;
    reactor::register_interrupt(channel.fd())?;
    let g = Rc::new(Group {
        reactor,
        channel,
        queues: RefCell::new(Vec::new()),
        conns: RefCell::new(Slab::with_capacity(64)),
        generations: RefCell::new(Vec::new()),
        closing: RefCell::new(Vec::with_capacity(64)),
        to_finish: RefCell::new(Vec::with_capacity(64)),
        async_devices: RefCell::new(Vec::new()),
        held: RefCell::new(Vec::new()),
        next_held_check: Cell::new(0),
        held_checked: Cell::new((0, 0)),
        timeouts: Cell::new(None),
        next_slow: Cell::new(0),
        slow_period: reactor::ticks::duration_to_ticks(SLOW_PERIOD),
    });
    GROUP.with(|s| *s.borrow_mut() = Some(g.clone()));
    reactor::register_poller("rdma", poll);
    Ok(g)
}

impl Group {
    fn conn(&self, key: u32) -> Option<Rc<ConnInner>> {
        let conns = self.conns.borrow();
        let c = conns.get(key_index(key))?;
        (c.key.get() == key).then(|| c.clone())
    }

    fn insert(&self, c: &Rc<ConnInner>) -> io::Result<u32> {
        let mut conns = self.conns.borrow_mut();
        if conns.len() >= MAX_CONNS_PER_REACTOR {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "too many RDMA connections on this reactor",
            ));
        }
        let entry = conns.vacant_entry();
        let index = entry.key();
        let mut gens = self.generations.borrow_mut();
        if gens.len() <= index {
            gens.resize(index + 1, 0);
        }
        let key = make_key(index, gens[index]);
        gens[index] = gens[index].wrapping_add(1);
        c.key.set(key);
        entry.insert(c.clone());
        // Context 0 means "no connection" in events.
        c.id.set_context(key as u64 + 1);
        Ok(key)
    }

    fn remove(&self, c: &ConnInner) {
        let mut conns = self.conns.borrow_mut();
        let index = key_index(c.key.get());
        if conns.get(index).is_some_and(|x| std::ptr::eq(&**x, c)) {
            conns.remove(index);
        }
    }

    fn queues_for(&self, verbs: Verbs) -> io::Result<Rc<Queues>> {
        if let Some(q) = self
            .queues
            .borrow()
            .iter()
            .find(|q| q.device.verbs() == verbs)
        {
            return Ok(q.clone());
        }
        let device = device_for(verbs)?;
        let cfg = config();
        let attr = *device.attr();
        let channel = Rc::new(verbs.create_comp_channel()?);
        let two_part = cfg.recv_header_len > 0;
        let srq = device.pd().create_srq(
            cfg.srq_depth.clamp(1, attr.max_srq_wr.max(1)),
            if two_part { 2 } else { 1 },
        )?;
        let depth = cfg.cq_depth.max(srq.max_wr() * 2).min(attr.max_cqe.max(1));
        let cq = verbs.create_cq(depth, &channel)?;
        reactor::register_interrupt(cq.channel_fd())?;
        let n = srq.max_wr();
        let q = Rc::new(Queues {
            device: device.clone(),
            srq,
            cq,
            slots: RefCell::new((0..n).map(|_| None).collect()),
            empty: RefCell::new((0..n).rev().collect()),
            recv_len: cfg.recv_len,
            header_len: cfg.recv_header_len,
            armed: Cell::new(false),
            send_entries: Cell::new(0),
            qps: RefCell::new(QpMap::default()),
        });
        q.refill();
        if device.claim_async(self.reactor) {
            let fd = verbs.async_fd()?;
            reactor::register_interrupt(fd)?;
            self.async_devices.borrow_mut().push(device.clone());
        }
        tracing::info!(
            "RDMA {} on reactor {}: CQ of {} entries, SRQ of {} receives of {}{} bytes",
            device.name(),
            self.reactor,
            q.cq.capacity(),
            n,
            if two_part {
                format!("{} + ", cfg.recv_header_len)
            } else {
                String::new()
            },
            cfg.recv_len
        );
        self.queues.borrow_mut().push(q.clone());
        Ok(q)
    }

    /// Makes the connection's QP on this reactor's queues for its device.
    fn setup_qp(&self, c: &Rc<ConnInner>) -> io::Result<()> {
        let verbs = c.id.verbs().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the CM id has no RDMA device")
        })?;
        let q = self.queues_for(verbs)?;
        let attr = *q.device.attr();
        let cfg = &c.config;
        let want = QpCaps {
            max_send_wr: cfg
                .max_send_wr
                .clamp(1, MAX_SEND_WR)
                .min(attr.max_qp_wr.saturating_sub(1).max(1))
                + 1,
            max_send_sge: cfg
                .max_send_sge
                .clamp(1, attr.max_sge.clamp(1, sys::MAX_SGE as u32)),
            max_inline_data: cfg.max_inline,
        };
        // The CQ must hold every receive and every send-queue entry at once.
        let need = q.srq.max_wr() + q.send_entries.get() + want.max_send_wr;
        if q.cq.capacity() < need {
            let to = need.next_power_of_two().min(attr.max_cqe);
            if to < need {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "the completion queue cannot grow for another QP",
                ));
            }
            q.cq.resize(to)?;
        }
        let caps = c.id.create_qp(q.device.pd(), &q.cq, &q.srq, want)?;
        let qpn = c.id.qp_num().unwrap_or(0);
        c.caps.set(caps);
        q.send_entries.set(q.send_entries.get() + caps.max_send_wr);
        q.qps.borrow_mut().insert(qpn, c.key.get());
        QP_OWNERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((verbs, qpn, self.reactor));
        let _ = c.queues.set(q);
        c.local.set(c.id.local_addr());
        if let Some(p) = c.id.peer_addr() {
            c.peer.set(Some(p));
        }
        Ok(())
    }

    /// Forgets the connection's QP (numbers, CQ room) and destroys it.
    fn release_qp(&self, c: &ConnInner) {
        if let (Some(q), Some(qpn)) = (c.queues.get(), c.id.qp_num()) {
            q.qps.borrow_mut().remove(&qpn);
            q.send_entries.set(
                q.send_entries
                    .get()
                    .saturating_sub(c.caps.get().max_send_wr),
            );
            let verbs = q.device.verbs();
            QP_OWNERS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|&(v, n, _)| !(v == verbs && n == qpn));
        }
        c.id.destroy_qp();
    }

    /// Undoes a set-up that failed before the caller got a `Conn`.
    fn discard(&self, c: &Rc<ConnInner>) {
        c.state.set(State::Closed);
        self.release_qp(c);
        self.remove(c);
        c.handler.borrow_mut().take();
    }
}

fn conn_handle(c: &Rc<ConnInner>) -> Conn {
    Conn(c.clone())
}

/// Whether the port `c`'s CM id is on is active (when unknown: yes).
fn port_active(c: &ConnInner) -> bool {
    let Some(verbs) = c.id.verbs() else {
        return true;
    };
    verbs.port_active(c.id.port_num()).unwrap_or(true)
}

/// Starts closing `c`: tell the peer, flush the QP, post the drain marker.
/// The handler hears `disconnecting` (unless the caller asked for it) now and
/// `closed` from the poller once the marker is back.
///
/// While the port is down the peer is not told: a CM message (DREQ) sent on a
/// port that is down fails on the device's QP1, and soft-RoCE (Debian 12's
/// 6.1) then leaves QP1 unable to receive for good, so the node never takes
/// another RDMA CM connection, from anyone. The DREQ (and the destruction of
/// the CM id, which sends one too) waits until the port is back (`held`).
pub(crate) fn begin_close(c: &Rc<ConnInner>, reason: CloseReason) {
    if matches!(c.state.get(), State::Closing | State::Closed) {
        return;
    }
    c.state.set(State::Closing);
    // A post fails at once while the port is down, often before its port
    // error event has been read: a close after an error always asks.
    let ask = reason == CloseReason::Error
        || c.wr_failed.get()
        || PORT_EVENTS.load(Ordering::Relaxed) > 0;
    if !ask || port_active(c) {
        // Errors here are expected (not connected yet, already in error).
        let _ = c.id.disconnect();
    } else {
        tracing::warn!(
            "RDMA conn {} ({:?}): closing while its port is down; the peer is told when the port is back",
            c.serial,
            c.peer.get()
        );
        c.disconnect_deferred.set(true);
    }
    let _ = c.id.qp_to_error();
    let Some(g) = current() else {
        return;
    };
    if reason != CloseReason::Local {
        if let Some(h) = c.handler() {
            h.disconnecting(&conn_handle(c), reason);
        }
    }
    // A flushed zero-length SEND after everything else: when it comes back,
    // every work request of this QP has completed.
    let pending = c.unsignaled.get();
    let marker = SendWr {
        wr_id: send_wr_id(c.key.get(), pending + 1, RESERVED_TAG),
        op: WrOp::Send,
        sges: &[],
        signaled: true,
        inline: false,
        solicited: false,
    };
    if c.id.qp_num().is_some() && c.id.post_send(&[marker]).is_ok() {
        c.unsignaled.set(0);
        c.sq_used.set(c.sq_used.get() + 1);
        c.drain_since.set(Some(reactor::ticks()));
        g.closing.borrow_mut().push(c.clone());
        arm_timeouts(&g);
    } else {
        // Nothing can be outstanding on a QP that never got that far.
        g.to_finish.borrow_mut().push(c.clone());
    }
}

/// The drain marker is back: every work request of the QP has completed.
/// The QP is destroyed once the device has also said that it takes no more
/// receives from the shared receive queue (LAST_WQE_REACHED), or after
/// `LAST_WQE_WAIT`.
fn drained(g: &Group, c: Rc<ConnInner>) {
    if c.last_wqe.get() || c.id.qp_num().is_none() {
        g.to_finish.borrow_mut().push(c);
    } else if c.drained_at.get().is_none() {
        c.drained_at.set(Some(reactor::ticks()));
    }
}

/// Destroys the QP, forgets the connection and tells the handler (last call).
/// A connection closed while its port was down keeps its CM id in `held`.
fn finish_close(g: &Group, c: &Rc<ConnInner>) {
    if c.state.get() == State::Closed {
        return;
    }
    c.state.set(State::Closed);
    g.release_qp(c);
    if c.disconnect_deferred.get() {
        g.held.borrow_mut().push(c.clone());
        arm_timeouts(g);
    }
    g.remove(c);
    g.closing.borrow_mut().retain(|x| !Rc::ptr_eq(x, c));
    let h = c.handler.borrow_mut().take();
    if let Some(h) = h {
        h.closed(&conn_handle(c));
    }
}

fn fail_connect(c: &Rc<ConnInner>, why: ConnectFailure<'_>) {
    if c.state.get() != State::Connecting {
        return;
    }
    tracing::debug!("RDMA connect to {:?} failed: {why:?}", c.peer.get());
    if let Some(h) = c.handler() {
        h.connect_failed(&conn_handle(c), why);
    }
    begin_close(c, CloseReason::ConnectFailed);
}

fn mark_established(c: &Rc<ConnInner>, private_data: &[u8]) {
    if !matches!(c.state.get(), State::Connecting | State::Accepting) {
        return;
    }
    c.state.set(State::Established);
    if let Some(h) = c.handler() {
        h.established(&conn_handle(c), private_data);
    }
}

fn poll() -> Poll {
    let Some(g) = current() else {
        return Poll::Idle;
    };
    let mut busy = false;
    let now = reactor::ticks();
    if now >= g.next_slow.get() {
        g.next_slow.set(now + g.slow_period);
        busy |= poll_cm(&g);
        busy |= poll_async(&g);
    }
    let n = g.queues.borrow().len();
    for i in 0..n {
        let q = g.queues.borrow()[i].clone();
        busy |= poll_queues(&g, &q);
    }
    loop {
        let next = g.to_finish.borrow_mut().pop();
        let Some(c) = next else {
            break;
        };
        finish_close(&g, &c);
        busy = true;
    }
    Poll::from_work(busy)
}

/// Reaps up to MAX_BATCHES batches of completions; returns how many.
fn reap(g: &Group, q: &Queues) -> usize {
    let mut total = 0;
    let mut batch = WcBatch::<WC_BATCH>::new();
    for _ in 0..MAX_BATCHES {
        let wcs = q.cq.poll(&mut batch);
        let n = wcs.len();
        for wc in wcs {
            dispatch(g, q, wc);
        }
        total += n;
        if n < WC_BATCH {
            break;
        }
    }
    total
}

fn poll_queues(g: &Group, q: &Queues) -> bool {
    let mut n = reap(g, q);
    if n == 0 && !q.armed.get() {
        // Going idle: arm the CQ so a completion wakes a sleeping reactor.
        // Events from an earlier arming are read (and acked) first, so a stale
        // one cannot keep the channel readable; then look again, since a
        // completion that came before the arm raises no event.
        q.cq.take_events();
        match q.cq.arm() {
            Ok(()) => q.armed.set(true),
            Err(e) => tracing::error!("RDMA {}: arming the CQ: {e}", q.device.name()),
        }
        n = reap(g, q);
    }
    if n > 0 {
        // The armed CQ fired (or will): re-arm when next idle.
        q.armed.set(false);
    }
    let refilled = q.refill();
    n > 0 || refilled
}

fn dispatch(g: &Group, q: &Queues, wc: &sys::Wc) {
    match decode_wr_id(wc.wr_id()) {
        WrId::Recv { slot } => {
            let buf = {
                let mut slots = q.slots.borrow_mut();
                slots.get_mut(slot as usize).and_then(Option::take)
            };
            let Some((mut buf, mut data)) = buf else {
                tracing::error!("RDMA: a receive completion for empty slot {slot}");
                return;
            };
            q.empty.borrow_mut().push(slot);
            let key = q.qps.borrow().get(&wc.qp_num()).copied();
            if wc.status() != sys::WC_SUCCESS {
                let e = WcError {
                    status: wc.status(),
                    vendor_err: wc.vendor_err(),
                };
                // A receive fails for one QP (a SEND longer than the buffer,
                // an invalidation of a key that cannot be invalidated...),
                // and that QP is then in error: close its connection, which
                // nothing else would tell. Flushes come from closing ones.
                match key.and_then(|k| g.conn(k)) {
                    Some(c) if !e.is_flush() => {
                        tracing::warn!(
                            "RDMA conn {} ({:?}): receive failed: {e}",
                            c.serial,
                            c.peer.get()
                        );
                        begin_close(&c, CloseReason::Error);
                    }
                    _ => tracing::debug!("RDMA receive failed: {e}"),
                }
                return;
            }
            let Some(c) = key.and_then(|k| g.conn(k)) else {
                return;
            };
            if c.state.get() == State::Accepting {
                // The peer's first message beat the CM's ESTABLISHED event.
                mark_established(&c, &[]);
            }
            if c.state.get() != State::Established {
                return;
            }
            let len = wc.byte_len() as usize;
            if q.header_len == 0 {
                buf.set_len(len.min(buf.capacity()));
            } else {
                let first = len.min(q.header_len);
                buf.set_len(first);
                let rest = (len - first).min(q.recv_len);
                // A message that fits the header part gives no data buffer
                // (it goes straight back to the pool).
                data = data.filter(|_| rest > 0);
                if let Some(d) = data.as_mut() {
                    d.set_len(rest);
                }
            }
            if let Some(h) = c.handler() {
                h.recv(
                    &conn_handle(&c),
                    Recv {
                        buf,
                        data,
                        invalidated_rkey: wc.invalidated_rkey(),
                        imm: wc.imm_data(),
                    },
                );
            }
        }
        WrId::Send { key, count, tag } => {
            let Some(c) = g.conn(key) else {
                return;
            };
            c.sq_used.set(c.sq_used.get().saturating_sub(count));
            if tag == RESERVED_TAG {
                // The drain marker: everything before it has completed.
                drained(g, c);
                return;
            }
            if wc.status() != sys::WC_SUCCESS && wc.status() != sys::WC_FLUSH_ERR {
                // Before the handler hears it: it may close the connection.
                c.wr_failed.set(true);
            }
            let result = if wc.status() == sys::WC_SUCCESS {
                Ok(match wc.opcode() {
                    sys::WC_OP_SEND => Done::Send,
                    sys::WC_OP_RDMA_WRITE => Done::Write,
                    sys::WC_OP_RDMA_READ => Done::Read {
                        bytes: wc.byte_len(),
                    },
                    op => Done::Other(op),
                })
            } else {
                Err(WcError {
                    status: wc.status(),
                    vendor_err: wc.vendor_err(),
                })
            };
            if let Some(h) = c.handler() {
                h.completed(&conn_handle(&c), tag, result);
            }
            if let Err(e) = result {
                if !e.is_flush() {
                    tracing::warn!(
                        "RDMA conn {} ({:?}): work request failed: {e}",
                        c.serial,
                        c.peer.get()
                    );
                    begin_close(&c, CloseReason::Error);
                }
            }
        }
    }
}

fn poll_cm(g: &Group) -> bool {
    let mut busy = false;
    loop {
        let ev = match g.channel.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                tracing::error!("RDMA CM events on reactor {}: {e}", g.reactor);
                break;
            }
        };
        busy = true;
        cm_event(g, ev);
    }
    busy
}

fn cm_event(g: &Group, ev: CmEvent) {
    let conn = if ev.context == 0 {
        None
    } else {
        g.conn((ev.context - 1) as u32)
    };
    let Some(c) = conn else {
        tracing::debug!("RDMA CM {:?} for a connection already gone", ev.kind);
        return;
    };
    match ev.kind {
        CmEventKind::AddrResolved => {
            if let Err(e) = c.id.resolve_route(RESOLVE_TIMEOUT_MS) {
                fail_connect(&c, ConnectFailure::Local(e));
            }
        }
        CmEventKind::RouteResolved => {
            if let Err(e) = connect_resolved(g, &c) {
                fail_connect(&c, ConnectFailure::Local(e));
            }
        }
        CmEventKind::AddrError
        | CmEventKind::RouteError
        | CmEventKind::Unreachable
        | CmEventKind::ConnectError => {
            if c.state.get() == State::Connecting {
                let event = match ev.kind {
                    CmEventKind::AddrError => "address resolution error",
                    CmEventKind::RouteError => "route resolution error",
                    CmEventKind::Unreachable => "peer unreachable",
                    _ => "connect error",
                };
                fail_connect(
                    &c,
                    ConnectFailure::Unreachable {
                        event,
                        status: ev.status,
                    },
                );
            } else {
                begin_close(&c, CloseReason::Error);
            }
        }
        CmEventKind::Rejected => fail_connect(
            &c,
            ConnectFailure::Rejected {
                status: ev.status,
                private_data: &ev.private_data,
            },
        ),
        CmEventKind::Established => {
            if c.state.get() == State::Connecting {
                // Active side: the peer's answer bounds our READ depths.
                c.initiator_depth
                    .set(c.initiator_depth.get().min(ev.responder_resources));
                c.responder_resources
                    .set(c.responder_resources.get().min(ev.initiator_depth));
            }
            mark_established(&c, &ev.private_data);
        }
        CmEventKind::Disconnected => begin_close(&c, CloseReason::PeerDisconnected),
        CmEventKind::DeviceRemoval => begin_close(&c, CloseReason::DeviceRemoval),
        CmEventKind::TimewaitExit => {
            tracing::debug!("RDMA conn {}: timewait over", c.serial);
        }
        kind => tracing::debug!("RDMA conn {}: CM event {kind:?} ignored", c.serial),
    }
}

/// Active side, route resolved: make the QP and send the connect request.
fn connect_resolved(g: &Group, c: &Rc<ConnInner>) -> io::Result<()> {
    g.setup_qp(c)?;
    let attr = *c.queues.get().expect("set up above").device.attr();
    let param = ConnParam {
        responder_resources: c.config.responder_resources.min(attr.max_qp_rd_atom),
        initiator_depth: c.config.initiator_depth.min(attr.max_qp_init_rd_atom),
        retry_count: 7,
        rnr_retry_count: 7,
    };
    c.responder_resources.set(param.responder_resources);
    c.initiator_depth.set(param.initiator_depth);
    let data = c.connect_data.borrow_mut().take().unwrap_or_default();
    c.id.connect(&param, &data)
}

fn poll_async(g: &Group) -> bool {
    let devices = g.async_devices.borrow().clone();
    let mut busy = false;
    for d in devices {
        while let Some(ev) = d.verbs().next_async_event() {
            busy = true;
            match (ev.kind, ev.qp_num) {
                (
                    sys::ASYNC_QP_FATAL
                    | sys::ASYNC_QP_REQ_ERR
                    | sys::ASYNC_QP_ACCESS_ERR
                    | sys::ASYNC_PATH_MIG_ERR,
                    Some(qpn),
                ) => {
                    tracing::warn!("RDMA {}: QP {qpn}: {}", d.name(), ev.name());
                    on_qp_owner(g, d.verbs(), qpn, qp_failed);
                }
                (sys::ASYNC_QP_LAST_WQE_REACHED, Some(qpn)) => {
                    tracing::debug!("RDMA {}: QP {qpn}: {}", d.name(), ev.name());
                    on_qp_owner(g, d.verbs(), qpn, last_wqe_reached);
                }
                (sys::ASYNC_COMM_EST, _) => {
                    tracing::trace!("RDMA {}: {} ({:?})", d.name(), ev.name(), ev.qp_num)
                }
                (sys::ASYNC_PORT_ERR | sys::ASYNC_PORT_ACTIVE, _) => {
                    PORT_EVENTS.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("RDMA {}: {}", d.name(), ev.name())
                }
                (sys::ASYNC_DEVICE_FATAL, _) => {
                    tracing::error!("RDMA {}: {}", d.name(), ev.name())
                }
                _ => tracing::info!("RDMA {}: async event: {}", d.name(), ev.name()),
            }
        }
    }
    busy
}

/// Runs `f(verbs, qpn)` on the reactor that owns the QP (here, or by message).
fn on_qp_owner(g: &Group, verbs: Verbs, qpn: u32, f: fn(Verbs, u32)) {
    let owner = QP_OWNERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|&&(v, n, _)| v == verbs && n == qpn)
        .map(|&(_, _, r)| r);
    match owner {
        Some(r) if r == g.reactor => f(verbs, qpn),
        Some(r) => {
            if let Err(e) = reactor::send(r, Box::new(move || f(verbs, qpn))) {
                tracing::error!("RDMA: cannot reach reactor {r}: {e}");
            }
        }
        None => {}
    }
}

/// This reactor's connection with QP `qpn` of `verbs`.
fn conn_of_qp(g: &Group, verbs: Verbs, qpn: u32) -> Option<Rc<ConnInner>> {
    let key = g
        .queues
        .borrow()
        .iter()
        .find(|q| q.device.verbs() == verbs)
        .and_then(|q| q.qps.borrow().get(&qpn).copied());
    key.and_then(|k| g.conn(k))
}

/// A fatal async event for a QP of this reactor: close its connection.
fn qp_failed(verbs: Verbs, qpn: u32) {
    let Some(g) = current() else {
        return;
    };
    if let Some(c) = conn_of_qp(&g, verbs, qpn) {
        begin_close(&c, CloseReason::Error);
    }
}

/// The QP takes no more receives from the shared receive queue: once drained,
/// it may be destroyed.
fn last_wqe_reached(verbs: Verbs, qpn: u32) {
    let Some(g) = current() else {
        return;
    };
    if let Some(c) = conn_of_qp(&g, verbs, qpn) {
        c.last_wqe.set(true);
        if c.drained_at.take().is_some() {
            g.to_finish.borrow_mut().push(c);
        }
    }
}

/// Starts the time-outs poller if it is not running.
fn arm_timeouts(g: &Group) {
    if g.timeouts.get().is_none() {
        let id = reactor::register_timed_poller("rdma-timeouts", TIMEOUTS_PERIOD, timeouts);
        g.timeouts.set(Some(id));
    }
}

/// The time-outs poller: drains, LAST_WQE waits and held ports; it goes away
/// when nothing is closing or held.
fn timeouts() -> Poll {
    let Some(g) = current() else {
        return Poll::Idle;
    };
    let now = reactor::ticks();
    check_drains(&g, now);
    check_held(&g, now);
    if g.closing.borrow().is_empty() && g.held.borrow().is_empty() {
        if let Some(id) = g.timeouts.take() {
            reactor::unregister_poller(id);
        }
    }
    Poll::Idle
}

/// Tells the peers of held connections (closed while their port was down)
/// and destroys their CM ids, once their port is active again.
fn check_held(g: &Group, now: u64) {
    if g.held.borrow().is_empty() || now < g.next_held_check.get() {
        return;
    }
    g.next_held_check
        .set(now + reactor::ticks::duration_to_ticks(HELD_CHECK_PERIOD));
    // Ask the ports only after a port event, to confirm one seen back, or
    // every HELD_RECHECK.
    let events = PORT_EVENTS.load(Ordering::Relaxed);
    let (seen_events, checked_at) = g.held_checked.get();
    let confirming = g.held.borrow().iter().any(|c| c.port_seen_back.get());
    let stale = now.saturating_sub(checked_at) > reactor::ticks::duration_to_ticks(HELD_RECHECK);
    if events == seen_events && !confirming && !stale {
        return;
    }
    g.held_checked.set((events, now));
    let back: Vec<Rc<ConnInner>> = {
        let mut held = g.held.borrow_mut();
        let (back, waiting) = held.drain(..).partition(|c| {
            let active = port_active(c);
            let twice = active && c.port_seen_back.get();
            c.port_seen_back.set(active);
            twice
        });
        *held = waiting;
        back
    };
    for c in back {
        tracing::info!(
            "RDMA conn {} ({:?}): the port is back; disconnecting the peer",
            c.serial,
            c.peer.get()
        );
        let _ = c.id.disconnect();
        // Dropping our reference destroys the id (unless a handle lives on).
    }
}

fn check_drains(g: &Group, now: u64) {
    if g.closing.borrow().is_empty() {
        return;
    }
    let wqe_wait = reactor::ticks::duration_to_ticks(LAST_WQE_WAIT);
    let no_last_wqe: ArrayVec<Rc<ConnInner>, 16> = g
        .closing
        .borrow()
        .iter()
        .filter(|c| {
            c.drained_at
                .get()
                .is_some_and(|t| now.saturating_sub(t) > wqe_wait)
        })
        .take(16)
        .cloned()
        .collect();
    for c in no_last_wqe {
        tracing::debug!(
            "RDMA conn {}: no LAST_WQE_REACHED {LAST_WQE_WAIT:?} after its drain; destroying the QP",
            c.serial
        );
        c.drained_at.set(None);
        finish_close(g, &c);
    }
    let limit = reactor::ticks::duration_to_ticks(DRAIN_TIMEOUT);
    let late: ArrayVec<Rc<ConnInner>, 16> = g
        .closing
        .borrow()
        .iter()
        .filter(|c| {
            c.drain_since
                .get()
                .is_some_and(|t| now.saturating_sub(t) > limit)
        })
        .take(16)
        .cloned()
        .collect();
    for c in late {
        tracing::warn!(
            "RDMA conn {}: its QP did not drain in {DRAIN_TIMEOUT:?}; destroying it",
            c.serial
        );
        finish_close(g, &c);
    }
}

/// Sets up a passive connection on this reactor (see [`super::ConnectRequest::accept`]).
pub(crate) fn accept_here(
    mut id: CmId,
    config: &QpConfig,
    peer_initiator_depth: u8,
    peer_responder_resources: u8,
    private_data: &[u8],
    handler: Rc<dyn Handler>,
) -> io::Result<Conn> {
    let g = group()?;
    id.migrate(&g.channel)?;
    let c = Rc::new(ConnInner::new(id, g.reactor, *config));
    *c.handler.borrow_mut() = Some(handler);
    c.state.set(State::Accepting);
    g.insert(&c)?;
    let setup = g.setup_qp(&c).and_then(|()| {
        let attr = *c.queues.get().expect("set up above").device.attr();
        let param = ConnParam {
            responder_resources: config
                .responder_resources
                .min(peer_initiator_depth)
                .min(attr.max_qp_rd_atom),
            initiator_depth: config
                .initiator_depth
                .min(peer_responder_resources)
                .min(attr.max_qp_init_rd_atom),
            retry_count: 7,
            rnr_retry_count: 7,
        };
        c.responder_resources.set(param.responder_resources);
        c.initiator_depth.set(param.initiator_depth);
        c.id.accept(&param, private_data)
    });
    if let Err(e) = setup {
        let _ = c.id.reject(&[]);
        g.discard(&c);
        return Err(e);
    }
    Ok(Conn(c))
}

/// Connects to `addr` from this reactor (the active side). The handler hears
/// `established` (with the peer's private data) or `connect_failed`.
pub fn connect(
    addr: SocketAddr,
    config: &QpConfig,
    private_data: &[u8],
    handler: Rc<dyn Handler>,
) -> io::Result<Conn> {
    let g = group()?;
    let mut data = ArrayVec::new();
    data.try_extend_from_slice(private_data).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "private data longer than 255 bytes",
        )
    })?;
    let id = CmId::new(&g.channel)?;
    let c = Rc::new(ConnInner::new(id, g.reactor, *config));
    *c.handler.borrow_mut() = Some(handler);
    *c.connect_data.borrow_mut() = Some(data);
    c.peer.set(Some(addr));
    g.insert(&c)?;
    if let Err(e) = c.id.resolve_addr(&addr, RESOLVE_TIMEOUT_MS) {
        g.discard(&c);
        return Err(e);
    }
    Ok(Conn(c))
}

/// This reactor's RDMA state, for listings and leak checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalStats {
    /// Connections not yet closed.
    pub conns: usize,
    /// Of those, closing (waiting for their QP to drain).
    pub closing: usize,
    /// Devices with queues on this reactor.
    pub devices: usize,
    /// Receives posted on the shared receive queues.
    pub posted_recvs: usize,
    /// Receive slots waiting for a buffer.
    pub empty_recv_slots: usize,
    /// CM ids of connections closed while their port was down, kept until it
    /// is back (their QPs are gone).
    pub held_ids: usize,
}

/// The calling reactor's RDMA state (all zeros before its first connection).
pub fn local_stats() -> LocalStats {
    let Some(g) = current() else {
        return LocalStats::default();
    };
    let queues = g.queues.borrow();
    let stats = LocalStats {
        conns: g.conns.borrow().len(),
        closing: g.closing.borrow().len(),
        devices: queues.len(),
        posted_recvs: queues.iter().map(|q| q.posted_recvs()).sum(),
        empty_recv_slots: queues.iter().map(|q| q.empty.borrow().len()).sum(),
        held_ids: g.held.borrow().len(),
    };
    stats
}

/// Every connection of the calling reactor.
pub fn local_conns() -> Vec<Conn> {
    current()
        .map(|g| {
            g.conns
                .borrow()
                .iter()
                .map(|(_, c)| Conn(c.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Starts closing every connection of the calling reactor (shutdown); their
/// handlers hear `disconnecting(Shutdown)` now and `closed` once drained.
pub fn close_all_local() {
    for c in local_conns() {
        begin_close(&c.0, CloseReason::Shutdown);
    }
}
