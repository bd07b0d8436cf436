//! One SRP RDMA channel after login, as a state machine: every input (an IU
//! received, an RDMA transfer or table fetch finished, a SCSI task or task
//! management function back, a disconnect, the target stopping) goes through
//! [`Channel::apply`]; every effect (SEND an IU, RDMA READ/WRITE, execute a
//! task, run a task management function, disconnect) is a call on the
//! [`ChannelIo`] it is given. The results of effects come back later as
//! [`Event`]s. Nothing here knows verbs or reactors, so it is tested with a
//! fake data mover and a fake SCSI layer, and the RDMA transport drives it
//! from its completion poller.
//!
//! # Commands
//!
//! ```text
//! SRP_CMD ─ write, immediate data ──────────── copy from the IU ─┐
//!         ─ write, descriptors ─ [fetch table] ─ RDMA READ ──────┼─ execute ─┐
//!         ─ read ─────────────── [fetch table] ──────────────────┘           │
//!         ─ no data ─────────────────────────────────────────────┘           │
//! task back ─ read data ─ RDMA WRITE ─┬─ SEND SRP_RSP (status, sense, residuals)
//!           ─ otherwise ──────────────┘
//! ```
//!
//! An indirect descriptor whose table is not all in the IU has the table
//! fetched by RDMA READ first. Malformed commands (bad formats or counts,
//! descriptor lengths that do not add up, immediate data outside the IU, a
//! CDB too long) are answered CHECK CONDITION, ILLEGAL REQUEST, INVALID FIELD
//! IN INFORMATION UNIT; IUs of an unknown or target-only type end the channel
//! with SRP_T_LOGOUT.
//!
//! # Credits
//!
//! The login granted `queue_depth` credits, one per request slot. Every
//! request (SRP_CMD, SRP_TSK_MGMT) takes a slot; a freed slot's credit goes
//! back in the next SRP_RSP's `req_lim_delta`, so the initiator never has
//! more requests outstanding than the channel has slots (and receive
//! buffers). Credits freed with no response to carry them (aborted commands)
//! go back in an SRP_CRED_REQ once the channel is idle, one at a time.
//!
//! # Task management
//!
//! Commands the channel still holds (fetching a table, reading data) are
//! aborted here; those at the SCSI layer by the SCSI layer. The response waits
//! until every covered command with an RDMA transfer under way has finished
//! it, so no RDMA WRITE reaches memory the initiator has taken back.
//!
//! # Ending
//!
//! SRP_I_LOGOUT, a disconnect or a failed transfer end the channel: commands
//! still at the SCSI layer are dropped as they come back. [`Event::Shutdown`]
//! sends SRP_T_LOGOUT first.

use ferrite_lib::scsi::sense::{asc, key};
use ferrite_lib::scsi::{
    decode_lun, status, DataDir, Sense, Task, TaskAttr, TaskData, TmfResponse, MAX_CDB,
};
use ferrite_reactor::mem::Buffer;

use super::iu::{
    rsp_code, task_attr, Cmd, CredReq, DataBuf, Desc, ILogout, InitiatorIu, IuError, LogoutReason,
    Residual, Rsp, TLogout, TmFunction, TskMgmt,
};

/// Descriptors a slot keeps room for from the start (Linux `ib_srp` puts up
/// to 12 in the IU by default); longer tables grow it once.
const INLINE_DESCS: usize = 16;

/// A channel's settings, from the login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Credits granted: request slots.
    pub queue_depth: u16,
    /// Largest IU the target may send.
    pub max_ti_iu_len: u32,
    /// Where immediate data starts in an SRP_CMD, if the login allowed it.
    pub imm_data_offset: Option<u16>,
    /// Largest data transfer of one command.
    pub max_data_len: u32,
    /// Largest indirect descriptor table accepted, in descriptors.
    pub max_descs: u32,
}

impl Default for ChannelConfig {
    fn default() -> ChannelConfig {
        ChannelConfig {
            queue_depth: 128,
            max_ti_iu_len: 256,
            imm_data_offset: None,
            max_data_len: 8 << 20,
            max_descs: 4096,
        }
    }
}

/// A task management function for the SCSI layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tmf {
    AbortTask { tag: u64 },
    AbortTaskSet,
    ClearTaskSet,
    LunReset,
}

/// The effects the channel asks for. Each asynchronous one answers with an
/// [`Event`] naming the same slot.
pub trait ChannelIo {
    /// SENDs `iu` (the caller copies it into a send buffer).
    fn send(&mut self, iu: &[u8]);
    /// RDMA READs the descriptor table `table` into `into[..table.len]`;
    /// answers [`Event::TableFetched`].
    fn fetch_table(&mut self, slot: u16, table: Desc, into: &mut Buffer);
    /// RDMA READs the initiator's `remote` ranges, in order, into `local`
    /// (as long as they are together); answers [`Event::DataDone`].
    fn read(&mut self, slot: u16, remote: &[Desc], local: &mut TaskData);
    /// RDMA WRITEs the first `len` bytes of `local` to the initiator's
    /// `remote` ranges, in order; answers [`Event::DataDone`]. The mover may
    /// swap `local` for an empty `TaskData` of the same capacity and keep the
    /// buffers until its WRITEs complete: it may answer as soon as they are
    /// posted, since the SRP_RSP sent next goes out behind them on the same
    /// queue pair.
    fn write(&mut self, slot: u16, local: &mut TaskData, len: usize, remote: &[Desc]);
    /// Hands `task` to the SCSI layer; answers [`Event::TaskDone`].
    fn execute(&mut self, slot: u16, task: Task);
    /// Runs a task management function on LUN `lun` at the SCSI layer;
    /// answers [`Event::TmfDone`].
    fn task_management(&mut self, slot: u16, tmf: Tmf, lun: u64);
    /// Ends the connection once the SENDs asked for so far are out.
    fn disconnect(&mut self);
    /// The channel has ended with `at_scsi` (LUN, tag) still at the SCSI
    /// layer: have them aborted there (they come back through
    /// [`Event::TaskDone`] and are dropped), and when this was the nexus's
    /// last channel, the I_T nexus is lost.
    fn channel_ended(&mut self, at_scsi: &[(u64, u64)]);
}

/// An input to the channel.
#[derive(Debug)]
pub enum Event<'a> {
    /// An IU arrived (the bytes of one RECV).
    Recv(&'a [u8]),
    /// A [`ChannelIo::fetch_table`] finished (`ok == false`: it failed).
    TableFetched { slot: u16, ok: bool },
    /// A [`ChannelIo::read`] or [`ChannelIo::write`] finished.
    DataDone { slot: u16, ok: bool },
    /// A task came back from the SCSI layer.
    TaskDone { slot: u16, task: Task },
    /// A task management function finished at the SCSI layer.
    TmfDone { slot: u16, response: TmfResponse },
    /// The connection is gone (CM disconnect, QP error).
    Disconnected,
    /// The target is stopping: log the initiator out.
    Shutdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Live,
    /// Ended: commands coming back are dropped.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    /// RDMA READ of the descriptor table under way.
    FetchingTable,
    /// RDMA READ of the write data under way.
    ReadingData,
    /// At the SCSI layer.
    Executing,
    /// RDMA WRITE of the read data under way.
    WritingData,
    /// A task management function.
    Tmf,
}

struct Slot {
    state: SlotState,
    tag: u64,
    lun: u64,
    /// Data-out (write) rather than data-in.
    write: bool,
    /// The initiator's buffer length for the command's data.
    expected: u64,
    /// Initiator memory, in order.
    descs: Vec<Desc>,
    /// The indirect table as fetched, and its total data length.
    table: Option<Buffer>,
    table_total: u64,
    /// Here while the channel holds it; `None` while at the SCSI layer.
    task: Option<Task>,
    /// Aborted by task management or the channel's end: no response.
    aborted: bool,
    /// A task management function (its slot) waits for this one.
    waiter: Option<u16>,
    // For Tmf slots:
    /// Covered commands whose RDMA transfer it waits for.
    waiting_for: u16,
    /// The SCSI layer's part is done, with this answer.
    scsi_result: Option<u8>,
    function: Option<TmFunction>,
    task_tag: u64,
}

impl Slot {
    fn new(max_data: usize) -> Slot {
        Slot {
            state: SlotState::Free,
            tag: 0,
            lun: 0,
            write: false,
            expected: 0,
            descs: Vec::with_capacity(INLINE_DESCS),
            table: None,
            table_total: 0,
            task: Some(Task::new(max_data)),
            aborted: false,
            waiter: None,
            waiting_for: 0,
            scsi_result: None,
            function: None,
            task_tag: 0,
        }
    }

    fn in_transfer(&self) -> bool {
        matches!(
            self.state,
            SlotState::FetchingTable | SlotState::ReadingData | SlotState::WritingData
        )
    }
}

/// Counters for `srp_get_channels`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub commands: u64,
    pub task_management: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub errors: u64,
}

/// One SRP channel's protocol state.
pub struct Channel {
    config: ChannelConfig,
    phase: Phase,
    slots: Vec<Slot>,
    free: Vec<u16>,
    /// Credits freed and not yet returned to the initiator.
    credits_owed: u32,
    /// Tag of the SRP_CRED_REQ awaiting its SRP_CRED_RSP.
    cred_req: Option<u64>,
    next_cred_tag: u64,
    /// Where IUs to send are built.
    out: Vec<u8>,
    stats: ChannelStats,
}

/// Sense for a malformed SRP_CMD.
fn invalid_iu() -> Sense {
    Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_INFORMATION_UNIT)
}

impl Channel {
    pub fn new(config: ChannelConfig) -> Channel {
        let depth = config.queue_depth.max(1);
        let max_data = config.max_data_len as usize;
        Channel {
            config,
            phase: Phase::Live,
            slots: (0..depth).map(|_| Slot::new(max_data)).collect(),
            free: (0..depth).rev().collect(),
            credits_owed: 0,
            cred_req: None,
            next_cred_tag: 1,
            out: vec![0u8; (config.max_ti_iu_len as usize).max(64)],
            stats: ChannelStats::default(),
        }
    }

    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// Requests in the channel's hands or the SCSI layer's.
    pub fn busy_slots(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The channel has ended.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Ended and nothing outstanding: the transport may free it.
    pub fn is_finished(&self) -> bool {
        self.is_closed() && self.busy_slots() == 0
    }

    /// Credits the initiator holds now, by the channel's count.
    pub fn initiator_credits(&self) -> u32 {
        self.slots.len() as u32 - self.busy_slots() as u32 - self.credits_owed
    }

    /// The single entry: applies one input, asking `io` for the effects.
    pub fn apply(&mut self, event: Event<'_>, io: &mut impl ChannelIo) {
        match event {
            Event::Recv(iu) => self.on_recv(iu, io),
            Event::TableFetched { slot, ok } => self.on_table(slot, ok, io),
            Event::DataDone { slot, ok } => self.on_data_done(slot, ok, io),
            Event::TaskDone { slot, task } => self.on_task_done(slot, task, io),
            Event::TmfDone { slot, response } => self.on_tmf_done(slot, response, io),
            Event::Disconnected => self.close(io, false),
            Event::Shutdown => {
                if self.phase == Phase::Live {
                    let iu = TLogout {
                        reason: LogoutReason::NoReason,
                        tag: 0,
                    }
                    .encode();
                    io.send(&iu);
                    self.close(io, true);
                }
            }
        }
        self.return_idle_credits(io);
    }

    fn close(&mut self, io: &mut impl ChannelIo, disconnect: bool) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        let mut at_scsi = Vec::new();
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            match s.state {
                SlotState::Free => {}
                // Gone with the QP: free now, no answer comes.
                SlotState::Tmf => self.free_slot(i as u16),
                // Come back through TaskDone / DataDone (flushed).
                state => {
                    s.aborted = true;
                    if state == SlotState::Executing {
                        at_scsi.push((s.lun, s.tag));
                    }
                }
            }
        }
        if disconnect {
            io.disconnect();
        }
        io.channel_ended(&at_scsi);
    }

    fn logout(
        &mut self,
        reason: LogoutReason,
        why: &dyn std::fmt::Display,
        io: &mut impl ChannelIo,
    ) {
        tracing::info!("SRP channel ends ({why}): SRP_T_LOGOUT {reason:?}");
        self.stats.errors += 1;
        let iu = TLogout { reason, tag: 0 }.encode();
        io.send(&iu);
        self.close(io, true);
    }

    fn on_recv(&mut self, iu: &[u8], io: &mut impl ChannelIo) {
        if self.phase != Phase::Live {
            return;
        }
        match InitiatorIu::parse(iu) {
            Ok(InitiatorIu::Cmd(cmd)) => self.on_cmd(&cmd, io),
            Ok(InitiatorIu::TskMgmt(t)) => self.on_tsk_mgmt(&t, io),
            Ok(InitiatorIu::ILogout(ILogout { .. })) => {
                tracing::debug!("SRP_I_LOGOUT");
                self.close(io, true);
            }
            Ok(InitiatorIu::CredRsp(r)) => {
                if self.cred_req == Some(r.tag) {
                    self.cred_req = None;
                } else {
                    tracing::debug!("SRP_CRED_RSP for tag {:#x} not asked for", r.tag);
                }
            }
            // The channel sends no SRP_AER_REQ; an answer is ignored.
            Ok(InitiatorIu::AerRsp(_)) => {}
            Err(e @ IuError::Short { .. })
                if iu.first() == Some(&super::iu::opcode::CMD) && iu.len() >= 16 =>
            {
                // A command too short for what it says: answer it.
                self.reject_cmd(u64::from_be_bytes(iu[8..16].try_into().unwrap()), &e, io);
            }
            Err(e @ (IuError::BadFormat { .. } | IuError::BadCount { .. })) => {
                let tag = u64::from_be_bytes(iu[8..16].try_into().unwrap());
                self.reject_cmd(tag, &e, io);
            }
            Err(e @ IuError::Short { .. }) => self.logout(LogoutReason::InvalidIuLength, &e, io),
            Err(e) => self.logout(LogoutReason::InvalidIuType, &e, io),
        }
    }

    /// Answers a command that takes no slot with CHECK CONDITION, returning
    /// its credit at once.
    fn reject_cmd(&mut self, tag: u64, why: &dyn std::fmt::Display, io: &mut impl ChannelIo) {
        tracing::info!("SRP_CMD {tag:#x} refused: {why}");
        self.stats.errors += 1;
        self.credits_owed += 1;
        let sense = invalid_iu();
        self.send_rsp(
            tag,
            status::CHECK_CONDITION,
            sense.as_bytes(),
            Residual::Exact,
            Residual::Exact,
            None,
            io,
        );
    }

    /// Answers a request no slot is free for (the initiator overran its
    /// credits) with BUSY.
    fn busy(&mut self, tag: u64, tmf: bool, io: &mut impl ChannelIo) {
        tracing::warn!("SRP initiator exceeded its {} credits", self.slots.len());
        self.stats.errors += 1;
        self.credits_owed += 1;
        if tmf {
            self.send_rsp(
                tag,
                status::GOOD,
                &[],
                Residual::Exact,
                Residual::Exact,
                Some(rsp_code::TMF_FAILED),
                io,
            );
        } else {
            self.send_rsp(
                tag,
                status::BUSY,
                &[],
                Residual::Exact,
                Residual::Exact,
                None,
                io,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_rsp(
        &mut self,
        tag: u64,
        status: u8,
        sense: &[u8],
        data_out: Residual,
        data_in: Residual,
        response: Option<u8>,
        io: &mut impl ChannelIo,
    ) {
        let rsp = Rsp {
            req_lim_delta: std::mem::take(&mut self.credits_owed),
            tag,
            status,
            data_out,
            data_in,
            response,
            sense,
        };
        let n = rsp.encode(&mut self.out);
        io.send(&self.out[..n]);
    }

    fn take_slot(&mut self) -> Option<u16> {
        let i = self.free.pop()?;
        let s = &mut self.slots[i as usize];
        s.aborted = false;
        s.waiter = None;
        s.descs.clear();
        s.table = None;
        s.table_total = 0;
        s.waiting_for = 0;
        s.scsi_result = None;
        s.function = None;
        Some(i)
    }

    /// Frees a slot; its credit is owed to the initiator. Tells a waiting task
    /// management function.
    fn free_slot(&mut self, i: u16) {
        let s = &mut self.slots[i as usize];
        if s.state == SlotState::Free {
            return;
        }
        s.state = SlotState::Free;
        s.table = None;
        if let Some(t) = s.task.as_mut() {
            t.data.clear();
        }
        let waiter = s.waiter.take();
        self.free.push(i);
        self.credits_owed += 1;
        if let Some(w) = waiter {
            let ws = &mut self.slots[w as usize];
            if ws.state == SlotState::Tmf {
                ws.waiting_for = ws.waiting_for.saturating_sub(1);
            }
        }
    }

    fn on_cmd(&mut self, cmd: &Cmd<'_>, io: &mut impl ChannelIo) {
        self.stats.commands += 1;
        let Some(i) = self.take_slot() else {
            return self.busy(cmd.tag, false, io);
        };
        if let Err(why) = self.start_cmd(i, cmd, io) {
            // The slot goes back without its credit: the answer returns it.
            self.slots[i as usize].state = SlotState::Free;
            self.free.push(i);
            self.reject_cmd(cmd.tag, &why, io);
        }
    }

    /// Sets slot `i` up for `cmd` and starts it.
    fn start_cmd(&mut self, i: u16, cmd: &Cmd<'_>, io: &mut impl ChannelIo) -> Result<(), String> {
        let (buf, write) = match (cmd.data_out, cmd.data_in) {
            (DataBuf::None, DataBuf::None) => (DataBuf::None, false),
            (out, DataBuf::None) => (out, true),
            (DataBuf::None, inn) => (inn, false),
            _ => return Err("bidirectional commands are not supported".into()),
        };
        let expected = buf.byte_len();
        if expected > self.config.max_data_len as u64 {
            return Err(format!(
                "{expected}-byte transfer above the {}-byte limit",
                self.config.max_data_len
            ));
        }
        if cmd.cdb().len() > MAX_CDB {
            return Err(format!("{}-byte CDB", cmd.cdb().len()));
        }
        let imm = match buf {
            DataBuf::Immediate { .. } => {
                let Some(off) = self.config.imm_data_offset else {
                    return Err("immediate data on a channel that did not ask for it".into());
                };
                cmd.immediate_data(off as usize)
                    .map_err(|e| e.to_string())?
            }
            _ => &[],
        };
        let max_descs = self.config.max_descs as usize;
        let s = &mut self.slots[i as usize];
        s.tag = cmd.tag;
        s.lun = decode_lun(&cmd.lun);
        s.write = write;
        s.expected = expected;
        let task = s.task.as_mut().expect("a free slot holds its task");
        task.reset();
        task.lun = s.lun;
        task.tag = cmd.tag;
        task.set_cdb(cmd.cdb());
        task.expected_len = expected.min(u32::MAX as u64) as u32;
        task.dir = match (&buf, write) {
            (DataBuf::None, _) => DataDir::None,
            (_, true) => DataDir::Write,
            (_, false) => DataDir::Read,
        };
        task.attr = match cmd.task_attr {
            task_attr::HEAD_OF_QUEUE => TaskAttr::HeadOfQueue,
            task_attr::ORDERED => TaskAttr::Ordered,
            task_attr::ACA => TaskAttr::Aca,
            _ => TaskAttr::Simple,
        };
        match buf {
            DataBuf::None => {}
            DataBuf::Immediate { .. } => {
                if !task.data.alloc(imm.len()) {
                    return Err("out of buffers".into());
                }
                task.data.copy_from_slice(0, imm);
            }
            DataBuf::Direct(d) => s.descs.push(d),
            DataBuf::Indirect(ind) if ind.is_complete() => {
                s.descs.extend(ind.inline_descs());
                let sum: u64 = s.descs.iter().map(|d| d.len as u64).sum();
                if sum != ind.total_len as u64 {
                    return Err(format!(
                        "descriptors add up to {sum} bytes, the command says {}",
                        ind.total_len
                    ));
                }
            }
            DataBuf::Indirect(ind) => {
                if ind.table_count() > max_descs {
                    return Err(format!("{}-descriptor table", ind.table_count()));
                }
                let Some(mut table) = Buffer::alloc(ind.table.len as usize) else {
                    return Err("out of buffers".into());
                };
                s.state = SlotState::FetchingTable;
                s.table_total = ind.total_len as u64;
                io.fetch_table(i, ind.table, &mut table);
                s.table = Some(table);
                return Ok(());
            }
        }
        self.data_ready(i, io)
    }

    /// The slot's descriptors are known: read the write data, or execute.
    fn data_ready(&mut self, i: u16, io: &mut impl ChannelIo) -> Result<(), String> {
        let s = &mut self.slots[i as usize];
        let task = s.task.as_mut().expect("held");
        if s.write && !s.descs.is_empty() {
            if !task.data.alloc(s.expected as usize) {
                return Err("out of buffers".into());
            }
            s.state = SlotState::ReadingData;
            io.read(i, &s.descs, &mut task.data);
            return Ok(());
        }
        self.execute(i, io);
        Ok(())
    }

    fn execute(&mut self, i: u16, io: &mut impl ChannelIo) {
        let s = &mut self.slots[i as usize];
        s.state = SlotState::Executing;
        let task = s.task.take().expect("held");
        io.execute(i, task);
    }

    fn slot_in(&mut self, i: u16, state: SlotState) -> Option<&mut Slot> {
        self.slots.get_mut(i as usize).filter(|s| s.state == state)
    }

    fn on_table(&mut self, i: u16, ok: bool, io: &mut impl ChannelIo) {
        let Some(s) = self.slot_in(i, SlotState::FetchingTable) else {
            return;
        };
        if !ok {
            return self.transfer_failed(i, io);
        }
        if s.aborted {
            return self.free_slot(i);
        }
        let table = s.table.take().expect("fetched into");
        let n = table.len() / Desc::LEN;
        s.descs.clear();
        s.descs.extend((0..n).map(|k| Desc::table_entry(&table, k)));
        drop(table);
        let sum: u64 = s.descs.iter().map(|d| d.len as u64).sum();
        let (tag, total) = (s.tag, s.table_total);
        let result = if sum != total {
            Err(format!(
                "descriptor table adds up to {sum} bytes, the command says {total}"
            ))
        } else {
            self.data_ready(i, io)
        };
        if let Err(why) = result {
            self.slots[i as usize].state = SlotState::Free;
            self.free.push(i);
            self.reject_cmd(tag, &why, io);
        }
    }

    /// An RDMA transfer failed: the QP is in error, so the channel ends.
    fn transfer_failed(&mut self, i: u16, io: &mut impl ChannelIo) {
        self.stats.errors += 1;
        self.free_slot(i);
        if self.phase == Phase::Live {
            tracing::info!("SRP channel ends: an RDMA transfer failed");
            self.close(io, true);
        }
    }

    fn on_data_done(&mut self, i: u16, ok: bool, io: &mut impl ChannelIo) {
        let Some(s) = self.slots.get_mut(i as usize) else {
            return;
        };
        match s.state {
            SlotState::ReadingData => {
                if !ok {
                    return self.transfer_failed(i, io);
                }
                if s.aborted {
                    return self.free_slot(i);
                }
                self.stats.bytes_written += s.expected;
                self.execute(i, io);
            }
            SlotState::WritingData => {
                if !ok {
                    return self.transfer_failed(i, io);
                }
                if s.aborted {
                    return self.free_slot(i);
                }
                self.respond(i, io);
            }
            _ => {}
        }
    }

    fn on_task_done(&mut self, i: u16, task: Task, io: &mut impl ChannelIo) {
        let Some(s) = self.slot_in(i, SlotState::Executing) else {
            return;
        };
        s.aborted |= task.aborted;
        s.task = Some(task);
        if s.aborted {
            return self.free_slot(i);
        }
        let task = s.task.as_mut().expect("just put back");
        let len = task.data.len().min(s.expected as usize);
        if !s.write && len > 0 && !s.descs.is_empty() {
            s.state = SlotState::WritingData;
            io.write(i, &mut task.data, len, &s.descs);
            self.stats.bytes_read += len as u64;
            return;
        }
        self.respond(i, io);
    }

    /// Sends the SRP_RSP of command slot `i` and frees it.
    fn respond(&mut self, i: u16, io: &mut impl ChannelIo) {
        let s = &self.slots[i as usize];
        let task = s.task.as_ref().expect("held");
        let residual = Residual::of(s.expected, task.cmd_len as u64);
        let (data_out, data_in) = match task.dir {
            DataDir::Write => (residual, Residual::Exact),
            DataDir::Read => (Residual::Exact, residual),
            _ => (Residual::Exact, Residual::Exact),
        };
        let (tag, st) = (s.tag, task.status);
        self.free_slot(i);
        let task = self.slots[i as usize].task.take().expect("held");
        let sense = if st == status::CHECK_CONDITION {
            task.sense.as_bytes()
        } else {
            &[]
        };
        self.send_rsp(tag, st, sense, data_out, data_in, None, io);
        self.slots[i as usize].task = Some(task);
    }

    fn on_tsk_mgmt(&mut self, t: &TskMgmt, io: &mut impl ChannelIo) {
        self.stats.task_management += 1;
        let Some(i) = self.take_slot() else {
            return self.busy(t.tag, true, io);
        };
        let lun = decode_lun(&t.lun);
        {
            let s = &mut self.slots[i as usize];
            s.state = SlotState::Tmf;
            s.tag = t.tag;
            s.lun = lun;
            s.function = Some(t.function);
            s.task_tag = t.task_tag;
        }
        let tmf = match t.function {
            TmFunction::AbortTask => Tmf::AbortTask { tag: t.task_tag },
            TmFunction::AbortTaskSet => Tmf::AbortTaskSet,
            TmFunction::ClearTaskSet => Tmf::ClearTaskSet,
            TmFunction::LunReset => Tmf::LunReset,
            // No NACA support, so no ACA condition to clear.
            TmFunction::ClearAca => return self.tmf_scsi_done(i, rsp_code::NO_FAILURE, io),
            TmFunction::Other(code) => {
                tracing::info!("SRP_TSK_MGMT function {code:#x} not supported");
                return self.tmf_scsi_done(i, rsp_code::TMF_NOT_SUPPORTED, io);
            }
        };
        // The channel's own part: commands not yet at the SCSI layer end here.
        let (mut here, mut at_scsi) = (false, false);
        for (k, s) in self.slots.iter_mut().enumerate() {
            if k as u16 == i || !covers(&tmf, lun, s) {
                continue;
            }
            here = true;
            match s.state {
                SlotState::FetchingTable | SlotState::ReadingData => s.aborted = true,
                SlotState::Executing => at_scsi = true,
                _ => {}
            }
        }
        match tmf {
            // On this channel and not at the SCSI layer: done here. A tag this
            // channel does not hold may be another channel's of the same
            // nexus: the SCSI layer looks for it on every reactor.
            Tmf::AbortTask { .. } if here && !at_scsi => {
                self.tmf_scsi_done(i, rsp_code::NO_FAILURE, io)
            }
            _ => io.task_management(i, tmf, lun),
        }
    }

    fn on_tmf_done(&mut self, i: u16, response: TmfResponse, io: &mut impl ChannelIo) {
        if self.slot_in(i, SlotState::Tmf).is_none() {
            return;
        }
        let code = match response {
            // ABORT TASK of a task that has just finished: done as well.
            TmfResponse::Complete | TmfResponse::TaskNotFound => rsp_code::NO_FAILURE,
            TmfResponse::LunNotFound => rsp_code::INCORRECT_LUN,
        };
        self.tmf_scsi_done(i, code, io);
    }

    /// The SCSI part of function slot `i` is done: wait for the covered
    /// commands still moving data, then answer.
    fn tmf_scsi_done(&mut self, i: u16, code: u8, io: &mut impl ChannelIo) {
        let (lun, function, task_tag) = {
            let s = &self.slots[i as usize];
            (s.lun, s.function, s.task_tag)
        };
        let tmf = match function {
            Some(TmFunction::AbortTask) => Some(Tmf::AbortTask { tag: task_tag }),
            Some(TmFunction::AbortTaskSet) => Some(Tmf::AbortTaskSet),
            Some(TmFunction::ClearTaskSet) => Some(Tmf::ClearTaskSet),
            Some(TmFunction::LunReset) => Some(Tmf::LunReset),
            _ => None,
        };
        let mut waits = 0;
        if let Some(tmf) = tmf {
            for (k, s) in self.slots.iter_mut().enumerate() {
                if k as u16 != i && s.in_transfer() && s.waiter.is_none() && covers(&tmf, lun, s) {
                    s.waiter = Some(i);
                    waits += 1;
                }
            }
        }
        let s = &mut self.slots[i as usize];
        s.waiting_for = waits;
        s.scsi_result = Some(code);
        self.answer_ready_tmfs(io);
    }

    /// Answers the task management functions with nothing left to wait for.
    fn answer_ready_tmfs(&mut self, io: &mut impl ChannelIo) {
        if self.phase != Phase::Live {
            return;
        }
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.state != SlotState::Tmf || s.waiting_for > 0 {
                continue;
            }
            let Some(code) = s.scsi_result else {
                continue;
            };
            let tag = s.tag;
            self.free_slot(i as u16);
            self.send_rsp(
                tag,
                status::GOOD,
                &[],
                Residual::Exact,
                Residual::Exact,
                Some(code),
                io,
            );
        }
    }

    /// Returns owed credits in an SRP_CRED_REQ when no response is coming to
    /// carry them; answers functions whose waits ended.
    fn return_idle_credits(&mut self, io: &mut impl ChannelIo) {
        self.answer_ready_tmfs(io);
        if self.phase != Phase::Live || self.credits_owed == 0 || self.cred_req.is_some() {
            return;
        }
        if self
            .slots
            .iter()
            .any(|s| s.state != SlotState::Free && !s.aborted)
        {
            // A response will carry them.
            return;
        }
        let tag = self.next_cred_tag;
        self.next_cred_tag += 1;
        let iu = CredReq {
            req_lim_delta: std::mem::take(&mut self.credits_owed),
            tag,
        }
        .encode();
        self.cred_req = Some(tag);
        io.send(&iu);
    }
}

/// Whether function `tmf` on `lun` covers command slot `s`.
fn covers(tmf: &Tmf, lun: u64, s: &Slot) -> bool {
    if matches!(s.state, SlotState::Free | SlotState::Tmf) {
        return false;
    }
    match tmf {
        Tmf::AbortTask { tag } => s.tag == *tag,
        _ => s.lun == lun,
    }
}

#[cfg(test)]
mod tests;
