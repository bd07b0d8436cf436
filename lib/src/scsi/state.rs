//! What the nexuses of one LUN share across reactors: reservations (SPC-2 and
//! persistent), unit attentions, held EXTENDED COPY results.
//!
//! The I/O path reads two atomics per command: the nexus's "unit attention
//! pending" flag and the LUN's reservation word (an SPC-2 holder's nexus id and a
//! "persistent reservation held" bit). Only when one of them is set, or for the
//! reservation commands themselves, does a command take the LUN's mutex.
//!
//! Each port's view of a LUN holds a [`NexusLun`]: the nexus's unit-attention
//! queue for that LUN. The LUN keeps weak references to them, so it can queue
//! unit attentions for every nexus; a nexus whose ports are all gone drops out
//! (and any SPC-2 reservation it held is released, as on I_T nexus loss).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ferrite_bdev::Bdev;

use super::dev::{LunView, Nexus};
use super::exec::Ctx;
use super::opcode;
use super::opcodes::{flags, Command};
use super::pr::{self, PrState};
use super::sense::{asc, key, Sense};
use super::task::Task;
use super::tid::PortId;
use super::tmf;
use super::xcopy::CopyResults;

/// Bit of the reservation word: a persistent reservation is held.
const PR_RESERVED: u64 = 1 << 63;
/// Bits of the reservation word: the nexus id holding an SPC-2 reservation.
const SPC2_HOLDER: u64 = !PR_RESERVED;
/// Most unit attentions queued per nexus and LUN.
const MAX_UA: usize = 16;

/// The shared state of one LUN.
pub struct LunState {
    /// See the module docs; zero when nothing is reserved.
    word: AtomicU64,
    /// TAS in the control mode page: tasks aborted for another nexus end with
    /// TASK ABORTED status instead of silently.
    tas: AtomicBool,
    inner: Mutex<Inner>,
    /// The bdev's UUID (names the APTPL file).
    pub(crate) uuid: [u8; 16],
}

pub(crate) struct Inner {
    nexuses: Vec<Weak<NexusLun>>,
    pub(crate) pr: PrState,
    pub(crate) copies: CopyResults,
}

impl LunState {
    /// State for a LUN over `bdev`; loads persisted (APTPL) reservations.
    pub(crate) fn new(bdev: &Arc<Bdev>) -> Arc<LunState> {
        let uuid = *bdev.uuid().as_bytes();
        let pr = pr::load_persisted(&uuid);
        let reserved = pr.is_reserved();
        Arc::new(LunState {
            word: AtomicU64::new(if reserved { PR_RESERVED } else { 0 }),
            tas: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                nexuses: Vec::new(),
                pr,
                copies: CopyResults::default(),
            }),
            uuid,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the TAS bit (the control mode page owner calls this).
    pub(crate) fn set_tas(&self, tas: bool) {
        self.tas.store(tas, Ordering::Relaxed);
    }

    pub(crate) fn tas(&self) -> bool {
        self.tas.load(Ordering::Relaxed)
    }

    /// Keeps the "persistent reservation held" bit in step; call under the lock.
    pub(crate) fn sync_pr_bit(&self, inner: &Inner) {
        if inner.pr.is_reserved() {
            self.word.fetch_or(PR_RESERVED, Ordering::AcqRel);
        } else {
            self.word.fetch_and(!PR_RESERVED, Ordering::AcqRel);
        }
    }

    /// Takes the SPC-2 reservation for `nexus`; false when another holds it.
    /// Call under the lock (so it does not race persistent reservations).
    pub(crate) fn spc2_reserve(&self, nexus: u64) -> bool {
        let mut cur = self.word.load(Ordering::Acquire);
        loop {
            let holder = cur & SPC2_HOLDER;
            if holder != 0 && holder != nexus {
                return false;
            }
            let new = (cur & PR_RESERVED) | nexus;
            match self
                .word
                .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    /// Releases the SPC-2 reservation if `nexus` holds it (any thread, no lock).
    pub(crate) fn spc2_release(&self, nexus: u64) -> bool {
        let mut cur = self.word.load(Ordering::Acquire);
        loop {
            if cur & SPC2_HOLDER != nexus || nexus == 0 {
                return false;
            }
            match self.word.compare_exchange(
                cur,
                cur & PR_RESERVED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    /// Releases any SPC-2 reservation (LUN and target reset).
    pub(crate) fn spc2_clear(&self) {
        self.word.fetch_and(PR_RESERVED, Ordering::AcqRel);
    }

    /// The nexuses attached now (strong references; drop them after any lock).
    pub(crate) fn nexuses(&self) -> Vec<Arc<NexusLun>> {
        self.lock().live_nexuses()
    }

    /// Queues the unit attention `asc` for every attached nexus but `except`.
    pub(crate) fn ua_all(&self, asc: u16, except: Option<u64>) {
        let all = self.nexuses();
        for n in &all {
            if Some(n.nexus.id) != except {
                n.push_ua(asc);
            }
        }
    }
}

impl Inner {
    /// The nexuses attached now. (Dropping one of these under the lock is fine:
    /// a `NexusLun`'s drop touches atomics only.)
    pub(crate) fn live_nexuses(&self) -> Vec<Arc<NexusLun>> {
        self.nexuses.iter().filter_map(Weak::upgrade).collect()
    }

    /// Forgets nexus `id` (I_T nexus loss).
    pub(crate) fn detach(&mut self, id: u64) {
        self.nexuses
            .retain(|w| w.upgrade().is_some_and(|n| n.nexus.id != id));
    }
}

/// One nexus's standing with one LUN: its identity and unit attention queue.
pub struct NexusLun {
    pub(crate) nexus: Arc<Nexus>,
    /// The nexus's initiator port, parsed once.
    pub(crate) port: PortId,
    ua_pending: AtomicBool,
    ua: Mutex<VecDeque<u16>>,
    state: Arc<LunState>,
}

impl NexusLun {
    /// The relative target port of the nexus.
    pub(crate) fn rtp(&self) -> u16 {
        self.nexus.relative_target_port
    }

    /// Whether a unit attention is pending (one atomic load).
    #[inline]
    pub(crate) fn ua_pending(&self) -> bool {
        self.ua_pending.load(Ordering::Acquire)
    }

    fn ua_lock(&self) -> MutexGuard<'_, VecDeque<u16>> {
        self.ua.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a unit attention; the same condition is not queued twice.
    pub(crate) fn push_ua(&self, asc: u16) {
        let mut q = self.ua_lock();
        if !q.contains(&asc) {
            if q.len() == MAX_UA {
                q.pop_front();
            }
            q.push_back(asc);
        }
        self.ua_pending.store(true, Ordering::Release);
    }

    /// Takes the oldest unit attention.
    pub(crate) fn pop_ua(&self) -> Option<u16> {
        let mut q = self.ua_lock();
        let a = q.pop_front();
        self.ua_pending.store(!q.is_empty(), Ordering::Release);
        a
    }

    /// Drops queued unit attentions with this code (all of them with `None`).
    pub(crate) fn clear_ua(&self, asc: Option<u16>) {
        let mut q = self.ua_lock();
        match asc {
            Some(a) => q.retain(|&x| x != a),
            None => q.clear(),
        }
        self.ua_pending.store(!q.is_empty(), Ordering::Release);
    }

    /// The unit attentions queued now, oldest first.
    pub(crate) fn queued_ua(&self) -> Vec<u16> {
        self.ua_lock().iter().copied().collect()
    }
}

impl Drop for NexusLun {
    fn drop(&mut self) {
        // The nexus is gone from this LUN: its SPC-2 reservation goes with it.
        self.state.spc2_release(self.nexus.id);
    }
}

impl std::fmt::Debug for NexusLun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NexusLun({})", self.nexus.initiator_port)
    }
}

/// The standing of `nexus` with the LUN whose state is `state`: the existing one
/// when another port of the nexus has it, else a new one with a POWER ON, RESET
/// unit attention queued (a new I_T nexus, as LIO does at login).
pub(crate) fn attach(state: &Arc<LunState>, nexus: &Arc<Nexus>) -> Arc<NexusLun> {
    let mut g = state.lock();
    g.nexuses.retain(|w| w.strong_count() > 0);
    let found = g
        .nexuses
        .iter()
        .filter_map(Weak::upgrade)
        .find(|n| n.nexus.id == nexus.id);
    if let Some(n) = found {
        return n;
    }
    let mut q = VecDeque::with_capacity(4);
    q.push_back(asc::POWER_ON_RESET);
    let n = Arc::new(NexusLun {
        nexus: nexus.clone(),
        port: PortId::of_nexus(nexus),
        ua_pending: AtomicBool::new(true),
        ua: Mutex::new(q),
        state: state.clone(),
    });
    g.nexuses.push(Arc::downgrade(&n));
    n
}

/// Commands an SPC-2 reservation held by another nexus lets through.
fn spc2_allows(op: u8) -> bool {
    matches!(
        op,
        opcode::INQUIRY
            | opcode::REQUEST_SENSE
            | opcode::REPORT_LUNS
            | opcode::RELEASE_6
            | opcode::RELEASE_10
    )
}

/// Admits `task` (command `cmd`) to the LUN of `ctx`: reports a pending unit
/// attention, or ends it with RESERVATION CONFLICT. Returns false when the task
/// is finished (the dispatcher hands it back). Also starts tracking the task
/// for task management. The common case costs two atomic loads.
#[inline]
pub(crate) fn before_command(ctx: &mut Ctx<'_>, cmd: &'static Command, task: &mut Task) -> bool {
    tmf::track(task, &ctx.view);
    if task.opcode() == opcode::REPORT_LUNS {
        super::ua::report_luns_done(ctx.port);
    }
    let view = &ctx.view;
    if !view.nx.ua_pending() && view.lun.state.word.load(Ordering::Acquire) == 0 {
        return true;
    }
    admit_slow(view, cmd, task)
}

#[cold]
fn admit_slow(view: &LunView, cmd: &'static Command, task: &mut Task) -> bool {
    let nx = &view.nx;
    let op = task.opcode();
    // INQUIRY, REPORT LUNS and REQUEST SENSE (which reports it) pass.
    if nx.ua_pending() && cmd.flags & flags::UA_EXEMPT == 0 {
        if let Some(a) = nx.pop_ua() {
            task.check(Sense::new(key::UNIT_ATTENTION, a));
            return false;
        }
    }
    let state = &view.lun.state;
    let word = state.word.load(Ordering::Acquire);
    let holder = word & SPC2_HOLDER;
    if holder != 0 {
        // SPC-2: PERSISTENT RESERVE IN/OUT conflict under any SPC-2 reservation.
        let pr_cmd = matches!(
            op,
            opcode::PERSISTENT_RESERVE_IN | opcode::PERSISTENT_RESERVE_OUT
        );
        if pr_cmd || (holder != nx.nexus.id && !spc2_allows(op)) {
            task.reservation_conflict();
            return false;
        }
    }
    if word & PR_RESERVED != 0 {
        let conflict = pr::conflicts(&state.lock().pr, nx, cmd, task);
        if conflict {
            task.reservation_conflict();
            return false;
        }
    }
    true
}
