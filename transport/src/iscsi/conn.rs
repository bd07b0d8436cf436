//! One iSCSI connection on its reactor: login, then the full feature phase —
//! SCSI commands with their immediate, unsolicited and solicited (R2T) data,
//! Data-In with status, NOP, text, task management and logout.
//!
//! The connection owns its socket, its framing ([`wire`](super::wire)) and its
//! commands' state; the session it belongs to lives on the same reactor. SCSI
//! tasks come back through [`TaskCallback`] with the command's slot as the tag.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};

use ferrite_lib::scsi::{self, DataDir, Task, TaskAttr, TaskCallback, TaskData};
use ferrite_reactor::mem::MAX_BUF_SIZE;
use slab::Slab;

use super::driver::{LoginDriver, TextInfo};
use super::link::{DataPath, Link};
use super::params::{ConnectionParams, DigestType, SessionParams};
use super::pdu::{
    self, DataIn, InitiatorPdu, Lun, NopIn, R2t, Residual, ScsiCommand, ScsiResponse, StatusSeq,
    RESERVED_TAG,
};
use super::session::Session;
use super::wire::{Dest, Digests, OutData, RecvEvent, TaskDataSlots, MAX_SEND_SEGMENT};
use crate::iser::link::DataWrite;
use crate::iser::{IserHeader, RemoteBuffer};
use crate::tcp::Socket;

/// The largest transfer one command may ask for.
pub(crate) const MAX_TRANSFER: u32 = 64 << 20;
/// Commands a connection keeps ready-made task objects for.
const TASK_POOL: usize = 128;
/// PDUs handled per readiness event before yielding to other connections.
const PDU_BUDGET: usize = 64;
/// How long a connection may take between login PDUs.
const LOGIN_TIMEOUT_SECS: u64 = 15;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Login,
    FullFeature,
    /// Logged out or failed: the last PDUs are going out, then it closes.
    Closing,
    Closed,
}

/// What carries a connection's PDUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    /// iSER (RFC 7145) over RDMA: the login negotiates the iSER keys.
    Iser,
}

impl Transport {
    /// As `iscsi_get_connections` reports it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Iser => "iser",
        }
    }
}

/// Facts about the portal a connection came in through.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PortalInfo {
    pub portal_group_tag: u16,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub transport: Transport,
}

/// A sequence of Data-Out PDUs being received: the unsolicited one (TTT
/// 0xffffffff) or the answer to one R2T. DataSN counts from 0 in each, and
/// with DataPDUInOrder the offsets follow each other.
#[derive(Debug, Clone, Copy)]
struct DataSeq {
    ttt: u32,
    next_offset: u32,
    end: u32,
    next_sn: u32,
}

/// Most Data-Out sequences a command has open: the unsolicited one plus
/// MaxOutstandingR2T (at most 7, see the driver's limits).
const MAX_SEQS: usize = 8;

/// One command's state on its connection.
struct Command {
    itt: u32,
    lun: Lun,
    expected: u32,
    read: bool,
    write: bool,
    /// The SCSI task, while the connection holds it (not while it executes).
    task: Option<Task>,
    /// Write data bytes received so far.
    received: u32,
    /// First byte not yet asked for or sent unsolicited.
    next_r2t_offset: u32,
    r2ts_out: u16,
    r2t_sn: u32,
    seqs: arrayvec::ArrayVec<DataSeq, MAX_SEQS>,
    /// Data-In PDUs and R2Ts sent (ExpDataSN in the response).
    data_sn: u32,
    executing: bool,
    /// Its response is queued: the initiator may reuse its ITT once it has
    /// that response (RFC 7143), while the slot stays until the response is
    /// written (TCP) or its SEND completes (iSER).
    responded: bool,
    /// Aborted by task management: send no response.
    aborted: bool,
    /// iSER: the initiator's buffers for this command (no STags over TCP).
    remote: IserHeader,
    /// iSER: the write data offset the write buffer's base address holds
    /// (the data after the immediate data).
    write_base: u32,
    /// iSER: bytes asked for by RDMA READ and not landed yet; the command's
    /// buffers may not go back to the pool before they have.
    fetching: u32,
}

/// What a connection carries to the reactor of the session it joins.
struct Moved {
    sock: Socket,
    cid: u16,
    stat_sn: u32,
    params: ConnectionParams,
    initiator_name: String,
    tsih: u16,
}

/// A connection's commands, by slot (the TTT and the SCSI tag carry the slot).
struct Commands {
    slots: Slab<Command>,
    by_itt: HashMap<u32, usize>,
    pool: Vec<Task>,
}

impl TaskDataSlots for Commands {
    fn task_data(&self, slot: usize) -> Option<&TaskData> {
        self.slots.get(slot)?.task.as_ref().map(|t| &t.data)
    }

    fn task_data_mut(&mut self, slot: usize) -> Option<&mut TaskData> {
        self.slots.get_mut(slot)?.task.as_mut().map(|t| &mut t.data)
    }
}

impl Commands {
    fn release(&mut self, slot: usize) {
        if let Some(mut c) = self.slots.try_remove(slot) {
            self.forget_itt(c.itt, slot);
            if let Some(mut t) = c.task.take() {
                t.reset();
                if self.pool.len() < TASK_POOL {
                    self.pool.push(t);
                }
            }
        }
    }

    /// The command in `slot` has its response queued: its ITT is free for a
    /// new command, though the slot lives until the response is out.
    fn retire_itt(&mut self, slot: usize) {
        if let Some(c) = self.slots.get_mut(slot) {
            c.responded = true;
            let itt = c.itt;
            self.forget_itt(itt, slot);
        }
    }

    /// Drops the ITT's entry if it still names `slot` (a new command may
    /// already have taken the ITT over).
    fn forget_itt(&mut self, itt: u32, slot: usize) {
        if self.by_itt.get(&itt) == Some(&slot) {
            self.by_itt.remove(&itt);
        }
    }
}

struct Inner {
    /// What carries the PDUs and data (TCP or iSER).
    link: Link,
    phase: Phase,
    cmds: Commands,
    session: Option<Rc<Session>>,
    login: Option<LoginDriver>,
    params: ConnectionParams,
    session_params: SessionParams,
    cid: u16,
    stat_sn: u32,
    /// Waiting for the socket to take more output.
    write_blocked: bool,
    /// Ticks of the last PDU received (idle connections get NOP-In pings).
    last_rx: u64,
    /// A NOP-In ping sent and not answered: its TTT and when it was sent.
    ping: Option<(u32, u64)>,
    next_ping_ttt: u32,
    initiator_name: String,
    target_name: Option<String>,
    /// The command admitted from the header just framed (before its data).
    admitted: Option<(u32, usize)>,
    /// Slots whose last PDU went out, during one flush.
    released: Vec<usize>,
}

/// A connection.
pub(crate) struct Conn {
    pub id: u64,
    pub portal: PortalInfo,
    /// The connection's slot in its reactor's poll group.
    pub token: Cell<usize>,
    /// Queued in the group's list of connections to flush.
    pub flush_queued: Cell<bool>,
    me: Weak<Conn>,
    inner: RefCell<Inner>,
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Conn {
    pub fn new(link: Link, portal: PortalInfo, login: LoginDriver) -> Rc<Conn> {
        Rc::new_cyclic(|me| Conn {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            portal,
            token: Cell::new(usize::MAX),
            flush_queued: Cell::new(false),
            me: me.clone(),
            inner: RefCell::new(Inner {
                link,
                phase: Phase::Login,
                cmds: Commands {
                    slots: Slab::with_capacity(TASK_POOL),
                    by_itt: HashMap::with_capacity(TASK_POOL * 2),
                    pool: (0..16).map(|_| Task::new(MAX_BUF_SIZE * 8)).collect(),
                },
                session: None,
                login: Some(login),
                params: ConnectionParams::default(),
                session_params: SessionParams::default(),
                cid: 0,
                stat_sn: 0,
                write_blocked: false,
                last_rx: ferrite_reactor::ticks(),
                ping: None,
                next_ping_ttt: 1,
                initiator_name: String::new(),
                target_name: None,
                admitted: None,
                released: Vec::with_capacity(TASK_POOL),
            }),
        })
    }

    fn rc(&self) -> Rc<Conn> {
        self.me.upgrade().expect("a connection in use is alive")
    }

    /// The socket the TCP poll group watches (None for iSER).
    pub fn fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.borrow().link.fd()
    }

    pub fn phase(&self) -> Phase {
        self.inner.borrow().phase
    }

    pub fn write_blocked(&self) -> bool {
        self.inner.borrow().write_blocked
    }

    /// A summary for `iscsi_get_connections`.
    pub fn describe(&self, reactor: usize) -> serde_json::Value {
        let i = self.inner.borrow();
        let (tsih, isid) = match &i.session {
            Some(s) => (s.entry.tsih, format!("{}", s.entry.isid)),
            None => (0, String::new()),
        };
        serde_json::json!({
            "id": self.id,
            "cid": i.cid,
            "tsih": tsih,
            "isid": isid,
            "initiator_name": i.initiator_name,
            "initiator_addr": self.portal.peer.ip().to_string(),
            "target_addr": self.portal.local.ip().to_string(),
            "target_port": self.portal.local.port(),
            "target_node_name": i.target_name,
            "portal_group_tag": self.portal.portal_group_tag,
            "transport": self.portal.transport.name(),
            "lcore_id": reactor,
            "state": format!("{:?}", i.phase),
            "outstanding_tasks": i.cmds.slots.len(),
        })
    }

    /// The socket is readable (or has buffered input): handle what arrived.
    /// Returns whether the connection is still open.
    pub fn on_readable(&self) -> bool {
        let mut budget = PDU_BUDGET;
        self.inner.borrow_mut().link.begin();
        loop {
            let ev = {
                let mut guard = self.inner.borrow_mut();
                let i = &mut *guard;
                if i.phase == Phase::Closed {
                    return false;
                }
                i.link.poll(&mut i.cmds)
            };
            match ev {
                RecvEvent::Header => {
                    let dest = self.route_data();
                    self.inner.borrow_mut().link.set_dest(dest);
                }
                RecvEvent::Pdu => {
                    self.inner.borrow_mut().last_rx = ferrite_reactor::ticks();
                    self.handle_pdu();
                    budget -= 1;
                    if budget == 0 {
                        break;
                    }
                }
                RecvEvent::Fetched { slot, len } => self.on_fetched(slot, len),
                RecvEvent::WouldBlock => break,
                RecvEvent::Closed => {
                    self.close("closed by the initiator");
                    return false;
                }
                RecvEvent::Error(e) => {
                    self.close(&format!("socket error: {e}"));
                    return false;
                }
                RecvEvent::HeaderDigestError => {
                    self.close("header digest error");
                    return false;
                }
                RecvEvent::DataDigestError => {
                    let bhs = self.inner.borrow().link.header().bhs;
                    self.reject(pdu::RejectReason::DataDigestError, &bhs);
                    // At error recovery level 0 the lost data cannot be
                    // recovered: end the connection once the Reject is out.
                    self.close_after_output();
                }
            }
        }
        self.flush();
        self.phase() != Phase::Closed
    }

    /// iSER: a message arrived on the connection's queue pair.
    pub fn iser_recv(&self, msg: ferrite_reactor::mem::Buffer) {
        if let Some(l) = self.inner.borrow_mut().link.as_iser() {
            l.recv(msg);
        }
        self.on_readable();
    }

    /// iSER: a signalled work request finished (or any failed).
    pub fn iser_completed(&self, tag: u32, result: crate::iser::link::Completion) {
        if let Some(l) = self.inner.borrow_mut().link.as_iser() {
            l.completed(tag, result);
        }
        self.on_readable();
    }

    /// Whether input is buffered beyond what the socket reports.
    pub fn has_buffered_input(&self) -> bool {
        self.inner.borrow().link.buffered() > 0
    }

    /// Decides where the data segment of the header just framed goes.
    fn route_data(&self) -> Dest {
        let i = self.inner.borrow();
        let bhs = &i.link.header().bhs;
        let data_len = i.link.header().data_len as u32;
        if data_len > i.params.recv_segment_limit().max(8192) {
            return Dest::Discard; // rejected when the PDU is handled
        }
        match pdu::opcode_of(bhs) {
            pdu::opcode::SCSI_COMMAND | pdu::opcode::SCSI_DATA_OUT => {}
            _ => return Dest::Scratch,
        }
        drop(i);
        // Commands and Data-Out put their data straight into the task.
        self.prepare_data_pdu().unwrap_or(Dest::Discard)
    }

    /// For a SCSI Command or Data-Out header: the command's slot and offset the
    /// data goes to, registering a new command first.
    fn prepare_data_pdu(&self) -> Option<Dest> {
        let bhs = self.inner.borrow().link.header().bhs;
        match InitiatorPdu::decode(&bhs).ok()? {
            InitiatorPdu::ScsiCommand(cmd) => {
                let slot = self.admit_command(&cmd)?;
                self.inner.borrow_mut().admitted = Some((cmd.itt, slot));
                Some(Dest::Task { slot, offset: 0 })
            }
            InitiatorPdu::DataOut(d) => {
                let i = self.inner.borrow();
                let slot = find_slot(&i.cmds, d.itt, d.ttt)?;
                let c = &i.cmds.slots[slot];
                let end = d.buffer_offset.checked_add(d.data_len)?;
                if !c.write || c.executing || end > c.expected {
                    return None;
                }
                Some(Dest::Task {
                    slot,
                    offset: d.buffer_offset,
                })
            }
            _ => None,
        }
    }

    /// Handles the PDU now fully received.
    fn handle_pdu(&self) {
        let (bhs, data_len, phase) = {
            let i = self.inner.borrow();
            (i.link.header().bhs, i.link.header().data_len, i.phase)
        };
        let pdu = match InitiatorPdu::decode(&bhs) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("conn {}: bad PDU: {e}", self.id);
                self.reject(e.reject_reason(), &bhs);
                if phase == Phase::Login {
                    self.close_after_output();
                }
                return;
            }
        };
        let max = self.inner.borrow().params.recv_segment_limit().max(8192);
        if data_len as u32 > max {
            self.reject(pdu::RejectReason::ProtocolError, &bhs);
            self.close_after_output();
            return;
        }
        match phase {
            Phase::Login => match pdu {
                InitiatorPdu::Login(req) => self.on_login(&req),
                _ => {
                    // Only Login PDUs before the full feature phase.
                    self.reject(pdu::RejectReason::ProtocolError, &bhs);
                    self.close_after_output();
                }
            },
            Phase::FullFeature => self.on_ffp_pdu(pdu, &bhs),
            Phase::Closing | Phase::Closed => {}
        }
    }

    fn on_ffp_pdu(&self, pdu: InitiatorPdu, bhs: &pdu::Bhs) {
        let discovery = self.session().is_some_and(|s| s.is_discovery());
        match pdu {
            InitiatorPdu::ScsiCommand(cmd) if !discovery => self.on_command_data(&cmd),
            InitiatorPdu::DataOut(d) if !discovery => self.on_data_out(&d),
            InitiatorPdu::NopOut(n) => self.on_nop_out(&n),
            InitiatorPdu::Text(t) => self.on_text(&t),
            InitiatorPdu::Logout(l) => self.on_logout(&l),
            InitiatorPdu::TaskMgmt(t) if !discovery => self.on_task_mgmt(&t),
            InitiatorPdu::Snack(_) => {
                // Error recovery level 0: no SNACK.
                self.reject(pdu::RejectReason::CommandNotSupported, bhs)
            }
            InitiatorPdu::Login(_) => {
                // A login in the full feature phase is a protocol error.
                self.reject(pdu::RejectReason::ProtocolError, bhs);
                self.close_after_output();
            }
            _ => self.reject(pdu::RejectReason::ProtocolError, bhs),
        }
    }

    fn session(&self) -> Option<Rc<Session>> {
        self.inner.borrow().session.clone()
    }

    /// The StatSN/ExpCmdSN/MaxCmdSN for a PDU; `advance` consumes a StatSN.
    fn seq(&self, i: &mut Inner, advance: bool) -> StatusSeq {
        let (exp, max) = match &i.session {
            Some(s) => {
                let w = s.window.get();
                (w.exp_cmd_sn, w.max_cmd_sn())
            }
            None => (0, 0),
        };
        let stat_sn = i.stat_sn;
        if advance {
            i.stat_sn = i.stat_sn.wrapping_add(1);
        }
        StatusSeq {
            stat_sn,
            exp_cmd_sn: exp,
            max_cmd_sn: max,
        }
    }

    /// Checks a non-immediate PDU's CmdSN against the window and consumes it.
    /// False: outside the window, to be ignored (RFC 7143 §4.2.2.1).
    fn take_cmd_sn(&self, immediate: bool, cmd_sn: u32, is_command: bool) -> bool {
        let Some(s) = self.session() else {
            return false;
        };
        let mut w = s.window.get();
        if immediate {
            if is_command {
                w.outstanding += 1;
                s.window.set(w);
            }
            return true;
        }
        // A command that arrives ahead of a gap (another connection of the
        // session is slower) runs at once: ExpCmdSN waits for the gap, and with
        // SIMPLE task attributes the SCSI layer may reorder anyway.
        if w.take(cmd_sn) == super::session::CmdSnCheck::Ignore {
            tracing::debug!(
                "conn {}: CmdSN {cmd_sn} outside [{}, {}] or repeated, ignored",
                self.id,
                w.exp_cmd_sn,
                w.max_cmd_sn()
            );
            return false;
        }
        if is_command {
            w.outstanding += 1;
        }
        s.window.set(w);
        true
    }

    /// A command was answered: its place in the window is free again.
    fn command_done(&self) {
        if let Some(s) = self.session() {
            let mut w = s.window.get();
            w.outstanding = w.outstanding.saturating_sub(1);
            s.window.set(w);
        }
    }

    // ---- SCSI commands and their data ----

    /// Registers a new command from its header (before its immediate data
    /// arrives). Returns its slot, or None when the command is refused.
    fn admit_command(&self, cmd: &ScsiCommand) -> Option<usize> {
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        if i.phase != Phase::FullFeature {
            return None;
        }
        if i.cmds.by_itt.contains_key(&cmd.itt) {
            return None;
        }
        if cmd.write && cmd.data_len > 0 && !i.session_params.immediate_data {
            return None;
        }
        let mut task = i
            .cmds
            .pool
            .pop()
            .unwrap_or_else(|| Task::new(MAX_BUF_SIZE * 8));
        task.reset();
        let needs_data = cmd.write && cmd.expected_data_len > 0;
        if needs_data
            && (cmd.expected_data_len > MAX_TRANSFER
                || !task.data.alloc(cmd.expected_data_len as usize))
        {
            i.cmds.pool.push(task);
            return None;
        }
        let remote = i.link.iser_header();
        let slot = i.cmds.slots.insert(Command {
            itt: cmd.itt,
            lun: cmd.lun,
            expected: cmd.expected_data_len,
            read: cmd.read,
            write: cmd.write,
            task: Some(task),
            received: 0,
            next_r2t_offset: 0,
            r2ts_out: 0,
            r2t_sn: 0,
            seqs: arrayvec::ArrayVec::new(),
            data_sn: 0,
            executing: false,
            responded: false,
            aborted: false,
            remote,
            write_base: 0,
            fetching: 0,
        });
        i.cmds.by_itt.insert(cmd.itt, slot);
        Some(slot)
    }

    /// A SCSI Command PDU has fully arrived (with any immediate data).
    fn on_command_data(&self, cmd: &ScsiCommand) {
        let bhs = self.inner.borrow().link.header().bhs;
        // The command admitted when its header came (only if it had data).
        let admitted = self
            .inner
            .borrow_mut()
            .admitted
            .take()
            .filter(|&(itt, _)| itt == cmd.itt)
            .map(|(_, slot)| slot);
        if !self.take_cmd_sn(cmd.immediate, cmd.cmd_sn, true) {
            if let Some(slot) = admitted {
                self.inner.borrow_mut().cmds.release(slot);
            }
            return;
        }
        let slot = match admitted {
            Some(slot) => Some(slot),
            None if cmd.data_len == 0 => self.admit_command(cmd),
            None => None,
        };
        let Some(slot) = slot else {
            // Refused: a duplicate ITT, immediate data not negotiated, no
            // buffers or too large a transfer.
            self.command_done();
            let duplicate = self.inner.borrow().cmds.by_itt.contains_key(&cmd.itt);
            let no_immediate =
                cmd.write && cmd.data_len > 0 && !self.inner.borrow().session_params.immediate_data;
            if duplicate || no_immediate {
                self.reject(pdu::RejectReason::ProtocolError, &bhs);
            } else {
                self.respond_busy(cmd);
            }
            return;
        };
        // Fill in the SCSI task.
        {
            let mut guard = self.inner.borrow_mut();
            let i = &mut *guard;
            let ahs = pdu::parse_command_ahs(i.link.header().ahs()).ok();
            let ahs_cdb = ahs.map(|a| cmd.full_cdb(&a));
            let c = &mut i.cmds.slots[slot];
            let t = c.task.as_mut().expect("admitted command has its task");
            t.lun = scsi::decode_lun(&cmd.lun.0);
            match &ahs_cdb {
                Some(cdb) => t.set_cdb(cdb.as_slice()),
                None => t.set_cdb(&cmd.cdb),
            }
            t.dir = match (cmd.read, cmd.write) {
                (true, true) => DataDir::Bidi,
                (true, false) => DataDir::Read,
                (false, true) => DataDir::Write,
                _ => DataDir::None,
            };
            t.attr = match cmd.attr {
                pdu::TaskAttribute::Untagged => TaskAttr::Untagged,
                pdu::TaskAttribute::Simple => TaskAttr::Simple,
                pdu::TaskAttribute::Ordered => TaskAttr::Ordered,
                pdu::TaskAttribute::HeadOfQueue => TaskAttr::HeadOfQueue,
                pdu::TaskAttribute::Aca => TaskAttr::Aca,
            };
            t.expected_len = cmd.expected_data_len;
            t.tag = cmd.itt as u64;
            if cmd.write {
                let imm = cmd.data_len.min(cmd.expected_data_len);
                c.received = imm;
                c.write_base = imm;
                // What may still come unsolicited, then what R2Ts ask for.
                let first_burst = i.session_params.first_burst_length;
                c.next_r2t_offset = if cmd.final_bit || i.session_params.initial_r2t {
                    imm
                } else {
                    first_burst.min(cmd.expected_data_len).max(imm)
                };
                if !cmd.final_bit && c.next_r2t_offset > imm {
                    c.seqs.push(DataSeq {
                        ttt: RESERVED_TAG,
                        next_offset: imm,
                        end: c.next_r2t_offset,
                        next_sn: 0,
                    });
                }
            }
        }
        let (write, received, expected) = {
            let i = self.inner.borrow();
            let c = &i.cmds.slots[slot];
            (c.write, c.received, c.expected)
        };
        if write && received < expected {
            self.solicit_write_data(slot);
        } else {
            self.execute(slot);
        }
    }

    /// Gets the rest of a write command's data moving, the link's way.
    fn solicit_write_data(&self, slot: usize) {
        let path = self.inner.borrow().link.data_path();
        match path {
            DataPath::Pdus => self.send_r2ts(slot),
            DataPath::Rdma => self.fetch_write_data(slot),
        }
    }

    /// iSER: RDMA READs of the rest of a write's data from the initiator's
    /// write buffer (no R2T); the link keeps to the QP's READ limit.
    fn fetch_write_data(&self, slot: usize) {
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        let c = &mut i.cmds.slots[slot];
        let off = c.next_r2t_offset.max(c.received);
        let len = c.expected - off;
        let from = c.remote.write.and_then(|w| {
            let va = w.at(off - c.write_base.min(off))?;
            Some(RemoteBuffer { stag: w.stag, va })
        });
        let Some(from) = from else {
            drop(guard);
            return self.data_out_error(slot, "iSER write data without a write STag");
        };
        c.next_r2t_offset = c.expected;
        c.fetching = len;
        if let Some(l) = i.link.as_iser() {
            l.fetch(slot, off, len, from);
        }
    }

    /// iSER: an RDMA READ brought write data.
    fn on_fetched(&self, slot: usize, len: u32) {
        let (done, aborted) = {
            let mut i = self.inner.borrow_mut();
            let Some(c) = i.cmds.slots.get_mut(slot) else {
                return;
            };
            c.fetching = c.fetching.saturating_sub(len);
            c.received = c.received.saturating_add(len).min(c.expected);
            let landed = c.fetching == 0;
            (
                landed && !c.aborted && c.received >= c.expected,
                landed && c.aborted,
            )
        };
        if aborted {
            // Aborted while its data was on the way: only now may its
            // buffers go.
            self.inner.borrow_mut().cmds.release(slot);
        } else if done {
            self.execute(slot);
        }
    }

    /// A Data-Out PDU has fully arrived.
    fn on_data_out(&self, d: &pdu::DataOut) {
        let slot = {
            let i = self.inner.borrow();
            find_slot(&i.cmds, d.itt, d.ttt)
        };
        let Some(slot) = slot else {
            // For a command that is gone (aborted, refused): drop the data.
            return;
        };
        let (done, solicited_end) = {
            let mut i = self.inner.borrow_mut();
            let Some(c) = i.cmds.slots.get_mut(slot) else {
                return;
            };
            if c.executing || !c.write {
                return;
            }
            // DataSN and offsets must follow on within their sequence; at error
            // recovery level 0 anything else ends the connection.
            let Some(k) = c.seqs.iter().position(|q| q.ttt == d.ttt) else {
                drop(i);
                return self.data_out_error(slot, "Data-Out for no open sequence");
            };
            let q = &mut c.seqs[k];
            let end = d.buffer_offset.saturating_add(d.data_len);
            if d.data_sn != q.next_sn || d.buffer_offset != q.next_offset || end > q.end {
                drop(i);
                return self.data_out_error(slot, "Data-Out out of sequence (DataSN or offset)");
            }
            q.next_sn += 1;
            q.next_offset = end;
            if d.final_bit || end == q.end {
                c.seqs.remove(k);
            }
            c.received = c.received.saturating_add(d.data_len).min(c.expected);
            let solicited_end = d.ttt != RESERVED_TAG && d.final_bit;
            if solicited_end {
                c.r2ts_out = c.r2ts_out.saturating_sub(1);
            }
            (c.received >= c.expected, solicited_end)
        };
        if done {
            self.execute(slot);
        } else if solicited_end || d.ttt == RESERVED_TAG && d.final_bit {
            self.send_r2ts(slot);
        }
    }

    /// Asks for the next bursts of write data, up to MaxOutstandingR2T at once.
    fn send_r2ts(&self, slot: usize) {
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        let max_out = i.session_params.max_outstanding_r2t.max(1);
        let burst = i.session_params.max_burst_length.max(512);
        loop {
            let c = &mut i.cmds.slots[slot];
            if c.r2ts_out >= max_out || c.next_r2t_offset >= c.expected {
                break;
            }
            let off = c.next_r2t_offset;
            let len = burst.min(c.expected - off);
            c.next_r2t_offset += len;
            c.r2ts_out += 1;
            let r2t_sn = c.r2t_sn;
            c.r2t_sn += 1;
            c.data_sn += 1;
            let (itt, lun) = (c.itt, c.lun);
            let _ = c.seqs.try_push(DataSeq {
                ttt: ttt_of(slot, r2t_sn),
                next_offset: off,
                end: off + len,
                next_sn: 0,
            });
            let seq = self.seq(i, false);
            let r2t = R2t {
                lun,
                itt,
                ttt: ttt_of(slot, r2t_sn),
                seq,
                r2t_sn,
                buffer_offset: off,
                desired_len: len,
            };
            i.link.push(r2t.encode(), OutData::None, None, None);
        }
    }

    /// All of a command's data is here: hand it to the SCSI layer.
    fn execute(&self, slot: usize) {
        let session = self.session();
        let (task, tag) = {
            let mut i = self.inner.borrow_mut();
            let c = &mut i.cmds.slots[slot];
            c.executing = true;
            (c.task.take().expect("a command executes once"), slot as u64)
        };
        let cb: Rc<dyn TaskCallback> = self.rc();
        let mut task = Some(task);
        if let Some(s) = &session {
            if let Ok(mut port) = s.port.try_borrow_mut() {
                if let Some(port) = port.as_mut() {
                    port.execute(task.take().expect("not yet handed"), &cb, tag);
                }
            }
        }
        if let Some(task) = task {
            // No SCSI port (a discovery session): nothing can run it.
            cb.task_done(tag, task);
        }
    }

    /// Answers a command refused for lack of resources with BUSY.
    fn respond_busy(&self, cmd: &ScsiCommand) {
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        let seq = self.seq(i, true);
        let r = ScsiResponse {
            itt: cmd.itt,
            response: pdu::service_response::COMMAND_COMPLETED,
            status: scsi::status::BUSY,
            seq,
            ..Default::default()
        };
        i.link.push(r.encode(), OutData::None, None, None);
    }

    /// Sends a finished command's read data and status, the link's way.
    fn respond(&self, slot: usize) {
        let path = self.inner.borrow().link.data_path();
        match path {
            DataPath::Pdus => self.respond_with_pdus(slot),
            DataPath::Rdma => self.respond_with_rdma(slot),
        }
        self.inner.borrow_mut().cmds.retire_itt(slot);
    }

    /// iSER: the read data by RDMA WRITE to the initiator's read buffer,
    /// chained before the SEND of the SCSI Response (never Data-In).
    fn respond_with_rdma(&self, slot: usize) {
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        let (itt, expected, read, remote) = {
            let c = &i.cmds.slots[slot];
            (c.itt, c.expected, c.read, c.remote)
        };
        let t = i.cmds.slots[slot].task.as_mut().expect("task is back");
        let data_len = if read {
            t.data.len().min(expected as usize)
        } else {
            0
        };
        let write = match remote.read {
            Some(to) if data_len > 0 => Some(DataWrite {
                slot,
                len: data_len as u32,
                to,
            }),
            // Read data and nowhere to put it: the initiator broke iSER.
            None if data_len > 0 => {
                const DATA_PHASE_ERROR: u16 = 0x4b00;
                t.check(scsi::Sense::new(
                    scsi::sense::key::ABORTED_COMMAND,
                    DATA_PHASE_ERROR,
                ));
                None
            }
            _ => None,
        };
        let (status, residual) = status_and_residual(t, expected);
        let (data, sense_len) = sense_data(t);
        let seq = self.seq(i, true);
        let r = ScsiResponse {
            itt,
            response: pdu::service_response::COMMAND_COMPLETED,
            status,
            residual,
            bidi_read_residual: Residual::None,
            exp_data_sn: 0,
            seq,
            data_len: sense_len,
        };
        if let Some(l) = i.link.as_iser() {
            l.push_response(r.encode(), data, slot, write, remote.stag_to_invalidate());
        }
    }

    /// Queues the Data-In PDUs and status of a finished command.
    fn respond_with_pdus(&self, slot: usize) {
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        let max_seg = (i.params.max_send_data_segment_length as usize).clamp(512, MAX_SEND_SEGMENT);
        let burst = i.session_params.max_burst_length.max(512) as usize;
        let (itt, expected, read, data_len, mut data_sn) = {
            let c = &i.cmds.slots[slot];
            let t = c.task.as_ref().expect("task is back");
            (c.itt, c.expected, c.read, t.data.len(), c.data_sn)
        };
        let (status, residual) =
            status_and_residual(i.cmds.slots[slot].task.as_ref().expect("task"), expected);
        let has_sense = !i.cmds.slots[slot]
            .task
            .as_ref()
            .expect("task")
            .sense
            .is_empty();
        let data_len = if read {
            data_len.min(expected as usize)
        } else {
            0
        };
        // Phase collapse: status in the last Data-In when there is no sense.
        let collapse = data_len > 0 && !has_sense;
        let mut off = 0usize;
        while off < data_len {
            let n = (data_len - off).min(max_seg);
            let last = off + n == data_len;
            let burst_end = last || (off + n).is_multiple_of(burst);
            let status_here = last && collapse;
            let seq = self.seq(i, status_here);
            let din = DataIn {
                final_bit: burst_end,
                ack: None,
                status: status_here.then_some(status),
                residual: if status_here {
                    residual
                } else {
                    Residual::None
                },
                itt,
                seq,
                data_sn,
                buffer_offset: off as u32,
                data_len: n as u32,
            };
            data_sn += 1;
            let release = status_here.then_some(slot);
            let td = i.cmds.slots[slot].task.as_ref().map(|t| &t.data);
            i.link.push(
                din.encode(),
                OutData::Task {
                    slot,
                    offset: off as u32,
                    len: n as u32,
                },
                release,
                td,
            );
            off += n;
        }
        if !collapse {
            let seq = self.seq(i, true);
            let (data, len) = sense_data(i.cmds.slots[slot].task.as_ref().expect("task"));
            let r = ScsiResponse {
                itt,
                response: pdu::service_response::COMMAND_COMPLETED,
                status,
                residual,
                bidi_read_residual: Residual::None,
                exp_data_sn: data_sn,
                seq,
                data_len: len,
            };
            i.link.push(r.encode(), data, Some(slot), None);
        }
        i.cmds.slots[slot].data_sn = data_sn;
    }

    // ---- other PDUs ----

    fn on_nop_out(&self, n: &pdu::NopOut) {
        if n.ttt != RESERVED_TAG {
            // The answer to our ping.
            let mut i = self.inner.borrow_mut();
            if i.ping.is_some_and(|(ttt, _)| ttt == n.ttt) {
                i.ping = None;
            }
            return;
        }
        if !self.take_cmd_sn(n.immediate, n.cmd_sn, false) {
            return;
        }
        if n.itt == RESERVED_TAG {
            return; // no answer wanted
        }
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        let data = i.link.scratch().to_vec();
        let seq = self.seq(i, true);
        let nop = NopIn {
            lun: n.lun,
            itt: n.itt,
            ttt: RESERVED_TAG,
            seq,
            data_len: data.len() as u32,
        };
        let data = if data.is_empty() {
            OutData::None
        } else {
            OutData::Owned(data)
        };
        i.link.push(nop.encode(), data, None, None);
    }

    fn on_text(&self, t: &pdu::TextRequest) {
        if !self.take_cmd_sn(t.immediate, t.cmd_sn, false) {
            return;
        }
        let reply = {
            let mut guard = self.inner.borrow_mut();
            let i = &mut *guard;
            let data = i.link.scratch().to_vec();
            let ctx = TextInfo {
                session_type: i.session_params.session_type,
                target_name: i.target_name.clone(),
                initiator_name: i.initiator_name.clone(),
                max_send: i.params.send_segment_limit(),
            };
            match i.login.as_mut() {
                Some(l) => l.text(t, &data, &ctx, self.portal),
                None => Err(pdu::RejectReason::ProtocolError),
            }
        };
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        match reply {
            Ok(reply) => {
                let seq = self.seq(i, true);
                let bhs = reply.response(t.itt, t.lun, seq).encode();
                if let Some(max) = reply.max_send_data_segment_length {
                    i.params.max_send_data_segment_length = max;
                }
                let data = if reply.data.is_empty() {
                    OutData::None
                } else {
                    OutData::Owned(reply.data)
                };
                i.link.push(bhs, data, None, None);
            }
            Err(reason) => {
                let bhs = i.link.header().bhs;
                drop(guard);
                self.reject(reason, &bhs);
            }
        }
    }

    fn on_logout(&self, l: &pdu::LogoutRequest) {
        if !self.take_cmd_sn(l.immediate, l.cmd_sn, false) {
            return;
        }
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        let code = match l.reason {
            pdu::LogoutReason::CloseSession => pdu::LogoutResponseCode::Closed,
            pdu::LogoutReason::CloseConnection if l.cid == i.cid => pdu::LogoutResponseCode::Closed,
            pdu::LogoutReason::CloseConnection => pdu::LogoutResponseCode::CidNotFound,
            _ => pdu::LogoutResponseCode::RecoveryNotSupported,
        };
        let seq = self.seq(i, true);
        let resp = pdu::LogoutResponse {
            response: code,
            itt: l.itt,
            seq,
            time2wait: 0,
            time2retain: 0,
        };
        i.link.push(resp.encode(), OutData::None, None, None);
        let mut others = Vec::new();
        if code == pdu::LogoutResponseCode::Closed {
            i.link.mark_close();
            i.phase = Phase::Closing;
            if l.reason == pdu::LogoutReason::CloseSession {
                // The session's other connections go too.
                if let Some(s) = &i.session {
                    others = s.live_conns();
                }
            }
        }
        drop(guard);
        for c in others {
            if !std::ptr::eq(&*c, self) {
                c.close("session logged out");
            }
        }
    }

    fn on_task_mgmt(&self, t: &pdu::TaskMgmtRequest) {
        if !self.take_cmd_sn(t.immediate, t.cmd_sn, false) {
            return;
        }
        use pdu::TaskMgmtFunction as F;
        use pdu::TaskMgmtResponseCode as R;
        let lun = scsi::decode_lun(&t.lun.0);
        // The connection's own part: commands it still holds (waiting for
        // Data-Out) end here; those at the SCSI layer are the SCSI layer's.
        let itt = t.itt;
        let ours = |c: &Command| match t.function {
            // A command with its response queued is done: not abortable.
            _ if c.responded => false,
            F::AbortTask => c.itt == t.referenced_task_tag,
            F::AbortTaskSet | F::ClearTaskSet | F::LogicalUnitReset => {
                scsi::decode_lun(&c.lun.0) == lun
            }
            F::TargetWarmReset | F::TargetColdReset => true,
            _ => false,
        };
        let held_here = {
            let mut guard = self.inner.borrow_mut();
            let i = &mut *guard;
            let slots: Vec<usize> = i
                .cmds
                .slots
                .iter()
                .filter(|(_, c)| c.itt != itt && !c.executing && ours(c))
                .map(|(s, _)| s)
                .collect();
            let n = slots.len();
            for s in slots {
                abort_slot(&mut i.cmds, s, i.session.as_ref());
            }
            n
        };
        let me = self.me.clone();
        let cold = t.function == F::TargetColdReset;
        let function = t.function;
        let reply = move |r: scsi::TmfResponse| {
            let Some(conn) = me.upgrade() else {
                return;
            };
            let code = match r {
                scsi::TmfResponse::Complete => R::FunctionComplete,
                scsi::TmfResponse::TaskNotFound if held_here > 0 => R::FunctionComplete,
                scsi::TmfResponse::TaskNotFound => R::TaskDoesNotExist,
                scsi::TmfResponse::LunNotFound => R::LunDoesNotExist,
            };
            // Rare and telling when an initiator recovers: always in the log.
            tracing::info!(
                "conn {} ({}): task management {function:?} on LUN {lun}: {code:?}",
                conn.id,
                conn.portal.peer
            );
            conn.tmf_response(itt, code);
            if cold {
                conn.close_after_output();
            }
            conn.flush();
        };
        let Some(session) = self.session() else {
            return;
        };
        let mut port = session.port.borrow_mut();
        let Some(port) = port.as_mut() else {
            drop(port);
            return self.tmf_response(itt, R::FunctionRejected);
        };
        match t.function {
            F::AbortTask => port.abort_task(lun, t.referenced_task_tag as u64, reply),
            F::AbortTaskSet => port.abort_task_set(lun, reply),
            F::ClearTaskSet => port.clear_task_set(lun, reply),
            F::LogicalUnitReset => port.lun_reset(lun, reply),
            F::TargetWarmReset | F::TargetColdReset => port.target_reset(reply),
            _ => self.tmf_response(itt, R::FunctionNotSupported),
        }
    }

    fn tmf_response(&self, itt: u32, response: pdu::TaskMgmtResponseCode) {
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        let seq = self.seq(i, true);
        let r = pdu::TaskMgmtResponse { response, itt, seq };
        i.link.push(r.encode(), OutData::None, None, None);
    }

    /// A Data-Out broke its sequence, which error recovery level 0 cannot
    /// repair: reject it and end its command with CHECK CONDITION (ABORTED
    /// COMMAND, DATA PHASE ERROR); the rest of its data is dropped as it comes.
    /// The connection stays up for the initiator's other commands.
    fn data_out_error(&self, slot: usize, what: &str) {
        tracing::info!("conn {}: {what}", self.id);
        let bhs = self.inner.borrow().link.header().bhs;
        self.reject(pdu::RejectReason::ProtocolError, &bhs);
        {
            let mut i = self.inner.borrow_mut();
            let Some(c) = i.cmds.slots.get_mut(slot) else {
                return;
            };
            let Some(t) = c.task.as_mut() else {
                return;
            };
            const DATA_PHASE_ERROR: u16 = 0x4b00;
            t.check(scsi::Sense::new(
                scsi::sense::key::ABORTED_COMMAND,
                DATA_PHASE_ERROR,
            ));
            c.seqs.clear();
            c.write = false;
            c.executing = true; // no more data goes into it
        }
        self.command_done();
        self.respond(slot);
    }

    /// Sends a Reject carrying the offending header.
    pub fn reject(&self, reason: pdu::RejectReason, bhs: &pdu::Bhs) {
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        let seq = self.seq(i, true);
        let r = pdu::Reject {
            reason,
            seq,
            data_sn_or_r2t_sn: 0,
        };
        i.link
            .push(r.encode(), OutData::Owned(bhs.to_vec()), None, None);
    }

    // ---- login ----

    fn on_login(&self, req: &pdu::LoginRequest) {
        let step = {
            let mut guard = self.inner.borrow_mut();
            let i = &mut *guard;
            let data = i.link.scratch().to_vec();
            let Some(login) = i.login.as_mut() else {
                return;
            };
            login.step(req, &data, self.portal)
        };
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        for (resp, data) in step.responses {
            let data = if data.is_empty() {
                OutData::None
            } else {
                OutData::Owned(data)
            };
            i.link.push(resp, data, None, None);
            if step.failed {
                i.link.mark_close();
            }
        }
        if step.failed {
            i.phase = Phase::Closing;
            return;
        }
        if let Some(done) = step.done {
            i.params = done.conn_params;
            i.cid = done.cid;
            i.stat_sn = done.next_stat_sn;
            i.initiator_name = done.initiator_name;
            i.link.set_digests(Digests {
                header: i.params.header_digest == DigestType::Crc32c,
                data: i.params.data_digest == DigestType::Crc32c,
            });
            match (done.session, done.remote) {
                (Some(session), _) => {
                    i.session_params = session.entry.params;
                    i.target_name = session.entry.target.clone();
                    session.add_conn(&self.rc());
                    i.session = Some(session);
                    i.phase = Phase::FullFeature;
                    drop(guard);
                    let reactor = ferrite_reactor::current_index().unwrap_or(0);
                    super::service::connection_up(self.id, self.describe(reactor));
                }
                (None, Some(entry)) => {
                    drop(guard);
                    self.move_to_session(entry);
                }
                (None, None) => {
                    i.phase = Phase::Closing;
                }
            }
        }
    }

    /// A connection that joined a session living on another reactor goes
    /// there, once its final Login Response is on the wire (the initiator
    /// sends nothing before it, so no input is left behind).
    fn move_to_session(&self, entry: std::sync::Arc<super::session::SessionEntry>) {
        self.flush();
        let moved = {
            let mut guard = self.inner.borrow_mut();
            let i = &mut *guard;
            // Only a TCP connection can move: an RDMA queue pair stays on
            // the reactor whose completion queue it uses.
            let tcp = i.link.as_tcp();
            if !i.link.is_empty() || i.link.buffered() > 0 || i.phase == Phase::Closed {
                None
            } else {
                tcp.and_then(|t| t.sock.try_clone().ok()).map(|sock| Moved {
                    sock,
                    cid: i.cid,
                    stat_sn: i.stat_sn,
                    params: i.params,
                    initiator_name: std::mem::take(&mut i.initiator_name),
                    tsih: entry.tsih,
                })
            }
        };
        let Some(moved) = moved else {
            return self.close("could not move to its session's reactor");
        };
        // Let go of this copy of the socket without shutting the connection.
        self.inner.borrow_mut().phase = Phase::Closed;
        super::group::remove(self);
        let portal = self.portal;
        let (stream, local, peer) = moved.sock.into_parts();
        let (cid, stat_sn, params, initiator_name, tsih) = (
            moved.cid,
            moved.stat_sn,
            moved.params,
            moved.initiator_name,
            moved.tsih,
        );
        let msg = Box::new(move || {
            let sock = Socket::from_parts(stream, local, peer);
            super::group::add_joined(sock, portal, |conn| {
                conn.join(tsih, cid, stat_sn, params, initiator_name)
            });
        });
        if let Err(e) = ferrite_reactor::send(entry.reactor, msg) {
            tracing::error!(
                "conn {}: cannot move to reactor {}: {e}",
                self.id,
                entry.reactor
            );
        }
    }

    /// Puts a connection that moved here into its session, in the full
    /// feature phase. False if the session is gone.
    pub fn join(
        &self,
        tsih: u16,
        cid: u16,
        stat_sn: u32,
        params: ConnectionParams,
        initiator_name: String,
    ) -> bool {
        let Some(session) = Session::local(tsih) else {
            return false;
        };
        {
            let mut i = self.inner.borrow_mut();
            i.params = params;
            i.cid = cid;
            i.stat_sn = stat_sn;
            i.initiator_name = initiator_name;
            i.link.set_digests(Digests {
                header: params.header_digest == DigestType::Crc32c,
                data: params.data_digest == DigestType::Crc32c,
            });
            i.session_params = session.entry.params;
            i.target_name = session.entry.target.clone();
            session.add_conn(&self.rc());
            i.session = Some(session);
            i.phase = Phase::FullFeature;
        }
        let reactor = ferrite_reactor::current_index().unwrap_or(0);
        super::service::connection_up(self.id, self.describe(reactor));
        true
    }

    // ---- output and closing ----

    /// Writes queued PDUs. Returns whether the socket is still writable.
    pub fn flush(&self) {
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        if i.phase == Phase::Closed {
            return;
        }
        // A list kept across calls, so flushing allocates nothing.
        let mut released = std::mem::take(&mut i.released);
        let res = {
            let Inner { link, cmds, .. } = i;
            link.flush(cmds, &mut |slot| released.push(slot))
        };
        for slot in released.drain(..) {
            i.cmds.release(slot);
        }
        i.released = released;
        match res {
            Ok(f) => {
                i.write_blocked = f.blocked;
                if f.close {
                    drop(guard);
                    self.close("logged out");
                }
            }
            Err(e) => {
                drop(guard);
                self.close(&format!("send failed: {e}"));
            }
        }
    }

    /// Closes once everything queued has been written.
    fn close_after_output(&self) {
        let mut i = self.inner.borrow_mut();
        i.phase = Phase::Closing;
        if i.link.is_empty() {
            drop(i);
            self.close("closing");
        } else {
            i.link.mark_close();
        }
    }

    /// Closes now: drops queued output and commands not at the SCSI layer;
    /// tasks at the SCSI layer are dropped when they come back.
    pub fn close(&self, why: &str) {
        let session = {
            let mut guard = self.inner.borrow_mut();
            let i = &mut *guard;
            if i.phase == Phase::Closed {
                return;
            }
            tracing::debug!("conn {} ({}): {why}", self.id, self.portal.peer);
            i.phase = Phase::Closed;
            let mut released = Vec::new();
            i.link.shutdown(&mut |slot| released.push(slot));
            // Commands with RDMA READs under way keep their buffers until the
            // connection itself goes (after the RDMA layer drained its QP).
            let idle: Vec<usize> = i
                .cmds
                .slots
                .iter()
                .filter(|(_, c)| !c.executing && c.fetching == 0)
                .map(|(s, _)| s)
                .collect();
            for s in idle.into_iter().chain(released) {
                if i.cmds.slots.get(s).is_some_and(|c| !c.executing) {
                    i.cmds.release(s);
                }
            }
            i.session.take()
        };
        super::group::remove(self);
        super::service::connection_down(self.id);
        if let Some(s) = session {
            s.remove_conn(self);
        }
    }

    /// Periodic work: NOP-In pings for idle connections, dropping dead ones.
    pub fn tick(&self, now: u64, interval: u64, timeout: u64) {
        let ping = {
            let mut guard = self.inner.borrow_mut();
            let i = &mut *guard;
            // A login that stalls (or a peer that never logs in) is dropped.
            if i.phase == Phase::Login
                && now.wrapping_sub(i.last_rx) > LOGIN_TIMEOUT_SECS * ferrite_reactor::tick_rate()
            {
                drop(guard);
                self.close("login timed out");
                return;
            }
            if i.phase != Phase::FullFeature || interval == 0 {
                return;
            }
            if let Some((_, sent)) = i.ping {
                if now.wrapping_sub(sent) > timeout {
                    drop(guard);
                    self.close("no answer to NOP-In");
                    return;
                }
                return;
            }
            if now.wrapping_sub(i.last_rx) < interval {
                return;
            }
            let ttt = i.next_ping_ttt;
            i.next_ping_ttt = i.next_ping_ttt.wrapping_add(1).max(1) & 0x7fff_ffff | 1;
            i.ping = Some((ttt, now));
            let seq = self.seq(i, false);
            NopIn {
                lun: Lun::default(),
                itt: RESERVED_TAG,
                ttt,
                seq,
                data_len: 0,
            }
        };
        self.inner
            .borrow_mut()
            .link
            .push(ping.encode(), OutData::None, None, None);
        self.flush();
    }

    /// Asks the initiator to log out (before the target stops).
    pub fn request_logout(&self, seconds: u16) {
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        if i.phase != Phase::FullFeature {
            return;
        }
        let seq = self.seq(i, false);
        let msg = pdu::AsyncMessage {
            lun: Lun::default(),
            event: pdu::AsyncEvent::RequestLogout {
                time_to_logout: seconds,
            },
            seq,
            data_len: 0,
        };
        i.link.push(msg.encode(), OutData::None, None, None);
        drop(guard);
        self.flush();
    }
}

impl TaskCallback for Conn {
    fn task_done(&self, tag: u64, task: Task) {
        let slot = tag as usize;
        let (closed, aborted) = {
            let mut i = self.inner.borrow_mut();
            let closed = i.phase == Phase::Closed;
            match i.cmds.slots.get_mut(slot) {
                Some(c) => {
                    // Aborted by task management: the TMF response speaks for it.
                    c.aborted |= task.aborted;
                    c.task = Some(task);
                    c.executing = false;
                    (closed, c.aborted)
                }
                None => return,
            }
        };
        self.command_done();
        if closed {
            self.inner.borrow_mut().cmds.release(slot);
            return;
        }
        if aborted {
            self.inner.borrow_mut().cmds.release(slot);
        } else {
            self.respond(slot);
        }
        // Written once per poll for all the tasks that finished meanwhile.
        super::group::flush_soon(self);
    }
}

/// A finished task's status and its residual: SPDTL against EDTL, also with
/// CHECK CONDITION (a write whose EDTL is short fails with INVALID FIELD IN
/// INFORMATION UNIT and an overflow).
fn status_and_residual(t: &Task, expected: u32) -> (u8, Residual) {
    let (status, cmd_len) = (t.status, t.cmd_len);
    let residual = if cmd_len == 0 && status != scsi::status::GOOD {
        Residual::None
    } else if cmd_len > expected {
        Residual::Overflow(cmd_len - expected)
    } else if cmd_len < expected {
        Residual::Underflow(expected - cmd_len)
    } else {
        Residual::None
    };
    (status, residual)
}

/// The data segment of a SCSI Response: the sense data behind its 2-byte
/// length, or nothing.
fn sense_data(t: &Task) -> (OutData, u32) {
    if t.sense.is_empty() {
        return (OutData::None, 0);
    }
    let s = t.sense.as_bytes();
    let mut buf = [0u8; 100];
    buf[..2].copy_from_slice(&(s.len() as u16).to_be_bytes());
    buf[2..2 + s.len()].copy_from_slice(s);
    let len = 2 + s.len();
    (
        OutData::Sense {
            buf,
            len: len as u8,
        },
        len as u32,
    )
}

/// The slot a Data-Out is for: by TTT for solicited data, by ITT otherwise.
fn find_slot(cmds: &Commands, itt: u32, ttt: u32) -> Option<usize> {
    let slot = if ttt != RESERVED_TAG {
        (ttt & 0xffff) as usize
    } else {
        *cmds.by_itt.get(&itt)?
    };
    cmds.slots
        .get(slot)
        .filter(|c| c.itt == itt && !c.responded)
        .map(|_| slot)
}

/// The Target Transfer Tag of R2T number `r2t_sn` of the command in `slot`.
fn ttt_of(slot: usize, r2t_sn: u32) -> u32 {
    ((r2t_sn & 0x7fff) << 16) | (slot as u32 & 0xffff)
}

/// Aborts a command the connection still holds (not at the SCSI layer).
fn abort_slot(cmds: &mut Commands, slot: usize, session: Option<&Rc<Session>>) {
    let Some(c) = cmds.slots.get(slot) else {
        return;
    };
    if !c.executing {
        if c.fetching > 0 {
            // RDMA READs still write into its buffers: it goes when they land.
            cmds.slots[slot].aborted = true;
        } else {
            cmds.release(slot);
        }
        // Its place in the command window is free again.
        if let Some(s) = session {
            let mut w = s.window.get();
            w.outstanding = w.outstanding.saturating_sub(1);
            s.window.set(w);
        }
    }
}
