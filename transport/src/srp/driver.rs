//! SRP on the RDMA layer: the RDMA CM listeners of the SRP targets, the login
//! (connect request → [`decide`] → accept with SRP_LOGIN_RSP or reject with
//! SRP_LOGIN_REJ), and the [`ChannelIo`] that runs each [`Channel`] on its
//! reactor's queue pair.
//!
//! # Where things run
//!
//! * **Control reactor**: the listeners (one per listen address, shared by
//!   the targets on it) and the login decision. An accepted login is handed
//!   to a reactor: the one with the fewest channels of the same I_T nexus,
//!   then the fewest channels (ib_srp opens one channel per CPU, so a nexus
//!   spreads over the reactors).
//! * **The channel's reactor**: the queue pair, the [`Channel`] and its SCSI
//!   port; every receive and completion of the QP comes there.
//!
//! # Data movement
//!
//! Reads: the task's data goes out by RDMA WRITEs (the last one signalled),
//! and the SRP_RSP SEND is posted right behind them: the queue pair keeps
//! the order, so the initiator sees the data before the response. The data
//! buffers are parked until the WRITE's completion, the task gets a fresh
//! (empty) data list. Writes: RDMA READs from the initiator's descriptors,
//! never more outstanding than the QP's negotiated READ depth; the table of
//! an indirect descriptor that is not all in the IU is read the same way.
//! When the send queue is full, work waits in order in a backlog, posted as
//! completions make room.
//!
//! # Ending
//!
//! A channel ends on SRP_I_LOGOUT, a disconnect, a failed work request, a
//! MULTICHAN_SINGLE login of the same nexus, or its target's deletion or the
//! target's shutdown (SRP_T_LOGOUT first, the disconnect once it is out).
//! Its state is freed when the RDMA layer says every work request has come
//! back (`closed`); tasks still at the SCSI layer are dropped when they
//! return.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arrayvec::ArrayVec;
use ferrite_lib::scsi::{Nexus, ScsiDev, ScsiPort, Task, TaskCallback, TaskData};
use ferrite_lib::srp::SrpTarget;
use ferrite_reactor::mem::Buffer;
use ferrite_reactor::{self as reactor, Poll};
use serde_json::{json, Value};

use super::channel::{Channel, ChannelConfig, ChannelIo, Event, Tmf};
use super::iu::{Desc, LoginRej, LoginReq, PortId};
use super::login::{decide, Accepted, LoginFacts, LoginLimits};
use crate::rdma;

/// Receives carry at most this many bytes of an IU in their first part and
/// the rest (up to 8 KiB) in a second buffer: see `crate::RDMA_RECV`.
pub const RECV_HEADER_LEN: usize = 76;

/// RDMA READs a channel keeps outstanding (at most; the initiator's
/// responder resources may allow fewer).
const SRP_READ_DEPTH: u8 = 16;

/// Largest transfer of one command.
const MAX_DATA_LEN: u32 = 8 << 20;

/// What the target offers every channel.
fn limits() -> LoginLimits {
    LoginLimits {
        // An IU must fit one two-part receive.
        max_it_iu_len: (RECV_HEADER_LEN + ferrite_reactor::mem::SMALL_BUF_SIZE) as u32,
        ..LoginLimits::default()
    }
}

// ---------------------------------------------------------------------------
// Channels of the process, for login decisions and srp_get_channels.

/// Counters a channel publishes after each event (read by `srp_get_channels`).
#[derive(Default)]
struct SharedStats {
    commands: AtomicU64,
    task_management: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    errors: AtomicU64,
}

struct ChannelEntry {
    id: u64,
    reactor: usize,
    target: String,
    initiator: PortId,
    target_port: PortId,
    peer: Option<SocketAddr>,
    nexus: Arc<Nexus>,
    queue_depth: u32,
    immediate_data: bool,
    stats: Arc<SharedStats>,
}

static CHANNELS: Mutex<Vec<ChannelEntry>> = Mutex::new(Vec::new());
static NEXT_CHANNEL: AtomicU64 = AtomicU64::new(1);

fn channels() -> MutexGuard<'static, Vec<ChannelEntry>> {
    CHANNELS.lock().unwrap_or_else(|e| e.into_inner())
}

fn unregister(id: u64) {
    channels().retain(|c| c.id != id);
}

/// The live channels, as `srp_get_channels` lists them.
pub(crate) fn channel_list() -> Vec<Value> {
    channels()
        .iter()
        .map(|c| {
            let s = &c.stats;
            json!({
                "id": c.id,
                "target": c.target,
                "initiator_port_id": c.initiator.to_string(),
                "target_port_id": c.target_port.to_string(),
                "peer": c.peer.map(|p| p.to_string()),
                "reactor": c.reactor,
                "nexus": c.nexus.id,
                "queue_depth": c.queue_depth,
                "immediate_data": c.immediate_data,
                "commands": s.commands.load(Ordering::Relaxed),
                "task_management": s.task_management.load(Ordering::Relaxed),
                "bytes_read": s.bytes_read.load(Ordering::Relaxed),
                "bytes_written": s.bytes_written.load(Ordering::Relaxed),
                "errors": s.errors.load(Ordering::Relaxed),
            })
        })
        .collect()
}

/// How many channels are live.
pub(crate) fn channel_count() -> usize {
    channels().len()
}

// ---------------------------------------------------------------------------
// SCSI devices of the SRP targets, by target name, made at the first login.

static DEVICES: Mutex<Option<HashMap<String, Arc<ScsiDev>>>> = Mutex::new(None);

fn devices() -> MutexGuard<'static, Option<HashMap<String, Arc<ScsiDev>>>> {
    DEVICES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The SCSI device of `target`; on a reactor (it opens the bdevs).
fn device(target: &SrpTarget) -> Result<Arc<ScsiDev>, String> {
    let mut devs = devices();
    let map = devs.get_or_insert_with(HashMap::new);
    if let Some(d) = map.get(&target.name) {
        return Ok(d.clone());
    }
    let luns: Vec<(u64, String)> = target
        .luns
        .iter()
        .map(|l| (l.lun_id as u64, l.bdev_name.clone()))
        .collect();
    let dev = ScsiDev::new(&target.name, &luns)?;
    map.insert(target.name.clone(), dev.clone());
    Ok(dev)
}

pub(crate) fn device_lun_added(name: &str, lun_id: u32, bdev_name: &str) {
    let dev = devices().as_ref().and_then(|m| m.get(name).cloned());
    if let Some(dev) = dev {
        if let Err(e) = dev.add_lun(lun_id as u64, bdev_name) {
            tracing::error!("SRP target {name}: adding LUN {lun_id}: {e}");
        }
    }
}

fn device_deleted(name: &str) {
    let dev = devices().as_mut().and_then(|m| m.remove(name));
    if let Some(dev) = dev {
        for lun in dev.luns() {
            dev.remove_lun(lun.id);
        }
    }
}

/// An SRP TransportID (SPC-4 7.6.4.5): protocol 4, the initiator port id at
/// byte 8.
fn transport_id(initiator: &PortId) -> Vec<u8> {
    let mut t = vec![0u8; 24];
    t[0] = 0x04;
    t[8..24].copy_from_slice(&initiator.0);
    t
}

// ---------------------------------------------------------------------------
// Listeners, on the control reactor.

struct Listening {
    listener: rdma::Listener,
    /// Names of the targets listening here.
    targets: Vec<String>,
}

thread_local! {
    static LISTENERS: RefCell<Vec<Listening>> = const { RefCell::new(Vec::new()) };
}

/// Makes `target` listen on its host and port (sharing a listener with
/// targets on the same address).
pub(crate) fn listen(target: &SrpTarget) -> Result<(), String> {
    let addr = SocketAddr::new(target.host, target.port);
    LISTENERS.with(|l| {
        let mut l = l.borrow_mut();
        if let Some(entry) = l.iter_mut().find(|e| e.listener.local_addr() == addr) {
            entry.targets.push(target.name.clone());
            return Ok(());
        }
        match rdma::pin_devices() {
            Ok(0) => return Err("no RDMA device".to_string()),
            Err(e) => return Err(format!("no RDMA device ({e})")),
            Ok(_) => {}
        }
        let listener =
            rdma::Listener::bind(addr, 128).map_err(|e| format!("RDMA CM on {addr}: {e}"))?;
        if reactor::on_reactor() {
            let _ = reactor::register_interrupt(listener.fd());
        }
        l.push(Listening {
            listener,
            targets: vec![target.name.clone()],
        });
        Ok(())
    })
}

/// Stops listening for target `name`, ends its channels and forgets its
/// device.
pub(crate) fn target_deleted(name: &str) {
    LISTENERS.with(|l| {
        let mut l = l.borrow_mut();
        for e in l.iter_mut() {
            e.targets.retain(|t| t != name);
        }
        l.retain(|e| {
            let keep = !e.targets.is_empty();
            if !keep && reactor::on_reactor() {
                let _ = reactor::unregister_interrupt(e.listener.fd());
            }
            keep
        });
    });
    let ends: Vec<(u64, usize)> = channels()
        .iter()
        .filter(|c| c.target == name)
        .map(|c| (c.id, c.reactor))
        .collect();
    for (id, r) in ends {
        end_channel(id, r, End::Logout);
    }
    device_deleted(name);
}

#[derive(Clone, Copy, Debug)]
enum End {
    /// SRP_T_LOGOUT, then disconnect (target deleted or stopping).
    Logout,
    /// Disconnect (a MULTICHAN_SINGLE login took the nexus over).
    Disconnect,
}

fn end_channel(id: u64, r: usize, how: End) {
    let msg = Box::new(move || {
        let cell = LOCAL.with(|m| m.borrow().get(&id).cloned());
        if let Some(cell) = cell {
            cell.end(how);
        }
    });
    if let Err(e) = reactor::send(r, msg) {
        tracing::error!("SRP channel {id}: cannot reach reactor {r}: {e}");
    }
}

/// Takes the waiting connect requests of every listener. The acceptor
/// poller's work.
pub(crate) fn accept_all() -> Poll {
    let mut taken = 0;
    LISTENERS.with(|l| {
        for e in l.borrow().iter() {
            loop {
                match e.listener.next_request() {
                    Ok(Some(req)) => {
                        taken += 1;
                        login(e, req);
                    }
                    Ok(None) => break,
                    Err(err) => {
                        tracing::warn!("SRP listener {}: {err}", e.listener.local_addr());
                        break;
                    }
                }
            }
        }
    });
    Poll::from_work(taken > 0)
}

/// Decides one login and hands an accepted channel to its reactor.
fn login(listening: &Listening, req: rdma::ConnectRequest) {
    let limits = limits();
    let peer = req.peer_addr();
    let login = match LoginReq::parse_rdma_cm(req.private_data()) {
        Ok(l) => l,
        Err(e) => {
            tracing::info!("SRP login from {peer:?} rejected: {e}");
            let rej = LoginRej {
                reason: super::iu::RejectReason::UnableToEstablishChannel,
                tag: 0,
                buf_fmt: limits.buf_fmt,
            };
            let _ = req.reject(&rej.encode());
            return;
        }
    };
    let snap = ferrite_lib::srp::snapshot();
    let target = snap.iter().find(|t| {
        t.port_id() == login.target_port_id.0
            && t.inactive_reason.is_none()
            && listening.targets.contains(&t.name)
    });
    let allowed =
        target.is_some_and(|t| t.allows(&login.initiator_port_id.0, peer.map(|p| p.ip())));
    let (open, nexus) = {
        let list = channels();
        let same: Vec<&ChannelEntry> = list
            .iter()
            .filter(|c| {
                c.initiator == login.initiator_port_id && c.target_port == login.target_port_id
            })
            .collect();
        (same.len() as u32, same.first().map(|c| c.nexus.clone()))
    };
    let facts = LoginFacts {
        target_found: target.is_some(),
        initiator_allowed: allowed,
        open_channels: open,
    };
    let reject = |req: rdma::ConnectRequest, reason| {
        tracing::info!(
            "SRP login from {peer:?} (initiator {}) to target port {} rejected: {reason}",
            login.initiator_port_id,
            login.target_port_id,
        );
        let rej = LoginRej {
            reason,
            tag: login.tag,
            buf_fmt: limits.buf_fmt,
        };
        if let Err(e) = req.reject(&rej.encode()) {
            tracing::warn!("SRP reject to {peer:?}: {e}");
        }
    };
    let accepted = match decide(&login, &facts, &limits) {
        Ok(a) => a,
        Err(reason) => return reject(req, reason),
    };
    if req.peer_responder_resources() == 0 {
        // Write data could never be fetched (the QP would hold the READs).
        tracing::info!("SRP login from {peer:?} allows no RDMA READ (responder resources 0)");
        return reject(req, super::iu::RejectReason::InsufficientResources);
    }
    let target = target.expect("decide accepts known targets only");
    let dev = match device(target) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("SRP target {}: {e}", target.name);
            return reject(req, super::iu::RejectReason::InsufficientResources);
        }
    };
    if accepted.end_other_channels {
        let ends: Vec<(u64, usize)> = channels()
            .iter()
            .filter(|c| {
                c.initiator == login.initiator_port_id && c.target_port == login.target_port_id
            })
            .map(|c| (c.id, c.reactor))
            .collect();
        tracing::info!(
            "SRP login of initiator {} with MULTICHAN_SINGLE ends its {} other channel(s)",
            login.initiator_port_id,
            ends.len()
        );
        for (id, r) in ends {
            unregister(id);
            end_channel(id, r, End::Disconnect);
        }
    }
    let nexus = nexus.unwrap_or_else(|| {
        Arc::new(Nexus::new(
            login.initiator_port_id.to_string(),
            login.target_port_id.to_string(),
            1,
            transport_id(&login.initiator_port_id),
        ))
    });
    let id = NEXT_CHANNEL.fetch_add(1, Ordering::Relaxed);
    let stats = Arc::new(SharedStats::default());
    let r = {
        let mut list = channels();
        let r = pick_reactor(&list, &login);
        list.push(ChannelEntry {
            id,
            reactor: r,
            target: target.name.clone(),
            initiator: login.initiator_port_id,
            target_port: login.target_port_id,
            peer,
            nexus: nexus.clone(),
            queue_depth: accepted.rsp.req_lim_delta,
            immediate_data: accepted.imm_data_offset.is_some(),
            stats: stats.clone(),
        });
        r
    };
    tracing::info!(
        "SRP login from {peer:?} (initiator {}) to {}: channel {id} on reactor {r}, {} credits, immediate data {}",
        login.initiator_port_id,
        target.name,
        accepted.rsp.req_lim_delta,
        accepted.imm_data_offset.is_some()
    );
    let setup = Setup {
        id,
        accepted,
        dev,
        nexus,
        stats,
    };
    if let Err(e) = reactor::send(r, Box::new(move || accept_here(req, setup))) {
        tracing::error!("SRP channel {id}: cannot hand it to reactor {r}: {e}");
        unregister(id);
    }
}

/// The reactor for a new channel: fewest channels of the same nexus, then
/// fewest channels.
fn pick_reactor(list: &[ChannelEntry], login: &LoginReq) -> usize {
    let n = reactor::handle().count().max(1);
    (0..n)
        .min_by_key(|&r| {
            let mine = list
                .iter()
                .filter(|c| {
                    c.reactor == r
                        && c.initiator == login.initiator_port_id
                        && c.target_port == login.target_port_id
                })
                .count();
            let all = list.iter().filter(|c| c.reactor == r).count();
            (mine, all, r)
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The channel on its reactor.

struct Setup {
    id: u64,
    accepted: Accepted,
    dev: Arc<ScsiDev>,
    nexus: Arc<Nexus>,
    stats: Arc<SharedStats>,
}

thread_local! {
    /// This reactor's channels, by id.
    static LOCAL: RefCell<HashMap<u64, Rc<ChannelCell>>> = RefCell::new(HashMap::new());
}

fn accept_here(req: rdma::ConnectRequest, s: Setup) {
    let id = s.id;
    let cell = Rc::new(ChannelCell {
        id,
        driver: RefCell::new(None),
    });
    let handler = Rc::new(Handler(cell.clone()));
    let depth = s.accepted.rsp.req_lim_delta;
    let qp = rdma::QpConfig {
        // Every response, the WRITEs before it and the READs: room for the
        // usual case, the backlog for the rest.
        max_send_wr: (depth * 4 + 64).min(rdma::MAX_SEND_WR),
        max_send_sge: rdma::MAX_SGE as u32,
        max_inline: 0,
        // The initiator never RDMA READs from the target.
        responder_resources: 0,
        initiator_depth: SRP_READ_DEPTH,
    };
    let peer_reads = req.peer_responder_resources();
    let conn = match req.accept(&qp, &s.accepted.rsp.encode(), handler) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("SRP channel {id}: accept: {e}");
            unregister(id);
            return;
        }
    };
    tracing::info!(
        "SRP channel {id}: RDMA READ depth {} (the initiator serves {}), send queue {}, {} SGEs",
        conn.max_rdma_reads(),
        peer_reads,
        conn.max_send_wr(),
        conn.max_send_sge()
    );
    let config = ChannelConfig {
        queue_depth: depth.min(u16::MAX as u32) as u16,
        max_ti_iu_len: s.accepted.max_ti_iu_len,
        imm_data_offset: s.accepted.imm_data_offset,
        max_data_len: MAX_DATA_LEN,
        max_descs: 4096,
    };
    let slots = config.queue_depth as usize;
    let weak = Rc::downgrade(&cell);
    let io = Io {
        id,
        max_sge: (conn.max_send_sge() as usize).clamp(1, rdma::MAX_SGE),
        max_reads: conn.max_rdma_reads().max(1) as u32,
        conn,
        port: ScsiPort::new(s.dev, s.nexus),
        callback: Rc::new(TaskDone(weak.clone())),
        cell: weak,
        deferred: VecDeque::with_capacity(slots),
        queue: VecDeque::with_capacity(slots * 4),
        reads: VecDeque::with_capacity(slots),
        reads_in_flight: 0,
        read_left: vec![0; slots],
        read_failed: vec![false; slots],
        sends: Vec::with_capacity(slots + 8),
        send_free: Vec::with_capacity(slots + 8),
        sends_out: 0,
        parked: Vec::with_capacity(slots + 8),
        park_free: Vec::with_capacity(slots + 8),
        spare: (0..slots)
            .map(|_| TaskData::with_capacity(MAX_DATA_LEN as usize))
            .collect(),
        want_disconnect: false,
        disconnected: false,
    };
    *cell.driver.borrow_mut() = Some(Driver {
        channel: Channel::new(config),
        io,
        scratch: Vec::with_capacity(limits().max_it_iu_len as usize),
        stats: s.stats,
    });
    LOCAL.with(|m| m.borrow_mut().insert(id, cell));
}

/// One channel's state, shared by its RDMA handler and its task callbacks.
struct ChannelCell {
    id: u64,
    /// Until the RDMA layer says the connection is closed.
    driver: RefCell<Option<Driver>>,
}

impl ChannelCell {
    fn with(&self, f: impl FnOnce(&mut Driver)) {
        // A task callback for a channel that is gone finds nothing: the task
        // (and its buffers) is dropped.
        if let Some(d) = self.driver.borrow_mut().as_mut() {
            f(d);
        }
    }

    fn end(&self, how: End) {
        self.with(|d| match how {
            End::Logout => d.run(Event::Shutdown),
            End::Disconnect => {
                d.run(Event::Disconnected);
                d.io.conn.disconnect();
            }
        });
    }
}

struct Driver {
    channel: Channel,
    io: Io,
    /// A received IU made whole when it came in two parts.
    scratch: Vec<u8>,
    stats: Arc<SharedStats>,
}

impl Driver {
    fn run(&mut self, ev: Event<'_>) {
        self.channel.apply(ev, &mut self.io);
        self.settle();
    }

    fn recv(&mut self, msg: rdma::Recv) {
        match msg.data {
            None => self.channel.apply(Event::Recv(&msg.buf[..]), &mut self.io),
            Some(data) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(&msg.buf);
                self.scratch.extend_from_slice(&data);
                self.channel.apply(Event::Recv(&self.scratch), &mut self.io);
            }
        }
        self.settle();
    }

    /// Applies what the data mover answered at once, posts what waits, and
    /// disconnects once a logout is out.
    fn settle(&mut self) {
        while let Some(slot) = self.io.deferred.pop_front() {
            self.channel
                .apply(Event::DataDone { slot, ok: true }, &mut self.io);
        }
        self.io.pump();
        let io = &mut self.io;
        if io.want_disconnect && !io.disconnected && io.queue.is_empty() && io.sends_out == 0 {
            io.disconnected = true;
            io.conn.disconnect();
        }
        let st = self.channel.stats();
        let s = &self.stats;
        s.commands.store(st.commands, Ordering::Relaxed);
        s.task_management
            .store(st.task_management, Ordering::Relaxed);
        s.bytes_read.store(st.bytes_read, Ordering::Relaxed);
        s.bytes_written.store(st.bytes_written, Ordering::Relaxed);
        s.errors.store(st.errors, Ordering::Relaxed);
    }

    fn completed(&mut self, tag: u32, result: Result<rdma::Done, rdma::WcError>) {
        let ok = result.is_ok();
        if let Err(e) = &result {
            if !e.is_flush() {
                tracing::info!("SRP channel {}: work request failed: {e}", self.io.id);
            }
        }
        let index = (tag & INDEX_MASK) as usize;
        match tag & KIND_MASK {
            KIND_SEND => self.io.release_send(index),
            KIND_WRITE => self.io.release_park(index),
            KIND_READ => {
                self.io.reads_in_flight -= 1;
                let slot = index;
                if slot < self.io.read_left.len() && self.io.read_left[slot] > 0 {
                    self.io.read_failed[slot] |= !ok;
                    self.io.read_left[slot] -= 1;
                    if self.io.read_left[slot] == 0 {
                        let ok = !self.io.read_failed[slot];
                        self.channel.apply(
                            Event::DataDone {
                                slot: slot as u16,
                                ok,
                            },
                            &mut self.io,
                        );
                    }
                }
            }
            KIND_TABLE => {
                self.io.reads_in_flight -= 1;
                self.channel.apply(
                    Event::TableFetched {
                        slot: index as u16,
                        ok,
                    },
                    &mut self.io,
                );
            }
            _ => {}
        }
        self.settle();
    }
}

// Work request tags: the kind in the top bits, an index below.
const KIND_MASK: u32 = 0xf000_0000;
const INDEX_MASK: u32 = !KIND_MASK;
/// A SEND; the index names its buffer.
const KIND_SEND: u32 = 0x1000_0000;
/// RDMA WRITEs of read data; the index names the parked data.
const KIND_WRITE: u32 = 0x2000_0000;
/// RDMA READs of write data; the index is the slot.
const KIND_READ: u32 = 0x3000_0000;
/// The RDMA READ of a descriptor table; the index is the slot.
const KIND_TABLE: u32 = 0x4000_0000;

/// A work request waiting to be posted.
struct Planned {
    tag: u32,
    op: rdma::Op,
    sges: ArrayVec<rdma::Sge, { rdma::MAX_SGE }>,
    signaled: bool,
}

impl Planned {
    fn wr(&self) -> rdma::Wr<'_> {
        rdma::Wr {
            tag: self.tag,
            op: self.op,
            sges: &self.sges,
            signaled: self.signaled,
            inline: false,
            solicited: false,
        }
    }
}

/// The channel's effects on the RDMA connection and the SCSI port.
struct Io {
    id: u64,
    conn: rdma::Conn,
    port: ScsiPort,
    callback: Rc<dyn TaskCallback>,
    cell: Weak<ChannelCell>,
    max_sge: usize,
    /// RDMA READs this QP may have outstanding.
    max_reads: u32,
    /// Slots whose RDMA WRITEs are posted: their DataDone, applied next.
    deferred: VecDeque<u16>,
    /// Work requests in posting order, waiting for send-queue room.
    queue: VecDeque<Planned>,
    /// RDMA READs waiting for the READ depth.
    reads: VecDeque<Planned>,
    reads_in_flight: u32,
    /// Per slot: its READs not yet complete, and whether one failed.
    read_left: Vec<u32>,
    read_failed: Vec<bool>,
    /// Buffers of SENDs in flight, by index, and the free indices.
    sends: Vec<Option<Buffer>>,
    send_free: Vec<u32>,
    sends_out: usize,
    /// Read data whose RDMA WRITEs are in flight, by index.
    parked: Vec<Option<TaskData>>,
    park_free: Vec<u32>,
    /// Empty data lists swapped into tasks whose data is parked.
    spare: Vec<TaskData>,
    /// The channel asked to disconnect once its SENDs are out.
    want_disconnect: bool,
    disconnected: bool,
}

impl Io {
    /// Posts what waits, as far as the send queue and READ depth allow.
    fn pump(&mut self) {
        while self.reads_in_flight < self.max_reads {
            let Some(p) = self.reads.pop_front() else {
                break;
            };
            self.reads_in_flight += 1;
            self.queue.push_back(p);
        }
        while !self.queue.is_empty() {
            let room = self
                .conn
                .max_send_wr()
                .saturating_sub(self.conn.send_wr_in_use()) as usize;
            let n = self.queue.len().min(rdma::MAX_CHAIN).min(room);
            if n == 0 {
                return;
            }
            let posted = {
                let wrs: ArrayVec<rdma::Wr<'_>, { rdma::MAX_CHAIN }> =
                    self.queue.iter().take(n).map(Planned::wr).collect();
                self.conn.post(&wrs)
            };
            match posted {
                Ok(()) => {
                    self.queue.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Going down (or a bug): what waits will never run.
                    if e.kind() != io::ErrorKind::NotConnected {
                        tracing::error!("SRP channel {}: post: {e}", self.id);
                        self.conn.disconnect();
                    }
                    self.drop_waiting();
                    return;
                }
            }
        }
    }

    /// Forgets work that can no longer be posted (the QP is going down).
    fn drop_waiting(&mut self) {
        for p in std::mem::take(&mut self.queue) {
            let index = (p.tag & INDEX_MASK) as usize;
            match p.tag & KIND_MASK {
                KIND_SEND => self.release_send(index),
                KIND_WRITE if p.signaled => self.release_park(index),
                // Counted in flight when they moved to the queue.
                KIND_READ | KIND_TABLE => self.reads_in_flight -= 1,
                _ => {}
            }
        }
        // The slots of these READs end with the channel.
        self.reads.clear();
    }

    /// A SEND is done (or will never be): its buffer goes back.
    fn release_send(&mut self, index: usize) {
        if self.sends.get_mut(index).and_then(Option::take).is_some() {
            self.send_free.push(index as u32);
            self.sends_out -= 1;
        }
    }

    /// RDMA WRITEs of parked data are done (or will never be): the data may go.
    fn release_park(&mut self, index: usize) {
        if let Some(mut d) = self.parked.get_mut(index).and_then(Option::take) {
            d.clear();
            self.spare.push(d);
            self.park_free.push(index as u32);
        }
    }

    /// Splits the transfer of `total` bytes between the local segments and
    /// the initiator's descriptors into work requests of at most `max_sge`
    /// entries each.
    fn plan(
        &self,
        descs: &[Desc],
        segs: &[Buffer],
        total: usize,
        mut emit: impl FnMut(rdma::Remote, ArrayVec<rdma::Sge, { rdma::MAX_SGE }>),
    ) {
        let (mut si, mut so) = (0usize, 0usize);
        let mut left = total;
        for d in descs {
            let mut in_desc = (d.len as usize).min(left);
            let mut addr = d.va;
            while in_desc > 0 {
                let mut sges = ArrayVec::new();
                let mut bytes = 0usize;
                while in_desc > 0 && sges.len() < self.max_sge && si < segs.len() {
                    let seg = &segs[si];
                    let n = (seg.len() - so).min(in_desc);
                    sges.push(self.conn.sge_range(seg, so, n));
                    bytes += n;
                    in_desc -= n;
                    so += n;
                    if so == seg.len() {
                        si += 1;
                        so = 0;
                    }
                }
                if sges.is_empty() {
                    return;
                }
                emit(rdma::Remote { addr, rkey: d.key }, sges);
                addr = addr.wrapping_add(bytes as u64);
                left -= bytes;
            }
            if left == 0 {
                return;
            }
        }
    }

    fn send_buffer(&mut self, buf: Buffer) -> u32 {
        self.sends_out += 1;
        match self.send_free.pop() {
            Some(i) => {
                self.sends[i as usize] = Some(buf);
                i
            }
            None => {
                self.sends.push(Some(buf));
                (self.sends.len() - 1) as u32
            }
        }
    }

    fn park(&mut self, data: TaskData) -> u32 {
        match self.park_free.pop() {
            Some(i) => {
                self.parked[i as usize] = Some(data);
                i
            }
            None => {
                self.parked.push(Some(data));
                (self.parked.len() - 1) as u32
            }
        }
    }
}

impl ChannelIo for Io {
    fn send(&mut self, iu: &[u8]) {
        let Some(mut buf) = Buffer::alloc(iu.len()) else {
            tracing::error!("SRP channel {}: no buffer for a response", self.id);
            self.conn.disconnect();
            return;
        };
        buf.set_len(iu.len());
        buf.copy_from_slice(iu);
        let sge = self.conn.sge(&buf);
        let i = self.send_buffer(buf);
        let mut sges = ArrayVec::new();
        sges.push(sge);
        self.queue.push_back(Planned {
            tag: KIND_SEND | i,
            op: rdma::Op::Send,
            sges,
            signaled: true,
        });
    }

    fn fetch_table(&mut self, slot: u16, table: Desc, into: &mut Buffer) {
        into.set_len(table.len as usize);
        let mut sges = ArrayVec::new();
        sges.push(self.conn.sge(into));
        self.reads.push_back(Planned {
            tag: KIND_TABLE | slot as u32,
            op: rdma::Op::Read(rdma::Remote {
                addr: table.va,
                rkey: table.key,
            }),
            sges,
            signaled: true,
        });
    }

    fn read(&mut self, slot: u16, remote: &[Desc], local: &mut TaskData) {
        let total = local.len();
        let mut count = 0u32;
        let mut reads = std::mem::take(&mut self.reads);
        self.plan(remote, local.segments(), total, |r, sges| {
            count += 1;
            reads.push_back(Planned {
                tag: KIND_READ | slot as u32,
                op: rdma::Op::Read(r),
                sges,
                signaled: true,
            });
        });
        self.reads = reads;
        if count == 0 {
            // Nothing to move: done at once.
            self.deferred.push_back(slot);
            return;
        }
        self.read_left[slot as usize] = count;
        self.read_failed[slot as usize] = false;
    }

    fn write(&mut self, slot: u16, local: &mut TaskData, len: usize, remote: &[Desc]) {
        let mut queue = std::mem::take(&mut self.queue);
        let first = queue.len();
        self.plan(remote, local.segments(), len, |r, sges| {
            queue.push_back(Planned {
                tag: KIND_WRITE,
                op: rdma::Op::Write(r),
                sges,
                signaled: false,
            });
        });
        if queue.len() > first {
            // The data stays here until the last WRITE completes; the task
            // takes an empty list of the same capacity.
            let spare = self
                .spare
                .pop()
                .unwrap_or_else(|| TaskData::with_capacity(MAX_DATA_LEN as usize));
            let data = std::mem::replace(local, spare);
            let p = self.park(data);
            for w in queue.iter_mut().skip(first) {
                w.tag = KIND_WRITE | p;
            }
            queue.back_mut().expect("planned above").signaled = true;
        }
        self.queue = queue;
        self.deferred.push_back(slot);
    }

    fn execute(&mut self, slot: u16, task: Task) {
        self.port.execute(task, &self.callback, slot as u64);
    }

    fn task_management(&mut self, slot: u16, tmf: Tmf, lun: u64) {
        let cell = self.cell.clone();
        let done = move |response| {
            if let Some(c) = cell.upgrade() {
                c.with(|d| d.run(Event::TmfDone { slot, response }));
            }
        };
        tracing::info!(
            "SRP channel {}: task management {tmf:?} on LUN {lun}",
            self.id
        );
        match tmf {
            Tmf::AbortTask { tag } => self.port.abort_task(lun, tag, done),
            Tmf::AbortTaskSet => self.port.abort_task_set(lun, done),
            Tmf::ClearTaskSet => self.port.clear_task_set(lun, done),
            Tmf::LunReset => self.port.lun_reset(lun, done),
        }
    }

    fn disconnect(&mut self) {
        self.want_disconnect = true;
    }

    fn channel_ended(&mut self, at_scsi: &[(u64, u64)]) {
        // Leave the registry now, under its lock, so that of two channels of
        // one nexus ending at once exactly one finds itself the last.
        let nexus = self.port.nexus().id;
        let last = {
            let mut all = channels();
            all.retain(|c| c.id != self.id);
            !all.iter().any(|c| c.nexus.id == nexus)
        };
        if last {
            tracing::info!(
                "SRP channel {}: the last channel of nexus {nexus} ended: I_T nexus loss",
                self.id
            );
            self.port.nexus_loss(|_| {});
        } else {
            for &(lun, tag) in at_scsi {
                self.port.abort_task(lun, tag, |_| {});
            }
        }
    }
}

/// Tasks back from the SCSI layer; the tag is the slot.
struct TaskDone(Weak<ChannelCell>);

impl TaskCallback for TaskDone {
    fn task_done(&self, tag: u64, task: Task) {
        if let Some(c) = self.0.upgrade() {
            c.with(|d| {
                d.run(Event::TaskDone {
                    slot: tag as u16,
                    task,
                })
            });
        }
    }
}

/// The RDMA layer's callbacks for one channel.
struct Handler(Rc<ChannelCell>);

impl rdma::Handler for Handler {
    fn recv(&self, _c: &rdma::Conn, msg: rdma::Recv) {
        self.0.with(|d| d.recv(msg));
    }

    fn completed(&self, _c: &rdma::Conn, tag: u32, result: Result<rdma::Done, rdma::WcError>) {
        self.0.with(|d| d.completed(tag, result));
    }

    fn disconnecting(&self, _c: &rdma::Conn, reason: rdma::CloseReason) {
        tracing::info!(
            "SRP channel {}: connection going down ({reason:?})",
            self.0.id
        );
        self.0.with(|d| {
            d.io.disconnected = true;
            d.run(Event::Disconnected);
        });
    }

    fn closed(&self, _c: &rdma::Conn) {
        let id = self.0.id;
        tracing::info!("SRP channel {id} closed");
        unregister(id);
        LOCAL.with(|m| m.borrow_mut().remove(&id));
        // Every work request is back: the buffers may go.
        self.0.driver.borrow_mut().take();
    }
}
