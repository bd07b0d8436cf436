//! Persistent reservations (SPC-4 5.13, 6.15, 6.16): PERSISTENT RESERVE IN and
//! OUT, and which commands a persistent reservation lets through.
//!
//! A registration binds a reservation key to an I_T nexus: an initiator port
//! ([`PortId`]) and a relative target port (or every target port, ALL_TG_PT).
//! A reservation has a type and, unless it is an all-registrants type, one
//! holder. Everything lives in the LUN's [`LunState`](super::state::LunState)
//! under its mutex; the I/O path only sees the "reserved" bit.
//!
//! Supported: every service action including REGISTER AND MOVE, SPEC_I_PT,
//! ALL_TG_PT and APTPL ([`aptpl`](super::aptpl)); all six reservation types;
//! logical unit scope only. PREEMPT AND ABORT aborts the preempted nexuses'
//! tasks through [`tmf`](super::tmf) and completes once they are gone.

use std::sync::Arc;

use super::aptpl::{self, Saved, SavedReg};
use super::cdb::{be16, be32, be64};
use super::exec::{Ctx, Done};
use super::opcode;
use super::opcodes::{flags, Command, Handler};
use super::sense::{asc, key, Sense};
use super::state::{Inner, NexusLun};
use super::task::{DataDir, Task};
use super::tid::{self, PortId, TidError};
use super::tmf;

/// The commands of this module, for the dispatcher's tables: PERSISTENT
/// RESERVE IN and OUT, one row per service action.
pub(crate) const COMMANDS: &[Command] = &[
    pr_in_row(0, "PERSISTENT RESERVE IN (READ KEYS)"),
    pr_in_row(1, "PERSISTENT RESERVE IN (READ RESERVATION)"),
    pr_in_row(2, "PERSISTENT RESERVE IN (REPORT CAPABILITIES)"),
    pr_in_row(3, "PERSISTENT RESERVE IN (READ FULL STATUS)"),
    pr_out_row(sa::REGISTER, "PERSISTENT RESERVE OUT (REGISTER)"),
    pr_out_row(sa::RESERVE, "PERSISTENT RESERVE OUT (RESERVE)"),
    pr_out_row(sa::RELEASE, "PERSISTENT RESERVE OUT (RELEASE)"),
    pr_out_row(sa::CLEAR, "PERSISTENT RESERVE OUT (CLEAR)"),
    pr_out_row(sa::PREEMPT, "PERSISTENT RESERVE OUT (PREEMPT)"),
    pr_out_row(
        sa::PREEMPT_AND_ABORT,
        "PERSISTENT RESERVE OUT (PREEMPT AND ABORT)",
    ),
    pr_out_row(
        sa::REGISTER_AND_IGNORE_EXISTING_KEY,
        "PERSISTENT RESERVE OUT (REGISTER AND IGNORE EXISTING KEY)",
    ),
    pr_out_row(
        sa::REGISTER_AND_MOVE,
        "PERSISTENT RESERVE OUT (REGISTER AND MOVE)",
    ),
];

const fn pr_in_row(service: u8, name: &'static str) -> Command {
    Command {
        opcode: opcode::PERSISTENT_RESERVE_IN,
        service_action: Some(service as u16),
        name,
        usage: match service {
            0 => &[0x5e, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
            1 => &[0x5e, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
            2 => &[0x5e, 2, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
            _ => &[0x5e, 3, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
        },
        flags: 0,
        handler: Handler::Now(pr_in),
        offered: None,
    }
}

const fn pr_out_row(service: u8, name: &'static str) -> Command {
    Command {
        opcode: opcode::PERSISTENT_RESERVE_OUT,
        service_action: Some(service as u16),
        name,
        usage: match service {
            0 => &[0x5f, 0, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
            1 => &[0x5f, 1, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
            2 => &[0x5f, 2, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
            3 => &[0x5f, 3, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
            4 => &[0x5f, 4, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
            5 => &[0x5f, 5, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
            6 => &[0x5f, 6, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
            _ => &[0x5f, 7, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
        },
        flags: 0,
        handler: Handler::Later(pr_out),
        offered: None,
    }
}

/// Reservation types.
pub mod rtype {
    pub const WRITE_EXCLUSIVE: u8 = 1;
    pub const EXCLUSIVE_ACCESS: u8 = 3;
    pub const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: u8 = 5;
    pub const EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: u8 = 6;
    pub const WRITE_EXCLUSIVE_ALL_REGISTRANTS: u8 = 7;
    pub const EXCLUSIVE_ACCESS_ALL_REGISTRANTS: u8 = 8;
}

/// PERSISTENT RESERVE OUT service actions.
pub mod sa {
    pub const REGISTER: u8 = 0;
    pub const RESERVE: u8 = 1;
    pub const RELEASE: u8 = 2;
    pub const CLEAR: u8 = 3;
    pub const PREEMPT: u8 = 4;
    pub const PREEMPT_AND_ABORT: u8 = 5;
    pub const REGISTER_AND_IGNORE_EXISTING_KEY: u8 = 6;
    pub const REGISTER_AND_MOVE: u8 = 7;
}

const INVALID_RELEASE_OF_PERSISTENT_RESERVATION: u16 = 0x2604;
/// Most registrations per LUN.
const MAX_REGISTRATIONS: usize = 1024;

fn valid_type(t: u8) -> bool {
    matches!(t, 1 | 3 | 5 | 6 | 7 | 8)
}

fn all_registrants(t: u8) -> bool {
    matches!(t, 7 | 8)
}

fn registrants_only(t: u8) -> bool {
    matches!(t, 5 | 6)
}

fn write_exclusive(t: u8) -> bool {
    matches!(t, 1 | 5 | 7)
}

/// One registered I_T nexus (or, from a format 00b TransportID, every port of
/// one initiator on that target port).
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub key: u64,
    pub port: PortId,
    pub rtp: u16,
    pub all_tg_pt: bool,
    /// The TransportID READ FULL STATUS reports.
    pub tid: Vec<u8>,
}

impl Registration {
    fn covers(&self, port: &PortId, rtp: u16) -> bool {
        self.port.covers(port) && (self.all_tg_pt || self.rtp == rtp)
    }

    fn same_nexus(&self, other: &Registration) -> bool {
        self.port == other.port && self.rtp == other.rtp
    }
}

/// The persistent reservation.
#[derive(Debug, Clone)]
pub(crate) struct Reservation {
    pub rtype: u8,
    /// The holder's registration identity; `None` for all-registrants types.
    pub holder: Option<(PortId, u16)>,
}

/// A LUN's registrations and reservation.
#[derive(Debug, Clone, Default)]
pub(crate) struct PrState {
    pub generation: u32,
    pub regs: Vec<Registration>,
    pub res: Option<Reservation>,
    /// The last APTPL value received (and the state is on disk).
    pub aptpl: bool,
}

impl PrState {
    pub(crate) fn is_reserved(&self) -> bool {
        self.res.is_some()
    }

    pub(crate) fn has_registrations(&self) -> bool {
        !self.regs.is_empty()
    }

    /// The registration of the nexus on `port` through target port `rtp`.
    fn find(&self, port: &PortId, rtp: u16) -> Option<usize> {
        self.regs
            .iter()
            .position(|r| &r.port == port && (r.all_tg_pt || r.rtp == rtp))
            .or_else(|| self.regs.iter().position(|r| r.covers(port, rtp)))
    }

    /// Whether registration `i` holds the reservation.
    fn is_holder(&self, i: usize) -> bool {
        match &self.res {
            None => false,
            Some(r) => match &r.holder {
                None => true,
                Some((p, rtp)) => &self.regs[i].port == p && self.regs[i].rtp == *rtp,
            },
        }
    }

    /// The holder's registration (non all-registrants reservations).
    fn holder_index(&self) -> Option<usize> {
        let (p, rtp) = self.res.as_ref()?.holder.as_ref()?;
        self.regs.iter().position(|r| &r.port == p && r.rtp == *rtp)
    }

    /// SPC-4 5.13.3: RESERVE/RELEASE from this nexus succeed without effect.
    pub(crate) fn spc2_exempt(&self, port: &PortId, rtp: u16) -> bool {
        match self.find(port, rtp) {
            None => false,
            Some(i) => {
                self.is_holder(i)
                    || self
                        .res
                        .as_ref()
                        .is_some_and(|r| registrants_only(r.rtype) || all_registrants(r.rtype))
            }
        }
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Removes registration `i`, releasing the reservation when it goes with
    /// it. Returns whether a registrants-only reservation was released that way
    /// (the remaining registrants then get RESERVATIONS RELEASED).
    fn unregister(&mut self, i: usize) -> bool {
        let holder = self.is_holder(i);
        self.regs.remove(i);
        let Some(res) = &self.res else {
            return false;
        };
        if all_registrants(res.rtype) {
            if self.regs.is_empty() {
                self.res = None;
            }
            return false;
        }
        if holder {
            let t = res.rtype;
            self.res = None;
            return registrants_only(t);
        }
        false
    }

    fn saved(&self) -> Saved {
        let holder = self.holder_index();
        Saved {
            version: 1,
            generation: self.generation,
            registrations: self
                .regs
                .iter()
                .enumerate()
                .map(|(i, r)| SavedReg {
                    key: format!("{:016x}", r.key),
                    transport_id: aptpl::hex(&r.tid),
                    relative_target_port: r.rtp,
                    all_tg_pt: r.all_tg_pt,
                    holder: Some(i) == holder,
                })
                .collect(),
            reservation_type: self.res.as_ref().map_or(0, |r| r.rtype),
        }
    }

    fn from_saved(s: &Saved) -> Option<PrState> {
        let mut st = PrState {
            generation: s.generation,
            aptpl: true,
            ..PrState::default()
        };
        let mut holder = None;
        for r in &s.registrations {
            let tidb = aptpl::unhex(&r.transport_id)?;
            let (port, _) = tid::parse(&tidb).ok()?;
            let key = u64::from_str_radix(&r.key, 16).ok()?;
            if r.holder {
                holder = Some((port.clone(), r.relative_target_port));
            }
            st.regs.push(Registration {
                key,
                port,
                rtp: r.relative_target_port,
                all_tg_pt: r.all_tg_pt,
                tid: tidb,
            });
        }
        let t = s.reservation_type;
        if t != 0 {
            if !valid_type(t) || st.regs.is_empty() {
                return None;
            }
            if all_registrants(t) {
                holder = None;
            } else if holder.is_none() {
                return None;
            }
            st.res = Some(Reservation { rtype: t, holder });
        }
        Some(st)
    }
}

/// The persisted state of the LUN over the bdev `uuid`, or an empty one.
pub(crate) fn load_persisted(uuid: &[u8; 16]) -> PrState {
    match aptpl::load(uuid) {
        Some(s) => PrState::from_saved(&s).unwrap_or_else(|| {
            tracing::error!("inconsistent APTPL state for {}, ignored", aptpl::hex(uuid));
            PrState::default()
        }),
        None => PrState::default(),
    }
}

/// How a command stands with a persistent reservation (SPC-4 tables 49-51,
/// SBC-3 table 13).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Allowed whatever the reservation.
    Allowed,
    /// Reads the medium or the device's state.
    Read,
    /// Changes the medium or the device's state.
    Write,
    /// Decided by the command itself (reservation commands).
    Own,
}

fn class(cmd: &Command, task: &Task) -> Class {
    let cdb = &task.cdb;
    if cmd.flags & flags::MEDIUM_WRITE != 0 {
        return Class::Write;
    }
    match cdb[0] {
        opcode::INQUIRY
        | opcode::REPORT_LUNS
        | opcode::REQUEST_SENSE
        | opcode::TEST_UNIT_READY
        | opcode::READ_CAPACITY_10
        | 0x4d /* LOG SENSE */ => Class::Allowed,
        opcode::PERSISTENT_RESERVE_IN
        | opcode::PERSISTENT_RESERVE_OUT
        | opcode::RESERVE_6
        | opcode::RESERVE_10
        | opcode::RELEASE_6
        | opcode::RELEASE_10 => Class::Own,
        opcode::SERVICE_ACTION_IN_16 => match cdb[1] & 0x1f {
            0x10 => Class::Allowed, // READ CAPACITY (16)
            _ => Class::Read,
        },
        opcode::MAINTENANCE_IN => match cdb[1] & 0x1f {
            // REPORT SUPPORTED OPERATION CODES / TASK MANAGEMENT FUNCTIONS
            0x0c | 0x0d => Class::Read,
            // REPORT TARGET PORT GROUPS, ALIASES, PRIORITY, TIMESTAMP, ...
            _ => Class::Allowed,
        },
        // PREVENT ALLOW MEDIUM REMOVAL with PREVENT zero is allowed.
        0x1e if cdb[4] & 0x03 == 0 => Class::Allowed,
        0x1e => Class::Write,
        // Commands that change the medium or device state, data or not.
        opcode::WRITE_6
        | opcode::WRITE_10
        | opcode::WRITE_12
        | opcode::WRITE_16
        | opcode::WRITE_AND_VERIFY_10
        | opcode::WRITE_AND_VERIFY_12
        | opcode::WRITE_AND_VERIFY_16
        | opcode::WRITE_SAME_10
        | opcode::WRITE_SAME_16
        | opcode::UNMAP
        | opcode::COMPARE_AND_WRITE
        | opcode::ORWRITE_16
        | opcode::SYNCHRONIZE_CACHE_10
        | opcode::SYNCHRONIZE_CACHE_16
        | opcode::MODE_SELECT_6
        | opcode::MODE_SELECT_10
        | opcode::START_STOP_UNIT
        | opcode::EXTENDED_COPY
        | 0x04 /* FORMAT UNIT */
        | 0x48 /* SANITIZE */
        | 0x3b /* WRITE BUFFER */
        | 0x1d /* SEND DIAGNOSTIC */
        | 0x3f /* WRITE LONG (10) */
        | 0x9c /* WRITE ATOMIC (16) */
        | 0x7f /* variable length (XDWRITEREAD, WRITE (32), ...) */ => Class::Write,
        0x9f /* SERVICE ACTION OUT (16) */ | 0xa4 /* MAINTENANCE OUT */ => Class::Write,
        _ => match task.dir {
            DataDir::Write | DataDir::Bidi => Class::Write,
            _ => Class::Read,
        },
    }
}

/// Whether a persistent reservation makes `task` from nexus `nx` conflict.
pub(crate) fn conflicts(pr: &PrState, nx: &NexusLun, cmd: &Command, task: &Task) -> bool {
    let Some(res) = &pr.res else {
        return false;
    };
    let c = class(cmd, task);
    if matches!(c, Class::Allowed | Class::Own) {
        return false;
    }
    let reg = pr.find(&nx.port, nx.rtp());
    if let Some(i) = reg {
        if pr.is_holder(i) {
            return false;
        }
    }
    let registered = reg.is_some();
    let t = res.rtype;
    let registrant_access = registered && (registrants_only(t) || all_registrants(t));
    match c {
        Class::Read => !(write_exclusive(t) || registrant_access),
        _ => !registrant_access,
    }
}

/// PERSISTENT RESERVE IN.
pub(crate) fn pr_in(ctx: &mut Ctx<'_>, task: &mut Task) {
    let view = &ctx.view;
    let service = task.cdb[1] & 0x1f;
    let alloc = be16(&task.cdb[7..]) as usize;
    let state = &view.lun.state;
    let g = state.lock();
    let pr = &g.pr;
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&pr.generation.to_be_bytes());
    match service {
        0 => {
            // READ KEYS
            r.extend_from_slice(&((8 * pr.regs.len()) as u32).to_be_bytes());
            for reg in &pr.regs {
                r.extend_from_slice(&reg.key.to_be_bytes());
            }
        }
        1 => {
            // READ RESERVATION
            match &pr.res {
                None => r.extend_from_slice(&0u32.to_be_bytes()),
                Some(res) => {
                    r.extend_from_slice(&16u32.to_be_bytes());
                    let key = if all_registrants(res.rtype) {
                        0
                    } else {
                        pr.holder_index().map_or(0, |i| pr.regs[i].key)
                    };
                    r.extend_from_slice(&key.to_be_bytes());
                    r.extend_from_slice(&[0; 4]);
                    r.push(0);
                    r.push(res.rtype & 0x0f); // scope 0: logical unit
                    r.extend_from_slice(&[0; 2]);
                }
            }
        }
        2 => {
            // REPORT CAPABILITIES
            r.clear();
            r.extend_from_slice(&8u16.to_be_bytes());
            // CRH, SIP_C, ATP_C, PTPL_C.
            r.push(0x10 | 0x08 | 0x04 | 0x01);
            // TMV, ALLOW COMMANDS 001b, PTPL_A.
            r.push(0x80 | 0x10 | u8::from(pr.aptpl));
            // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX; EX_AC_AR.
            r.push(0x80 | 0x40 | 0x20 | 0x08 | 0x02);
            r.push(0x01);
            r.extend_from_slice(&[0; 2]);
        }
        3 => {
            // READ FULL STATUS
            r.extend_from_slice(&[0; 4]);
            for (i, reg) in pr.regs.iter().enumerate() {
                let holder = pr.is_holder(i);
                r.extend_from_slice(&reg.key.to_be_bytes());
                r.extend_from_slice(&[0; 4]);
                r.push(if reg.all_tg_pt { 0x02 } else { 0 } | u8::from(holder));
                r.push(if holder {
                    pr.res.as_ref().map_or(0, |x| x.rtype & 0x0f)
                } else {
                    0
                });
                r.extend_from_slice(&[0; 4]);
                r.extend_from_slice(&reg.rtp.to_be_bytes());
                r.extend_from_slice(&(reg.tid.len() as u32).to_be_bytes());
                r.extend_from_slice(&reg.tid);
            }
            let n = (r.len() - 8) as u32;
            r[4..8].copy_from_slice(&n.to_be_bytes());
        }
        _ => {
            drop(g);
            task.invalid_field(1, Some(4));
            return;
        }
    }
    drop(g);
    task.reply(&r, alloc);
}

/// What a PERSISTENT RESERVE OUT still has to do after its state change.
#[derive(Default)]
struct After {
    persist: Option<aptpl::Job>,
    /// PREEMPT AND ABORT: the nexuses whose tasks on this LUN are aborted.
    abort: Option<Vec<u64>>,
    /// Unit attentions to queue once the lock is dropped.
    uas: Vec<(Arc<NexusLun>, u16)>,
}

/// The parameter list fields of the basic PERSISTENT RESERVE OUT format.
struct Params {
    key: u64,
    sark: u64,
    spec_i_pt: bool,
    all_tg_pt: bool,
    aptpl: bool,
}

enum Fail {
    Conflict,
    Check(Sense),
}

fn invalid_param(byte: u16, bit: Option<u8>) -> Fail {
    Fail::Check(
        Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_PARAMETER_LIST)
            .with_field_pointer(false, byte, bit),
    )
}

fn invalid_cdb(byte: u16, bit: Option<u8>) -> Fail {
    Fail::Check(
        Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB)
            .with_field_pointer(true, byte, bit),
    )
}

fn length_error() -> Fail {
    Fail::Check(Sense::new(
        key::ILLEGAL_REQUEST,
        asc::PARAMETER_LIST_LENGTH_ERROR,
    ))
}

/// PERSISTENT RESERVE OUT. Finishes the task itself: at once, or once the
/// APTPL state is on disk and (PREEMPT AND ABORT) the aborted tasks are gone.
pub(crate) fn pr_out(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let view = &ctx.view;
    let after = match pr_out_apply(view, &mut task) {
        Ok(a) => {
            task.good();
            a
        }
        Err(Fail::Conflict) => {
            task.reservation_conflict();
            After::default()
        }
        Err(Fail::Check(s)) => {
            task.check(s);
            After::default()
        }
    };
    for (n, code) in &after.uas {
        n.push_ua(*code);
    }
    drop(after.uas);
    let waits = u32::from(after.persist.is_some()) + u32::from(after.abort.is_some());
    if waits == 0 {
        return done.finish(task);
    }
    let key = tmf::park(done, task, waits);
    if let Some(mut job) = after.persist {
        let origin = ferrite_reactor::current_index().unwrap_or(0);
        let handle = ferrite_reactor::handle();
        job.done = Box::new(move || {
            let _ = handle.try_send(origin, Box::new(move || tmf::park_done(key)));
        });
        aptpl::submit(job);
    }
    if let Some(nexuses) = after.abort {
        tmf::abort_preempted(view, nexuses, move || tmf::park_done(key));
    }
}

fn pr_out_apply(view: &super::dev::LunView, task: &mut Task) -> Result<After, Fail> {
    let cdb = task.cdb;
    let service = cdb[1] & 0x1f;
    if service > sa::REGISTER_AND_MOVE {
        return Err(invalid_cdb(1, Some(4)));
    }
    let scope = cdb[2] >> 4;
    let rt = cdb[2] & 0x0f;
    let param_len = be32(&cdb[5..]) as usize;
    let len = param_len.min(task.data.len());
    let mut p = vec![0u8; len];
    task.data.copy_to_slice(0, &mut p);
    if len < 24 || len < param_len {
        return Err(length_error());
    }
    let params = Params {
        key: be64(&p[0..]),
        sark: be64(&p[8..]),
        spec_i_pt: service != sa::REGISTER_AND_MOVE && p[20] & 0x08 != 0,
        all_tg_pt: service != sa::REGISTER_AND_MOVE && p[20] & 0x04 != 0,
        aptpl: if service == sa::REGISTER_AND_MOVE {
            p[17] & 0x01 != 0
        } else {
            p[20] & 0x01 != 0
        },
    };
    if params.spec_i_pt && service != sa::REGISTER {
        return Err(invalid_param(20, Some(3)));
    }
    if service != sa::REGISTER_AND_MOVE && !params.spec_i_pt && param_len != 24 {
        return Err(length_error());
    }
    if matches!(
        service,
        sa::RESERVE | sa::RELEASE | sa::PREEMPT | sa::PREEMPT_AND_ABORT
    ) {
        if scope != 0 {
            return Err(invalid_cdb(2, Some(7)));
        }
        if !valid_type(rt) {
            return Err(invalid_cdb(2, Some(3)));
        }
    }
    let nx = &view.nx;
    let state = &view.lun.state;
    let mut g = state.lock();
    let mut after = After::default();
    let was_aptpl = g.pr.aptpl;
    let before = g.pr.generation;
    let before_res = g.pr.res.as_ref().map(|r| r.rtype);
    let changed = match service {
        sa::REGISTER | sa::REGISTER_AND_IGNORE_EXISTING_KEY => {
            register(&mut g, nx, service, &params, &p, &mut after)?
        }
        sa::RESERVE => reserve(&mut g, nx, &params, rt)?,
        sa::RELEASE => release(&mut g, nx, &params, rt, &mut after)?,
        sa::CLEAR => clear(&mut g, nx, &params, &mut after)?,
        sa::PREEMPT | sa::PREEMPT_AND_ABORT => preempt(
            &mut g,
            nx,
            &params,
            rt,
            service == sa::PREEMPT_AND_ABORT,
            &mut after,
        )?,
        _ => register_and_move(&mut g, nx, &params, &p, param_len, &mut after)?,
    };
    state.sync_pr_bit(&g);
    let changed =
        changed || g.pr.generation != before || g.pr.res.as_ref().map(|r| r.rtype) != before_res;
    if changed && (g.pr.aptpl || was_aptpl) {
        if g.pr.regs.is_empty() {
            g.pr.aptpl = false;
        }
        let contents = if g.pr.aptpl {
            Some(serde_json::to_vec_pretty(&g.pr.saved()).unwrap_or_default())
        } else {
            None
        };
        after.persist = Some(aptpl::Job {
            path: aptpl::path_for(&state.uuid),
            contents,
            seq: aptpl::next_seq(),
            done: Box::new(|| {}),
        });
    }
    drop(g);
    Ok(after)
}

/// The identity under which nexus `nx` registers.
fn own_registration(nx: &NexusLun, key: u64, all_tg_pt: bool) -> Registration {
    // The nexus's own TransportID when it is a well-formed one for this port.
    let own = &nx.nexus.transport_id;
    let tid = match tid::parse(own) {
        Ok((p, n)) if p == nx.port => own[..n].to_vec(),
        _ => nx.port.to_transport_id(),
    };
    Registration {
        key,
        port: nx.port.clone(),
        rtp: nx.rtp(),
        all_tg_pt,
        tid,
    }
}

/// The attached nexuses `pick` selects (for unit attentions and aborts).
fn nexuses_where(g: &Inner, pick: impl Fn(&NexusLun) -> bool) -> Vec<Arc<NexusLun>> {
    g.live_nexuses().into_iter().filter(|n| pick(n)).collect()
}

/// The attached nexuses, but `me`, that registration set `regs` covers.
fn covered(g: &Inner, regs: &[Registration], me: u64) -> Vec<Arc<NexusLun>> {
    nexuses_where(g, |n| {
        n.nexus.id != me && regs.iter().any(|r| r.covers(&n.port, n.rtp()))
    })
}

/// The attached nexuses, but `me`, registered now.
fn registered_others(g: &Inner, me: u64) -> Vec<Arc<NexusLun>> {
    let regs = g.pr.regs.clone();
    covered(g, &regs, me)
}

fn register(
    g: &mut Inner,
    nx: &NexusLun,
    service: u8,
    params: &Params,
    p: &[u8],
    after: &mut After,
) -> Result<bool, Fail> {
    let ignore = service == sa::REGISTER_AND_IGNORE_EXISTING_KEY;
    let mine = g.pr.find(&nx.port, nx.rtp());
    match mine {
        None => {
            if !ignore && params.key != 0 {
                return Err(Fail::Conflict);
            }
            if params.sark == 0 {
                // Unregistering what is not registered: nothing to do.
                return Ok(false);
            }
            let mut new = vec![own_registration(nx, params.sark, params.all_tg_pt)];
            if params.spec_i_pt {
                new.extend(specified_ports(nx, params, p)?);
            }
            // A port named twice, or already registered, is an error.
            for (i, r) in new.iter().enumerate() {
                let dup = new[..i].iter().any(|o| o.same_nexus(r))
                    || g.pr.regs.iter().any(|o| o.same_nexus(r));
                if dup {
                    return Err(invalid_param(24, None));
                }
            }
            if g.pr.regs.len() + new.len() > MAX_REGISTRATIONS {
                return Err(Fail::Check(Sense::new(
                    key::ILLEGAL_REQUEST,
                    asc::INSUFFICIENT_REGISTRATION_RESOURCES,
                )));
            }
            g.pr.regs.extend(new);
        }
        Some(i) => {
            if params.spec_i_pt {
                return Err(invalid_param(20, Some(3)));
            }
            if !ignore && params.key != g.pr.regs[i].key {
                return Err(Fail::Conflict);
            }
            if params.sark == 0 {
                if g.pr.unregister(i) {
                    after.uas.extend(uas(
                        registered_others(g, nx.nexus.id),
                        asc::RESERVATIONS_RELEASED,
                    ));
                }
            } else {
                g.pr.regs[i].key = params.sark;
            }
        }
    }
    g.pr.aptpl = params.aptpl;
    g.pr.bump();
    Ok(true)
}

/// The registrations SPEC_I_PT asks for: one per TransportID, on the target
/// port the command came through (or all of them, ALL_TG_PT).
fn specified_ports(nx: &NexusLun, params: &Params, p: &[u8]) -> Result<Vec<Registration>, Fail> {
    if p.len() < 28 {
        return Err(length_error());
    }
    let tid_len = be32(&p[24..]) as usize;
    if 28 + tid_len > p.len() {
        return Err(length_error());
    }
    let mut out = Vec::new();
    let mut at = 28;
    while at < 28 + tid_len {
        let (port, n) = match tid::parse(&p[at..28 + tid_len]) {
            Ok(x) => x,
            Err(TidError::Truncated) => return Err(length_error()),
            Err(TidError::Invalid) => return Err(invalid_param(at as u16, None)),
        };
        if port == nx.port {
            return Err(invalid_param(at as u16, None));
        }
        out.push(Registration {
            key: params.sark,
            port,
            rtp: nx.rtp(),
            all_tg_pt: params.all_tg_pt,
            tid: p[at..at + n].to_vec(),
        });
        at += n;
    }
    Ok(out)
}

fn uas(ns: Vec<Arc<NexusLun>>, code: u16) -> impl Iterator<Item = (Arc<NexusLun>, u16)> {
    ns.into_iter().map(move |n| (n, code))
}

/// The caller's registration, checked against the RESERVATION KEY field.
fn registered_with_key(g: &Inner, nx: &NexusLun, key: u64) -> Result<usize, Fail> {
    match g.pr.find(&nx.port, nx.rtp()) {
        Some(i) if g.pr.regs[i].key == key => Ok(i),
        _ => Err(Fail::Conflict),
    }
}

fn reserve(g: &mut Inner, nx: &NexusLun, params: &Params, rt: u8) -> Result<bool, Fail> {
    let i = registered_with_key(g, nx, params.key)?;
    if let Some(res) = &g.pr.res {
        if g.pr.is_holder(i) && res.rtype == rt {
            return Ok(false);
        }
        return Err(Fail::Conflict);
    }
    let r = &g.pr.regs[i];
    g.pr.res = Some(Reservation {
        rtype: rt,
        holder: if all_registrants(rt) {
            None
        } else {
            Some((r.port.clone(), r.rtp))
        },
    });
    Ok(true)
}

fn release(
    g: &mut Inner,
    nx: &NexusLun,
    params: &Params,
    rt: u8,
    after: &mut After,
) -> Result<bool, Fail> {
    let i = registered_with_key(g, nx, params.key)?;
    let Some(res) = &g.pr.res else {
        return Ok(false);
    };
    if !g.pr.is_holder(i) {
        return Ok(false);
    }
    if res.rtype != rt {
        return Err(Fail::Check(Sense::new(
            key::ILLEGAL_REQUEST,
            INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
        )));
    }
    let t = res.rtype;
    g.pr.res = None;
    if t != rtype::WRITE_EXCLUSIVE && t != rtype::EXCLUSIVE_ACCESS {
        after.uas.extend(uas(
            registered_others(g, nx.nexus.id),
            asc::RESERVATIONS_RELEASED,
        ));
    }
    Ok(true)
}

fn clear(g: &mut Inner, nx: &NexusLun, params: &Params, after: &mut After) -> Result<bool, Fail> {
    registered_with_key(g, nx, params.key)?;
    after.uas.extend(uas(
        registered_others(g, nx.nexus.id),
        asc::RESERVATIONS_PREEMPTED,
    ));
    g.pr.regs.clear();
    g.pr.res = None;
    g.pr.bump();
    Ok(true)
}

fn preempt(
    g: &mut Inner,
    nx: &NexusLun,
    params: &Params,
    rt: u8,
    abort: bool,
    after: &mut After,
) -> Result<bool, Fail> {
    let me = registered_with_key(g, nx, params.key)?;
    let my_reg = g.pr.regs[me].clone();
    let sark = params.sark;
    // Which registrations go: those with key SARK (never the caller's own, as
    // LIO does), or with an all-registrants reservation and SARK zero, all
    // others.
    let (remove_all_others, takes_reservation) = match &g.pr.res {
        None => {
            if sark == 0 {
                return Err(invalid_param(8, None));
            }
            (false, false)
        }
        Some(res) if all_registrants(res.rtype) => (sark == 0, sark == 0),
        Some(_) => {
            let holder_key = g.pr.holder_index().map(|i| g.pr.regs[i].key);
            if Some(sark) == holder_key {
                (false, true)
            } else {
                if sark == 0 {
                    return Err(invalid_param(8, None));
                }
                (false, false)
            }
        }
    };
    let removed: Vec<Registration> =
        g.pr.regs
            .iter()
            .filter(|r| !r.same_nexus(&my_reg) && (remove_all_others || r.key == sark))
            .cloned()
            .collect();
    if removed.is_empty() && !takes_reservation {
        return Err(Fail::Conflict);
    }
    let hit = covered(g, &removed, nx.nexus.id);
    g.pr.regs
        .retain(|r| !removed.iter().any(|x| x.same_nexus(r) && x.key == r.key));
    if takes_reservation {
        let old = g.pr.res.take();
        g.pr.res = Some(Reservation {
            rtype: rt,
            holder: if all_registrants(rt) {
                None
            } else {
                Some((my_reg.port.clone(), my_reg.rtp))
            },
        });
        // Registrants that stay see their reservation change type.
        if old.is_some_and(|o| o.rtype != rt) {
            let stay: Vec<Arc<NexusLun>> = registered_others(g, nx.nexus.id)
                .into_iter()
                .filter(|n| !hit.iter().any(|h| Arc::ptr_eq(h, n)))
                .collect();
            after.uas.extend(uas(stay, asc::RESERVATIONS_RELEASED));
        }
    } else if g.pr.regs.is_empty() {
        g.pr.res = None;
    }
    if abort {
        after.abort = Some(hit.iter().map(|n| n.nexus.id).collect());
    }
    after.uas.extend(uas(hit, asc::REGISTRATIONS_PREEMPTED));
    g.pr.bump();
    Ok(true)
}

fn register_and_move(
    g: &mut Inner,
    nx: &NexusLun,
    params: &Params,
    p: &[u8],
    param_len: usize,
    _after: &mut After,
) -> Result<bool, Fail> {
    let tid_len = be32(&p[20..]) as usize;
    if 24 + tid_len > param_len {
        return Err(length_error());
    }
    let me = registered_with_key(g, nx, params.key)?;
    if params.sark == 0 {
        return Err(invalid_param(8, None));
    }
    let Some(res) = &g.pr.res else {
        return Err(Fail::Conflict);
    };
    if !g.pr.is_holder(me) || all_registrants(res.rtype) {
        return Err(Fail::Conflict);
    }
    let rtype = res.rtype;
    let rtp = be16(&p[18..]);
    if rtp == 0 {
        return Err(invalid_param(18, None));
    }
    let (port, n) = match tid::parse(&p[24..24 + tid_len]) {
        Ok(x) => x,
        Err(TidError::Truncated) => return Err(length_error()),
        Err(TidError::Invalid) => return Err(invalid_param(24, None)),
    };
    // Moving to the same initiator port is an error, whatever the target port.
    if port.covers(&nx.port) || nx.port.covers(&port) {
        return Err(invalid_param(24, None));
    }
    let unreg = p[17] & 0x02 != 0;
    let dest = match g
        .pr
        .regs
        .iter()
        .position(|r| r.port == port && (r.all_tg_pt || r.rtp == rtp))
    {
        Some(d) => d,
        None => {
            if g.pr.regs.len() >= MAX_REGISTRATIONS {
                return Err(Fail::Check(Sense::new(
                    key::ILLEGAL_REQUEST,
                    asc::INSUFFICIENT_REGISTRATION_RESOURCES,
                )));
            }
            g.pr.regs.push(Registration {
                key: params.sark,
                port,
                rtp,
                all_tg_pt: false,
                tid: p[24..24 + n].to_vec(),
            });
            g.pr.regs.len() - 1
        }
    };
    let d = &g.pr.regs[dest];
    g.pr.res = Some(Reservation {
        rtype,
        holder: Some((d.port.clone(), d.rtp)),
    });
    if unreg {
        let mine = g.pr.find(&nx.port, nx.rtp());
        if let Some(i) = mine {
            g.pr.regs.remove(i);
        }
    }
    g.pr.aptpl = params.aptpl;
    g.pr.bump();
    Ok(true)
}
