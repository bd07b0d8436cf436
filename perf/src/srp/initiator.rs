//! One SRP channel of `ferrite-perf srp`, living on one reactor: the login in
//! the CM exchange, TEST UNIT READY and READ CAPACITY(16), then the closed
//! loop of SRP_CMDs within the request limit, each answered by an SRP_RSP
//! after the target's RDMA READ (writes) or WRITE (reads) of the slot's span.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use ferrite_reactor::mem::Buffer;
use ferrite_transport::iscsi::pdu::Lun;
use ferrite_transport::rdma::{self, CloseReason, Conn, ConnectFailure, Done, QpConfig, WcError};
use ferrite_transport::srp::iu::{
    buf_fmt, opcode, rsp_flag, task_attr, BuildBuf, CmdBuilder, CredReq, CredRsp, Desc, ILogout,
    LoginRej, LoginReq, LoginRsp, PortId, RejectReason, RspView, TLogout, CMD_FIXED_LEN,
};
use hdrhistogram::Histogram;

use crate::iscsi::pdu;
use crate::job;
use crate::rdma_run::{lock, reactor_ticks, Phase, SharedRef};
use crate::workload::{Pick, Picker, Workload};

/// The largest IU we send: an SRP_CMD with a 16-byte CDB and one direct
/// descriptor (64 bytes); SRP requires targets to take 64.
const IT_IU_LEN: u32 = 64;
const CMD_LEN: usize = CMD_FIXED_LEN + Desc::LEN;
/// Tags of control IUs (TEST UNIT READY, READ CAPACITY, SRP_CRED_RSP,
/// SRP_I_LOGOUT) have this bit; a slot's commands carry the slot index in
/// bits 0..16 and a generation above, so a tag is not reused right after its
/// response.
const TAG_CONTROL: u64 = 1 << 63;
const TAG_SLOT_MASK: u64 = 0xffff;
/// Work request tags of control SENDs (slots' SENDs carry the slot index).
const CONTROL_WRS: u32 = 0x1000_0000;

/// What a connection is told to do, from the main thread.
#[derive(Clone)]
pub struct Setup {
    pub shared: SharedRef,
    pub target: PortId,
    pub initiator: PortId,
    pub lun: u16,
    /// The SRP_LOGIN_REQ's tag.
    pub tag: u64,
    pub workload: Workload,
    pub read_pct: u32,
    pub depth: usize,
    pub io_size: usize,
    /// Address of this connection's `depth * io_size` bytes of data spans.
    pub data: u64,
    pub seed: u64,
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
}

struct Slot {
    /// The tag of the slot's command in flight.
    tag: u64,
    /// The SRP_CMD.
    send: Buffer,
    started: Instant,
}

pub struct Initiator {
    setup: Setup,
    conn: RefCell<Option<Conn>>,
    /// Remote key of the arena (registered once, remote read and write).
    rkey: Cell<u32>,
    /// Requests we may still send (the target's request limit minus what we
    /// sent, plus what its responses gave back).
    credits: Cell<i64>,
    control: Cell<Control>,
    control_data: RefCell<Option<Buffer>>,
    /// Control SENDs in flight, by work request tag.
    control_sends: RefCell<HashMap<u32, Buffer>>,
    next_control_wr: Cell<u32>,
    /// The SRP_I_LOGOUT's SEND, once posted.
    logout_wr: Cell<Option<u32>>,
    block_size: Cell<u32>,
    slots: RefCell<Vec<Slot>>,
    picker: RefCell<Option<Picker>>,
    /// Slots that could not send (no credit, send queue full).
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

/// A SCSI status and sense data in words.
fn describe(status: u8, sense: &[u8]) -> String {
    let mut s = pdu::describe_status(status, &[]);
    if let Some((key, asc, ascq)) = pdu::sense_key(sense) {
        s.push_str(&format!(
            ", sense key {key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}"
        ));
    }
    s
}

impl Initiator {
    /// Connects from this reactor with the SRP_LOGIN_REQ; the rest follows
    /// from the callbacks.
    pub fn connect(addr: SocketAddr, setup: Setup) -> std::io::Result<()> {
        let depth = setup.depth;
        let login = LoginReq {
            tag: setup.tag,
            req_it_iu_len: IT_IU_LEN,
            req_buf_fmt: buf_fmt::DIRECT | buf_fmt::INDIRECT,
            // MULTICHAN_MULTI: the channels of the other reactors are ours too.
            req_flags: 1,
            imm_data_offset: 0,
            initiator_port_id: setup.initiator,
            target_port_id: setup.target,
        };
        let me = Rc::new(Initiator {
            setup,
            conn: RefCell::new(None),
            rkey: Cell::new(0),
            credits: Cell::new(0),
            control: Cell::new(Control::None),
            control_data: RefCell::new(None),
            control_sends: RefCell::new(HashMap::new()),
            next_control_wr: Cell::new(CONTROL_WRS),
            logout_wr: Cell::new(None),
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
        let conn = rdma::connect(addr, &qp, &login.encode_rdma_cm(), me.clone())?;
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

    fn lun(&self) -> [u8; 8] {
        Lun::from_index(self.setup.lun).0
    }

    /// SENDs a control IU; `credit`: whether it takes one from the request
    /// limit (requests do; SRP_CRED_RSP does not). Returns the WR's tag.
    fn send_control(&self, iu: &[u8], credit: bool) -> Option<u32> {
        let conn = self.conn()?;
        if credit {
            if self.credits.get() <= 0 {
                self.fail("no request limit left for a control request".into());
                return None;
            }
            self.credits.set(self.credits.get() - 1);
        }
        let mut buf = Buffer::alloc(iu.len()).expect("a control send buffer");
        buf.copy_from_slice(iu);
        let wr = self.next_control_wr.get();
        self.next_control_wr.set(wr + 1);
        let sge = [conn.sge(&buf)];
        match conn.post(&[rdma::Wr::send(wr, &sge)]) {
            Ok(()) => {
                self.control_sends.borrow_mut().insert(wr, buf);
                Some(wr)
            }
            Err(e) => {
                self.fail(format!("posting a control IU: {e}"));
                None
            }
        }
    }

    fn control_tag(&self) -> u64 {
        TAG_CONTROL | u64::from(self.next_control_wr.get())
    }

    /// A control SCSI command (TEST UNIT READY, READ CAPACITY); read data
    /// lands in `control_data`.
    fn control_command(&self, cdb: &[u8; 16], read_len: u32, what: Control) {
        let mut data_in = BuildBuf::None;
        if read_len > 0 {
            let buf = Buffer::alloc(read_len as usize).expect("a control data buffer");
            data_in = BuildBuf::Direct(Desc {
                va: buf.as_ptr() as u64,
                key: self.rkey.get(),
                len: read_len,
            });
            *self.control_data.borrow_mut() = Some(buf);
        }
        let mut iu = [0u8; CMD_LEN];
        let len = CmdBuilder {
            tag: self.control_tag(),
            lun: self.lun(),
            task_attr: task_attr::SIMPLE,
            cdb,
            data_in,
            ..CmdBuilder::default()
        }
        .encode(&mut iu);
        self.control.set(what);
        self.send_control(&iu[..len], true);
    }

    /// The login is done: allocate the slots.
    fn logged_in(&self) {
        let conn = self.conn().expect("connected");
        let rkey = match conn.remote(&Buffer::alloc(512).expect("a buffer")) {
            Ok(r) => r.rkey,
            Err(e) => return self.fail(format!("registering the arena for remote access: {e}")),
        };
        self.rkey.set(rkey);
        let mut slots = self.slots.borrow_mut();
        for k in 0..self.setup.depth {
            slots.push(Slot {
                tag: k as u64,
                send: Buffer::alloc(CMD_LEN).expect("a send buffer"),
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

    /// SRP_I_LOGOUT; SRP has no answer to it, so the channel counts as
    /// logged out once its SEND completed (or the target ended the channel).
    pub fn logout(&self) {
        let iu = ILogout {
            tag: self.control_tag(),
        }
        .encode();
        match self.send_control(&iu, true) {
            Some(wr) => self.logout_wr.set(Some(wr)),
            None => self.set_phase(Phase::LoggedOut),
        }
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
        if self.credits.get() <= 0 {
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
        slot.tag = (((slot.tag >> 16) + 1) << 16 | k as u64) & !TAG_CONTROL;
        let desc = BuildBuf::Direct(Desc {
            va: self.setup.data + (k * self.setup.io_size) as u64,
            key: self.rkey.get(),
            len: self.setup.io_size as u32,
        });
        let (data_out, data_in) = if write {
            (desc, BuildBuf::None)
        } else {
            (BuildBuf::None, desc)
        };
        let len = CmdBuilder {
            tag: slot.tag,
            lun: self.lun(),
            task_attr: task_attr::SIMPLE,
            cdb: &cdb,
            data_out,
            data_in,
            imm_data_offset: 0,
        }
        .encode(&mut slot.send);
        slot.started = Instant::now();
        let sge = [conn.sge_range(&slot.send, 0, len)];
        match conn.post(&[rdma::Wr::send(k as u32, &sge)]) {
            Ok(()) => {
                self.credits.set(self.credits.get() - 1);
                self.outstanding.set(self.outstanding.get() + 1);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.waiting.borrow_mut().push(k);
            }
            Err(e) => self.fail(format!("posting a command: {e}")),
        }
    }

    fn retry_waiting(&self) {
        if self.waiting.borrow().is_empty() {
            return;
        }
        let waiting: Vec<usize> = std::mem::take(&mut *self.waiting.borrow_mut());
        for k in waiting {
            self.issue(k);
        }
    }

    fn control_response(&self, status: u8, sense: &[u8]) {
        match self.control.replace(Control::None) {
            Control::TestUnitReady(tries) if status != pdu::STATUS_GOOD => {
                if tries >= 3 {
                    return self.fail(format!("TEST UNIT READY: {}", describe(status, sense)));
                }
                self.control_command(&[0; 16], 0, Control::TestUnitReady(tries + 1));
            }
            Control::TestUnitReady(_) => {
                self.control_command(&pdu::read_capacity16(), 32, Control::ReadCapacity)
            }
            Control::ReadCapacity => {
                let buf = self.control_data.borrow_mut().take();
                let (Some(buf), pdu::STATUS_GOOD) = (buf, status) else {
                    return self.fail(format!("READ CAPACITY(16): {}", describe(status, sense)));
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
            Control::None => self.fail("a response to no command of ours".into()),
        }
    }

    fn response(&self, rsp: &RspView<'_>) {
        self.credits
            .set(self.credits.get() + i64::from(rsp.req_lim_delta as i32));
        if rsp.tag & TAG_CONTROL != 0 {
            self.control_response(rsp.status, rsp.sense);
            return self.retry_waiting();
        }
        let k = (rsp.tag & TAG_SLOT_MASK) as usize;
        let Some(started) = self
            .slots
            .borrow()
            .get(k)
            .filter(|s| s.tag == rsp.tag)
            .map(|s| s.started)
        else {
            return self.fail(format!("an SRP_RSP for unknown tag {:#x}", rsp.tag));
        };
        let ns = started.elapsed().as_nanos() as u64;
        let _ = self.hist.borrow_mut().record(ns.max(1));
        self.ios.set(self.ios.get() + 1);
        self.bytes.set(self.bytes.get() + self.setup.io_size as u64);
        let residual = rsp.flags
            & (rsp_flag::DOOVER | rsp_flag::DOUNDER | rsp_flag::DIOVER | rsp_flag::DIUNDER);
        if rsp.status != pdu::STATUS_GOOD || residual != 0 {
            if self.failed.get() == 0 {
                tracing::warn!(
                    "SRP command failed: {}, flags {:#x}, residuals out {} in {}",
                    describe(rsp.status, rsp.sense),
                    rsp.flags,
                    rsp.data_out_res,
                    rsp.data_in_res
                );
            }
            self.failed.set(self.failed.get() + 1);
        }
        self.outstanding.set(self.outstanding.get() - 1);
        self.retry_waiting();
        self.issue(k);
        self.maybe_report();
    }
}

impl rdma::Handler for Initiator {
    fn established(&self, _conn: &Conn, private_data: &[u8]) {
        let rsp = match LoginRsp::parse(private_data) {
            Ok(r) => r,
            Err(e) => return self.fail(format!("bad SRP_LOGIN_RSP: {e}")),
        };
        if rsp.max_it_iu_len < IT_IU_LEN {
            return self.fail(format!(
                "the target takes IUs of {} bytes, less than SRP's 64",
                rsp.max_it_iu_len
            ));
        }
        if rsp.buf_fmt & buf_fmt::DIRECT == 0 {
            return self.fail("the target does not take direct data descriptors".into());
        }
        if rsp.req_lim_delta == 0 {
            return self.fail("the target granted a request limit of 0".into());
        }
        self.credits.set(i64::from(rsp.req_lim_delta));
        {
            let mut s = lock(&self.setup.shared);
            s.state = Phase::LoggingIn;
            s.note = format!(
                "SRP login: request limit {}, max IU in/out {}/{} B, flags {:#04x}",
                rsp.req_lim_delta, rsp.max_it_iu_len, rsp.max_ti_iu_len, rsp.rsp_flags
            );
        }
        self.logged_in();
    }

    fn recv(&self, _conn: &Conn, msg: rdma::Recv) {
        let Some(buf) = msg.into_single() else {
            return self.fail("an IU too long for one buffer".into());
        };
        match buf.first().copied() {
            Some(opcode::RSP) => match RspView::parse(&buf) {
                Ok(rsp) => self.response(&rsp),
                Err(e) => self.fail(format!("bad SRP_RSP: {e}")),
            },
            Some(opcode::CRED_REQ) => match CredReq::parse(&buf) {
                Ok(req) => {
                    self.credits
                        .set(self.credits.get() + i64::from(req.req_lim_delta as i32));
                    self.send_control(&CredRsp { tag: req.tag }.encode(), false);
                    self.retry_waiting();
                }
                Err(e) => self.fail(format!("bad SRP_CRED_REQ: {e}")),
            },
            Some(opcode::T_LOGOUT) => {
                let why = match TLogout::parse(&buf) {
                    Ok((reason, _)) => format!("reason {reason:#x}"),
                    Err(e) => format!("malformed: {e}"),
                };
                if self.logout_wr.get().is_none() {
                    self.fail(format!(
                        "the target logged the channel out (SRP_T_LOGOUT, {why})"
                    ));
                }
                self.close();
            }
            Some(op) => self.fail(format!("unexpected IU from the target: opcode {op:#04x}")),
            None => self.fail("an empty IU".into()),
        }
    }

    fn completed(&self, _conn: &Conn, tag: u32, result: Result<Done, WcError>) {
        if tag >= CONTROL_WRS {
            self.control_sends.borrow_mut().remove(&tag);
            if self.logout_wr.get() == Some(tag) {
                self.set_phase(Phase::LoggedOut);
            }
        }
        if let Err(e) = result {
            if !e.is_flush() {
                self.fail(format!("a SEND failed: {e}"));
            }
        }
    }

    fn connect_failed(&self, _conn: &Conn, why: ConnectFailure<'_>) {
        let text = match why {
            ConnectFailure::Rejected {
                status,
                private_data,
            } => match LoginRej::parse(private_data) {
                Ok((code, _, fmt)) => format!(
                    "SRP_LOGIN_REJ: {}, target buffer formats {fmt:#x}",
                    RejectReason::from_code(code)
                        .map_or_else(|| format!("reason {code:#010x}"), |r| r.to_string())
                ),
                Err(_) => format!("rejected (CM status {status}) without an SRP_LOGIN_REJ"),
            },
            other => format!("{other:?}"),
        };
        self.fail(format!("login failed: {text}"));
    }

    fn disconnecting(&self, _conn: &Conn, reason: CloseReason) {
        let phase = lock(&self.setup.shared).state;
        if self.logout_wr.get().is_some() {
            // The target ends the channel on SRP_I_LOGOUT.
            self.set_phase(Phase::LoggedOut);
        } else if reason != CloseReason::Local && phase != Phase::LoggedOut {
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
