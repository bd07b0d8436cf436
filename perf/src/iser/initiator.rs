//! One iSER connection of `ferrite-perf iser`, living on one reactor: the
//! login over RDMA SENDs, TEST UNIT READY and READ CAPACITY(16), then the
//! closed loop of commands, each answered by a SCSI Response after the
//! target's RDMA READ (writes) or WRITE (reads) of the slot's buffer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use ferrite_reactor::mem::Buffer;
use ferrite_transport::iser::{parse_message, IserHeader, IserMessage, RemoteBuffer};
use ferrite_transport::rdma::{self, CloseReason, Conn, ConnectFailure, Done, QpConfig, WcError};
use hdrhistogram::Histogram;

use crate::iscsi::pdu::{self, opcode, Bhs, Lun, BHS_LEN, RESERVED_TAG};
use crate::job;
use crate::rdma_run::{lock, reactor_ticks, Phase, SharedRef};
use crate::workload::{Pick, Picker, Workload};

/// The iSER CM private data we connect with: no zero-based addresses, no SEND
/// with invalidate (the arena's key is a plain memory region).
const CM_REQUEST: [u8; 4] = [0xc0, 0, 0, 0];
const ISER_HEADER_LEN: usize = 28;
/// iSER header + BHS: the whole of every command we send.
const SEND_LEN: usize = ISER_HEADER_LEN + BHS_LEN;
/// ITTs of the login and control commands have this bit; a slot's commands
/// carry the slot index in bits 0..16 and a generation in bits 16..31, so an
/// ITT is not reused right after its response (unless `--reuse-itt`: RFC 7143
/// allows it, though a target may still hold the finished task until its
/// response SEND completes).
const ITT_CONTROL: u32 = 0x8000_0000;
const ITT_SLOT_MASK: u32 = 0xffff;
/// What we propose in the operational stage (each `KEY=VALUE`).
const OPERATIONAL_KEYS: [&str; 11] = [
    "HeaderDigest=None",
    "DataDigest=None",
    "RDMAExtensions=Yes",
    "InitiatorRecvDataSegmentLength=8192",
    "TargetRecvDataSegmentLength=8192",
    "MaxBurstLength=16776192",
    "FirstBurstLength=65536",
    "ImmediateData=No",
    "InitialR2T=Yes",
    "MaxOutstandingR2T=1",
    "ErrorRecoveryLevel=0",
];
/// Work request tags of control SENDs (slots' SENDs carry the slot index).
const CONTROL_TAGS: u32 = 0x1000_0000;

/// What a connection is told to do, from the main thread.
#[derive(Clone)]
pub struct Setup {
    pub shared: SharedRef,
    pub target: String,
    pub initiator: String,
    pub lun: Lun,
    pub isid: [u8; 6],
    pub workload: Workload,
    pub read_pct: u32,
    pub depth: usize,
    pub io_size: usize,
    pub seed: u64,
    /// Each slot sends its commands under one ITT (its index).
    pub reuse_itt: bool,
}

thread_local! {
    static INITIATOR: RefCell<Option<Rc<Initiator>>> = const { RefCell::new(None) };
}

/// Runs `f` with this reactor's initiator, if it has one.
pub fn with_initiator<T>(f: impl FnOnce(&Rc<Initiator>) -> T) -> Option<T> {
    let i = INITIATOR.with(|i| i.borrow().clone());
    i.map(|i| f(&i))
}

/// The control command waiting for its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    None,
    TestUnitReady(u8),
    ReadCapacity,
    Logout,
}

struct Slot {
    /// The ITT of the slot's command in flight.
    itt: u32,
    /// The command PDU (iSER header + BHS).
    send: Buffer,
    /// The data the target reads (writes) or writes into (reads).
    data: Buffer,
    started: Instant,
}

pub struct Initiator {
    setup: Setup,
    conn: RefCell<Option<Conn>>,
    /// Remote key of the arena (registered once, remote read and write).
    rkey: Cell<u32>,
    control: Cell<Control>,
    /// The target agreed to RDMAExtensions=Yes in some login response.
    rdma_extensions: Cell<bool>,
    control_data: RefCell<Option<Buffer>>,
    /// Control SENDs in flight, by tag.
    control_sends: RefCell<HashMap<u32, Buffer>>,
    next_control_tag: Cell<u32>,
    cmd_sn: Cell<u32>,
    exp_stat_sn: Cell<u32>,
    max_cmd_sn: Cell<u32>,
    block_size: Cell<u32>,
    slots: RefCell<Vec<Slot>>,
    picker: RefCell<Option<Picker>>,
    /// Slots that could not send (window closed, send queue full).
    waiting: RefCell<Vec<usize>>,
    running: Cell<bool>,
    outstanding: Cell<usize>,
    ios: Cell<u64>,
    bytes: Cell<u64>,
    failed: Cell<u64>,
    hist: RefCell<Histogram<u64>>,
    /// Reactor busy and idle ticks at start, and the busy share at stop.
    busy_at_start: Cell<(u64, u64)>,
    busy: Cell<(u64, u64)>,
}

impl Initiator {
    /// Connects from this reactor; the rest follows from the callbacks.
    pub fn connect(addr: SocketAddr, setup: Setup) -> std::io::Result<()> {
        let depth = setup.depth;
        let me = Rc::new(Initiator {
            setup,
            conn: RefCell::new(None),
            rkey: Cell::new(0),
            control: Cell::new(Control::None),
            rdma_extensions: Cell::new(false),
            control_data: RefCell::new(None),
            control_sends: RefCell::new(HashMap::new()),
            next_control_tag: Cell::new(CONTROL_TAGS),
            cmd_sn: Cell::new(1),
            exp_stat_sn: Cell::new(0),
            max_cmd_sn: Cell::new(1),
            block_size: Cell::new(512),
            slots: RefCell::new(Vec::with_capacity(depth)),
            picker: RefCell::new(None),
            waiting: RefCell::new(Vec::with_capacity(depth)),
            running: Cell::new(false),
            outstanding: Cell::new(0),
            ios: Cell::new(0),
            bytes: Cell::new(0),
            failed: Cell::new(0),
            hist: RefCell::new(job::new_histogram()),
            busy_at_start: Cell::new((0, 0)),
            busy: Cell::new((0, 1)),
        });
        let qp = QpConfig {
            // Every command is a signalled SEND; room for all of them twice.
            max_send_wr: (depth as u32 * 2 + 32).min(rdma::MAX_SEND_WR),
            // We never RDMA READ; the target reads our write data.
            initiator_depth: 0,
            responder_resources: 16,
            ..QpConfig::default()
        };
        let conn = rdma::connect(addr, &qp, &CM_REQUEST, me.clone())?;
        *me.conn.borrow_mut() = Some(conn);
        INITIATOR.with(|i| *i.borrow_mut() = Some(me));
        Ok(())
    }

    fn fail(&self, why: String) {
        crate::rdma_run::fail(&self.setup.shared, why);
    }

    fn set_phase(&self, phase: Phase) {
        lock(&self.setup.shared).state = phase;
    }

    fn conn(&self) -> Option<Conn> {
        self.conn.borrow().clone()
    }

    /// SENDs a control PDU (login, control commands, NOP-Out, logout).
    fn send_control(&self, header: IserHeader, bhs: &Bhs, data: &[u8]) {
        let Some(conn) = self.conn() else {
            return;
        };
        let mut buf = Buffer::alloc(SEND_LEN + data.len()).expect("a control send buffer");
        buf[..ISER_HEADER_LEN].copy_from_slice(&header.encode());
        buf[ISER_HEADER_LEN..SEND_LEN].copy_from_slice(bhs);
        buf[SEND_LEN..].copy_from_slice(data);
        let tag = self.next_control_tag.get();
        self.next_control_tag.set(tag + 1);
        let sge = [conn.sge(&buf)];
        match conn.post(&[rdma::Wr::send(tag, &sge)]) {
            Ok(()) => {
                self.control_sends.borrow_mut().insert(tag, buf);
            }
            Err(e) => self.fail(format!("posting a control PDU: {e}")),
        }
    }

    fn next_control_itt(&self) -> u32 {
        let tag = self.next_control_tag.get();
        ITT_CONTROL | (tag & 0x7fff_ffff)
    }

    fn login_stage(&self, csg: u8, nsg: u8, keys: &str) {
        let text: Vec<u8> = keys.split(' ').flat_map(|k| k.bytes().chain([0])).collect();
        let bhs = pdu::LoginRequest {
            transit: true,
            csg,
            nsg,
            isid: self.setup.isid,
            tsih: 0,
            itt: ITT_CONTROL,
            cid: 0,
            cmd_sn: self.cmd_sn.get(),
            exp_stat_sn: self.exp_stat_sn.get(),
            len: text.len() as u32,
        }
        .encode();
        self.send_control(IserHeader::default(), &bhs, &text);
    }

    /// A control SCSI command (TEST UNIT READY, READ CAPACITY) on LUN 0 of
    /// the URL; read data lands in `control_data`.
    fn control_command(&self, cdb: &[u8; 16], read_len: u32, what: Control) {
        let mut header = IserHeader::default();
        if read_len > 0 {
            let conn = self.conn().expect("connected");
            let buf = Buffer::alloc(read_len as usize).expect("a control data buffer");
            let remote = conn.remote(&buf).expect("the arena's remote key");
            header.read = Some(RemoteBuffer {
                stag: remote.rkey,
                va: remote.addr,
            });
            *self.control_data.borrow_mut() = Some(buf);
        }
        let bhs = pdu::Command {
            read: read_len > 0,
            write: false,
            final_: true,
            lun: self.setup.lun,
            itt: self.next_control_itt(),
            edtl: read_len,
            cmd_sn: self.cmd_sn.get(),
            exp_stat_sn: self.exp_stat_sn.get(),
            immediate_data: 0,
            cdb,
        }
        .encode();
        self.cmd_sn.set(self.cmd_sn.get().wrapping_add(1));
        self.control.set(what);
        self.send_control(header, &bhs, &[]);
    }

    /// The login is done: allocate the slots.
    fn full_feature(&self) {
        let conn = self.conn().expect("connected");
        let rkey = match conn.remote(&Buffer::alloc(512).expect("a buffer")) {
            Ok(r) => r.rkey,
            Err(e) => return self.fail(format!("registering the arena for remote access: {e}")),
        };
        self.rkey.set(rkey);
        let mut slots = self.slots.borrow_mut();
        for k in 0..self.setup.depth {
            let mut data = match Buffer::alloc(self.setup.io_size) {
                Some(b) => b,
                None => return self.fail("the arena has too few buffers".into()),
            };
            data.fill((k as u8) | 0x80);
            slots.push(Slot {
                itt: k as u32,
                send: Buffer::alloc(SEND_LEN).expect("a send buffer"),
                data,
                started: Instant::now(),
            });
        }
        drop(slots);
        self.control_command(&[0; 16], 0, Control::TestUnitReady(0));
    }

    pub fn start(&self) {
        self.running.set(true);
        self.busy_at_start.set(reactor_ticks());
        self.set_phase(Phase::Running);
        for k in 0..self.setup.depth {
            self.issue(k);
        }
    }

    pub fn stop(&self) {
        self.running.set(false);
        let (b0, i0) = self.busy_at_start.get();
        let (b1, i1) = reactor_ticks();
        self.busy.set((b1 - b0, (b1 - b0) + (i1 - i0)));
        self.set_phase(Phase::Stopping);
        self.waiting.borrow_mut().clear();
        self.maybe_report();
    }

    /// Busy and all ticks of this reactor over the measured window.
    pub fn busy(&self) -> (u64, u64) {
        self.busy.get()
    }

    pub fn logout(&self) {
        let bhs = pdu::LogoutRequest {
            reason: pdu::LOGOUT_CLOSE_SESSION,
            itt: self.next_control_itt(),
            cid: 0,
            cmd_sn: self.cmd_sn.get(),
            exp_stat_sn: self.exp_stat_sn.get(),
        }
        .encode();
        self.control.set(Control::Logout);
        self.send_control(IserHeader::default(), &bhs, &[]);
    }

    pub fn close(&self) {
        if let Some(c) = self.conn() {
            c.disconnect();
        }
    }

    fn maybe_report(&self) {
        if !self.running.get() && self.outstanding.get() == 0 {
            let mut s = lock(&self.setup.shared);
            if s.report.is_none() {
                s.report = Some((
                    self.ios.get(),
                    self.bytes.get(),
                    self.failed.get(),
                    self.hist.borrow().clone(),
                ));
            }
        }
    }

    /// Sends slot `k`'s next command, or parks the slot when it cannot.
    fn issue(&self, k: usize) {
        if !self.running.get() {
            return;
        }
        let Some(conn) = self.conn() else {
            return;
        };
        if pdu::sn_gt(self.cmd_sn.get(), self.max_cmd_sn.get()) {
            self.waiting.borrow_mut().push(k);
            return;
        }
        let (pick, unit) = self
            .picker
            .borrow_mut()
            .as_mut()
            .expect("the picker is made before the run")
            .pick();
        let write = pick == Pick::Write;
        let bs = self.block_size.get() as usize;
        let blocks = (self.setup.io_size / bs) as u32;
        let cdb = pdu::rw16(write, unit * u64::from(blocks), blocks);
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[k];
        let generation = if self.setup.reuse_itt {
            0
        } else {
            ((slot.itt >> 16) + 1) & 0x7fff
        };
        slot.itt = (generation << 16) | k as u32;
        let buffer = RemoteBuffer {
            stag: self.rkey.get(),
            va: slot.data.as_ptr() as u64,
        };
        let header = IserHeader {
            write: write.then_some(buffer),
            read: (!write).then_some(buffer),
        };
        let bhs = pdu::Command {
            read: !write,
            write,
            final_: true,
            lun: self.setup.lun,
            itt: slot.itt,
            edtl: self.setup.io_size as u32,
            cmd_sn: self.cmd_sn.get(),
            exp_stat_sn: self.exp_stat_sn.get(),
            immediate_data: 0,
            cdb: &cdb,
        }
        .encode();
        slot.send[..ISER_HEADER_LEN].copy_from_slice(&header.encode());
        slot.send[ISER_HEADER_LEN..].copy_from_slice(&bhs);
        slot.started = Instant::now();
        let sge = [conn.sge(&slot.send)];
        match conn.post(&[rdma::Wr::send(k as u32, &sge)]) {
            Ok(()) => {
                self.cmd_sn.set(self.cmd_sn.get().wrapping_add(1));
                self.outstanding.set(self.outstanding.get() + 1);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.waiting.borrow_mut().push(k);
            }
            Err(e) => self.fail(format!("posting a command: {e}")),
        }
    }

    fn retry_waiting(&self) {
        let waiting: Vec<usize> = std::mem::take(&mut *self.waiting.borrow_mut());
        for k in waiting {
            self.issue(k);
        }
    }

    fn window(&self, bhs: &Bhs) {
        if pdu::carries_window(bhs) {
            let max = pdu::max_cmd_sn(bhs);
            if pdu::sn_gt(max, self.max_cmd_sn.get()) {
                self.max_cmd_sn.set(max);
            }
        }
        if pdu::carries_status(bhs) {
            let next = pdu::stat_sn(bhs).wrapping_add(1);
            if pdu::sn_gt(next, self.exp_stat_sn.get()) {
                self.exp_stat_sn.set(next);
            }
        }
    }

    fn login_response(&self, bhs: &Bhs, data: &[u8]) {
        let (class, detail) = (bhs[36], bhs[37]);
        if class != 0 {
            return self.fail(format!(
                "login refused: status class {class:#x} detail {detail:#x} ({})",
                String::from_utf8_lossy(data).replace('\0', " ")
            ));
        }
        self.exp_stat_sn.set(pdu::stat_sn(bhs).wrapping_add(1));
        let transit = bhs[1] & pdu::LOGIN_TRANSIT != 0;
        let nsg = bhs[1] & 3;
        match (transit, nsg) {
            (true, 1) => self.login_stage(1, 3, &OPERATIONAL_KEYS.join(" ")),
            (true, 3) => {
                let text = String::from_utf8_lossy(data);
                if !text.contains("RDMAExtensions=Yes") && !self.rdma_extensions.get() {
                    return self.fail(format!("the target refused RDMAExtensions: {text:?}"));
                }
                self.cmd_sn.set(pdu::exp_cmd_sn(bhs));
                self.max_cmd_sn.set(pdu::max_cmd_sn(bhs));
                self.full_feature();
            }
            (false, _) if bhs[1] >> 2 & 3 == 1 => {
                // The target proposed keys of its own (LIO: DefaultTime2Wait,
                // DefaultTime2Retain...) and waits for our answers: take its
                // values and ask to move on.
                let text = String::from_utf8_lossy(data);
                if text.contains("RDMAExtensions=Yes") {
                    self.rdma_extensions.set(true);
                }
                // Answer only the keys it proposed (not its answers to ours).
                let answers: Vec<&str> = text
                    .split('\0')
                    .filter(|kv| {
                        kv.split_once('=').is_some_and(|(k, _)| {
                            !OPERATIONAL_KEYS
                                .iter()
                                .any(|o| o.split_once('=').is_some_and(|(ok, _)| ok == k))
                        })
                    })
                    .collect();
                self.login_stage(1, 3, &answers.join(" "));
            }
            _ => self.fail(format!(
                "unexpected login response (transit {transit}, next stage {nsg})"
            )),
        }
    }

    fn control_response(&self, status: u8, data: &[u8]) {
        match self.control.replace(Control::None) {
            Control::TestUnitReady(tries) if status != pdu::STATUS_GOOD => {
                if tries >= 3 {
                    return self.fail(format!(
                        "TEST UNIT READY: {}",
                        pdu::describe_status(status, data)
                    ));
                }
                self.control_command(&[0; 16], 0, Control::TestUnitReady(tries + 1));
            }
            Control::TestUnitReady(_) => {
                self.control_command(&pdu::read_capacity16(), 32, Control::ReadCapacity)
            }
            Control::ReadCapacity => {
                let buf = self.control_data.borrow_mut().take();
                let (Some(buf), pdu::STATUS_GOOD) = (buf, status) else {
                    return self.fail(format!(
                        "READ CAPACITY(16): {}",
                        pdu::describe_status(status, data)
                    ));
                };
                let last = u64::from_be_bytes(buf[0..8].try_into().expect("8 bytes"));
                let bs = u32::from_be_bytes(buf[8..12].try_into().expect("4 bytes"));
                if bs == 0 || !self.setup.io_size.is_multiple_of(bs as usize) {
                    return self.fail(format!(
                        "the LUN's block size {bs} does not divide the I/O size {}",
                        self.setup.io_size
                    ));
                }
                self.block_size.set(bs);
                let units = (last + 1) * u64::from(bs) / self.setup.io_size as u64;
                if units == 0 {
                    return self.fail("the LUN is smaller than one I/O".into());
                }
                *self.picker.borrow_mut() = Some(Picker::new(
                    self.setup.workload,
                    self.setup.read_pct,
                    units,
                    self.setup.seed,
                    None,
                ));
                let mut s = lock(&self.setup.shared);
                s.capacity = Some((bs, last + 1));
                s.state = Phase::Ready;
            }
            Control::Logout | Control::None => {}
        }
    }

    fn scsi_response(&self, bhs: &Bhs, data: &[u8]) {
        let itt = pdu::itt(bhs);
        let status = bhs[3];
        if itt & ITT_CONTROL != 0 {
            return self.control_response(status, data);
        }
        let k = (itt & ITT_SLOT_MASK) as usize;
        let Some(started) = self
            .slots
            .borrow()
            .get(k)
            .filter(|s| s.itt == itt)
            .map(|s| s.started)
        else {
            return self.fail(format!("a response for unknown ITT {itt:#x}"));
        };
        let ns = started.elapsed().as_nanos() as u64;
        let _ = self.hist.borrow_mut().record(ns.max(1));
        self.ios.set(self.ios.get() + 1);
        self.bytes.set(self.bytes.get() + self.setup.io_size as u64);
        if bhs[2] != 0 || status != pdu::STATUS_GOOD {
            if self.failed.get() == 0 {
                tracing::warn!(
                    "iSER command failed: {}",
                    pdu::describe_status(status, data)
                );
            }
            self.failed.set(self.failed.get() + 1);
        }
        self.outstanding.set(self.outstanding.get() - 1);
        self.retry_waiting();
        self.issue(k);
        self.maybe_report();
    }

    fn nop_in(&self, bhs: &Bhs, data: &[u8]) {
        let ttt = pdu::ttt(bhs);
        if ttt == RESERVED_TAG {
            return; // an answer to a ping of ours (we send none)
        }
        let mut lun = [0u8; 8];
        lun.copy_from_slice(&bhs[8..16]);
        let out = pdu::NopOut {
            lun,
            itt: RESERVED_TAG,
            ttt,
            cmd_sn: self.cmd_sn.get(),
            exp_stat_sn: self.exp_stat_sn.get(),
            len: data.len() as u32,
        }
        .encode();
        self.send_control(IserHeader::default(), &out, data);
    }
}

impl rdma::Handler for Initiator {
    fn established(&self, _conn: &Conn, _private_data: &[u8]) {
        self.set_phase(Phase::LoggingIn);
        self.login_stage(
            0,
            1,
            &format!(
                "InitiatorName={} TargetName={} SessionType=Normal AuthMethod=None",
                self.setup.initiator, self.setup.target
            ),
        );
    }

    fn recv(&self, _conn: &Conn, msg: rdma::Recv) {
        let (bhs, data) = match parse_message(&msg.buf) {
            Ok(IserMessage::Pdu { bhs, data, .. }) => (*bhs, data),
            Ok(other) => return self.fail(format!("unexpected iSER message {other:?}")),
            Err(e) => return self.fail(format!("bad iSER message from the target: {e}")),
        };
        self.window(&bhs);
        match pdu::opcode_of(&bhs) {
            opcode::LOGIN_RESPONSE => self.login_response(&bhs, data),
            opcode::SCSI_RESPONSE => self.scsi_response(&bhs, data),
            opcode::NOP_IN => self.nop_in(&bhs, data),
            opcode::LOGOUT_RESPONSE => self.set_phase(Phase::LoggedOut),
            opcode::ASYNC_MESSAGE => {}
            opcode::REJECT => self.fail(format!(
                "the target rejected a PDU (reason {:#x}): {:02x?}",
                bhs[2],
                &data[..data.len().min(BHS_LEN)]
            )),
            op => self.fail(format!("unexpected PDU from the target: opcode {op:#x}")),
        }
    }

    fn completed(&self, _conn: &Conn, tag: u32, result: Result<Done, WcError>) {
        if tag >= CONTROL_TAGS {
            self.control_sends.borrow_mut().remove(&tag);
        }
        if let Err(e) = result {
            if !e.is_flush() {
                self.fail(format!("a SEND failed: {e}"));
            }
        }
    }

    fn connect_failed(&self, _conn: &Conn, why: ConnectFailure<'_>) {
        self.fail(format!("connect failed: {why:?}"));
    }

    fn disconnecting(&self, _conn: &Conn, reason: CloseReason) {
        let phase = lock(&self.setup.shared).state;
        if reason != CloseReason::Local && !matches!(phase, Phase::LoggedOut) {
            self.fail(format!("the connection went down ({reason:?})"));
        }
        // Whatever was in flight will not be answered.
        self.outstanding.set(0);
        self.running.set(false);
        self.maybe_report();
    }

    fn closed(&self, _conn: &Conn) {
        self.set_phase(Phase::Closed);
        self.conn.borrow_mut().take();
        INITIATOR.with(|i| i.borrow_mut().take());
    }
}
