//! Per-reactor I/O channels: where I/O is submitted, tracked and completed.
//!
//! Each reactor has at most one channel per bdev. A channel keeps its outstanding
//! I/O in a slab, hands each to the module's [`ChannelBackend`] as a [`BdevIo`],
//! and completes it through this reactor's completion queue, drained by a poller,
//! so a completion never runs inside the submitter's call stack and always runs on
//! the submitting reactor.
//!
//! Compare is emulated (read, then compare) for modules without it, and
//! compare-and-write always runs here: it locks its LBA range on every reactor's
//! channel (waiting for overlapping I/O in flight to finish and holding back new
//! overlapping I/O), compares, writes and unlocks. The lock costs the I/O path one
//! relaxed atomic load while no range is locked.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ferrite_reactor::{self as reactor, ticks, Poll};
use slab::Slab;

use crate::bdev::Bdev;
use crate::io::{IoCallback, IoData, IoError, IoRequest, IoStatus, IoType};

/// Most I/O outstanding on one channel; beyond this submit answers `NoResources`.
pub const MAX_OUTSTANDING: usize = 65536;
/// Completions handled per poller run.
const COMPLETION_BATCH: usize = 1024;

/// A module's per-reactor half of a bdev.
pub trait ChannelBackend {
    /// Starts `io`. The backend completes it later with [`BdevIo::complete`]
    /// (which may be called right away: completion is always deferred).
    fn submit(&mut self, io: BdevIo);
}

/// Where an I/O stands on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// With the backend (or an internal step).
    InFlight,
    /// Held back behind a locked range.
    Parked,
    /// A compare-and-write waiting for, or holding, its range lock.
    LockOwner,
}

struct Slot {
    req: Option<IoRequest>,
    callback: Rc<dyn IoCallback>,
    tag: u64,
    start: u64,
    io_type: IoType,
    state: SlotState,
    /// For an internal step of a compare-and-write: the owner's slot, whose lock
    /// this I/O may pass.
    lock_owner: Option<usize>,
    /// For a forwarded I/O: the offset to restore when it comes back.
    saved_offset: u64,
}

/// What a backend needs to know about an I/O, in one borrow.
#[derive(Debug, Clone, Copy)]
pub struct IoParams {
    pub io_type: IoType,
    pub offset_blocks: u64,
    pub num_blocks: u64,
    pub fua: bool,
}

pub(crate) struct Channel {
    bdev: Arc<Bdev>,
    reactor: usize,
    me: Weak<Channel>,
    slots: RefCell<Slab<Slot>>,
    backend: RefCell<Option<Box<dyn ChannelBackend>>>,
    parked: RefCell<VecDeque<usize>>,
    lock_waits: RefCell<Vec<LockWait>>,
}

/// A locked LBA range of a bdev (held by one compare-and-write).
#[derive(Debug, Clone)]
pub(crate) struct LockedRange {
    offset: u64,
    num: u64,
    owner_reactor: usize,
    owner_slot: usize,
}

/// A range lock a channel has been asked to drain for.
struct LockWait {
    range: LockedRange,
    ack: Arc<DrainAck>,
}

/// Counts channels still draining for a new lock; the last one wakes the owner.
struct DrainAck {
    remaining: AtomicUsize,
    bdev_id: u64,
    owner_reactor: usize,
    owner_slot: usize,
}

thread_local! {
    static CHANNELS: RefCell<HashMap<u64, Rc<Channel>>> = RefCell::new(HashMap::new());
    static COMPLETIONS: RefCell<VecDeque<(Rc<Channel>, usize, IoStatus)>> =
        RefCell::new(VecDeque::with_capacity(4096));
    static POLLER: Cell<bool> = const { Cell::new(false) };
}

/// Internal steps, carried in the upper bits of the tag of an I/O the channel
/// submits for itself.
const STEP_FORWARD: u64 = 1 << 32;
const STEP_CAW_READ: u64 = 2 << 32;
const STEP_CAW_WRITE: u64 = 3 << 32;
const STEP_COMPARE_READ: u64 = 4 << 32;
const SLOT_MASK: u64 = (1 << 32) - 1;

/// A reactor's handle on a bdev for submitting I/O. Cheap to clone; not `Send`.
#[derive(Clone)]
pub struct IoChannel(Rc<Channel>);

impl IoChannel {
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.0.bdev
    }

    /// Submits `req`. On success `callback.io_done(tag, ..)` runs later on this
    /// reactor with the request (and its data) given back. A request that is bad
    /// (out of range, wrong length, unsupported) or finds no room is refused at once
    /// and handed back with the reason.
    #[inline]
    pub fn submit(
        &self,
        req: IoRequest,
        callback: &Rc<dyn IoCallback>,
        tag: u64,
    ) -> Result<(), (IoError, IoRequest)> {
        self.0.submit(req, callback.clone(), tag, None)
    }

    /// I/O outstanding on this channel.
    pub fn outstanding(&self) -> usize {
        self.0.slots.borrow().len()
    }
}

/// This reactor's channel for `bdev`, made on first use.
pub(crate) fn get_channel(bdev: &Arc<Bdev>) -> IoChannel {
    let reactor = reactor::current_index().expect("bdev channels live on reactor threads");
    if let Some(c) = CHANNELS.with(|m| m.borrow().get(&bdev.id).cloned()) {
        return IoChannel(c);
    }
    if !POLLER.with(|p| p.replace(true)) {
        reactor::register_poller("bdev_completions", poll_completions);
    }
    // May open channels of base bdevs: no borrow held.
    let backend = bdev.backend().create_channel(bdev);
    let ch = Rc::new_cyclic(|me| Channel {
        bdev: bdev.clone(),
        reactor,
        me: me.clone(),
        slots: RefCell::new(Slab::with_capacity(256)),
        backend: RefCell::new(Some(backend)),
        parked: RefCell::new(VecDeque::new()),
        lock_waits: RefCell::new(Vec::new()),
    });
    CHANNELS.with(|m| m.borrow_mut().insert(bdev.id, ch.clone()));
    bdev.note_channel(reactor);
    IoChannel(ch)
}

/// Forgets this reactor's channel for a bdev that is going away.
pub(crate) fn drop_channel(bdev_id: u64) {
    let ch = CHANNELS.with(|m| m.borrow_mut().remove(&bdev_id));
    drop(ch);
}

fn with_channel(bdev_id: u64, f: impl FnOnce(&Rc<Channel>)) -> bool {
    match CHANNELS.with(|m| m.borrow().get(&bdev_id).cloned()) {
        Some(c) => {
            f(&c);
            true
        }
        None => false,
    }
}

fn poll_completions() -> Poll {
    let mut n = 0;
    while n < COMPLETION_BATCH {
        let Some((ch, slot, status)) = COMPLETIONS.with(|c| c.borrow_mut().pop_front()) else {
            break;
        };
        ch.finish(slot, status);
        n += 1;
    }
    Poll::from_work(n > 0)
}

/// One I/O as a backend sees it. Complete it exactly once.
pub struct BdevIo {
    chan: Rc<Channel>,
    slot: usize,
}

impl BdevIo {
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.chan.bdev
    }

    /// Type, range and flags.
    #[inline]
    pub fn params(&self) -> IoParams {
        let slots = self.chan.slots.borrow();
        let r = slots[self.slot].req.as_ref().expect("request present");
        IoParams {
            io_type: r.io_type,
            offset_blocks: r.offset_blocks,
            num_blocks: r.num_blocks,
            fua: r.fua,
        }
    }

    /// Runs `f` on the request (to read or fill its data).
    #[inline]
    pub fn with_request<R>(&self, f: impl FnOnce(&mut IoRequest) -> R) -> R {
        let mut slots = self.chan.slots.borrow_mut();
        f(slots[self.slot].req.as_mut().expect("request present"))
    }

    /// Completes the I/O. The completion runs from this reactor's poller.
    #[inline]
    pub fn complete(self, status: IoStatus) {
        push_completion(self.chan, self.slot, status);
    }

    /// Hands the I/O to `base` with its request rewritten by `remap` (typically an
    /// offset shift); it completes with the base I/O's status, its request restored.
    pub fn forward(self, base: &IoChannel, remap: impl FnOnce(&mut IoRequest)) {
        let chan = self.chan;
        let slot = self.slot;
        let mut req = {
            let mut slots = chan.slots.borrow_mut();
            let s = &mut slots[slot];
            let req = s.req.take().expect("request present");
            s.saved_offset = req.offset_blocks;
            req
        };
        remap(&mut req);
        let me: Rc<dyn IoCallback> = chan.clone();
        if let Err((e, req)) = base.0.submit(req, me, STEP_FORWARD | slot as u64, None) {
            chan.restore(slot, req);
            push_completion(chan, slot, Err(e));
        }
    }
}

#[inline]
fn push_completion(chan: Rc<Channel>, slot: usize, status: IoStatus) {
    COMPLETIONS.with(|c| c.borrow_mut().push_back((chan, slot, status)));
}

impl Channel {
    fn rc(&self) -> Rc<Channel> {
        self.me.upgrade().expect("channel alive while in use")
    }

    fn validate(&self, req: &IoRequest) -> Result<(), IoError> {
        let b = &self.bdev;
        if !b.supports(req.io_type) {
            return Err(IoError::Unsupported);
        }
        if !req.has_range() {
            return Ok(());
        }
        match req.offset_blocks.checked_add(req.num_blocks) {
            Some(end) if end <= b.num_blocks() => {}
            _ => return Err(IoError::OutOfRange),
        }
        match req.io_type {
            IoType::Read | IoType::Write | IoType::Compare | IoType::CompareAndWrite => {
                let want = req.io_type.data_len(req.num_blocks, b.block_size());
                if req.num_blocks == 0 || want != Some(req.data.len() as u64) {
                    return Err(IoError::BadLength);
                }
            }
            IoType::Unmap | IoType::WriteZeroes if req.num_blocks == 0 => {
                return Err(IoError::BadLength)
            }
            _ => {}
        }
        Ok(())
    }

    #[inline]
    fn submit(
        &self,
        req: IoRequest,
        callback: Rc<dyn IoCallback>,
        tag: u64,
        lock_owner: Option<usize>,
    ) -> Result<(), (IoError, IoRequest)> {
        if let Err(e) = self.validate(&req) {
            return Err((e, req));
        }
        let io_type = req.io_type;
        let blocked = lock_owner.is_none()
            && req.has_range()
            && self.bdev.lock_count.load(Ordering::Acquire) != 0
            && self.blocked_by_lock(&req, None);
        let slot = {
            let mut slots = self.slots.borrow_mut();
            if slots.len() >= MAX_OUTSTANDING {
                return Err((IoError::NoResources, req));
            }
            slots.insert(Slot {
                req: Some(req),
                callback,
                tag,
                start: ticks(),
                io_type,
                state: if blocked {
                    SlotState::Parked
                } else {
                    SlotState::InFlight
                },
                lock_owner,
                saved_offset: 0,
            })
        };
        if blocked {
            self.parked.borrow_mut().push_back(slot);
        } else {
            self.dispatch(slot, io_type);
        }
        Ok(())
    }

    fn dispatch(&self, slot: usize, io_type: IoType) {
        let native = self.bdev.backend().supports(io_type);
        match io_type {
            IoType::CompareAndWrite if !native => self.lock_range(slot),
            IoType::Compare if !native => self.read_for_compare(slot, STEP_COMPARE_READ, None),
            _ => {
                let io = BdevIo {
                    chan: self.rc(),
                    slot,
                };
                match self.backend.borrow_mut().as_mut() {
                    Some(b) => b.submit(io),
                    None => io.complete(Err(IoError::Removed)),
                }
            }
        }
    }

    /// Ends an I/O: statistics, lock bookkeeping, then the submitter's callback.
    fn finish(&self, slot: usize, status: IoStatus) {
        let Some(s) = self.slots.borrow_mut().try_remove(slot) else {
            tracing::error!(
                "bdev {}: completion for unknown I/O {slot}",
                self.bdev.name()
            );
            return;
        };
        let req = s.req.expect("request returned before completion");
        if s.lock_owner.is_none() {
            let bytes = req.num_blocks * self.bdev.block_size() as u64;
            let elapsed = ticks().wrapping_sub(s.start);
            self.bdev
                .stats
                .record(self.reactor, s.io_type, bytes, elapsed, &status);
        }
        if !self.lock_waits.borrow().is_empty() {
            self.check_lock_waits();
        }
        s.callback.io_done(s.tag, status, req);
    }

    fn restore(&self, slot: usize, req: IoRequest) {
        self.slots.borrow_mut()[slot].req = Some(req);
    }

    fn complete_slot(&self, slot: usize, status: IoStatus) {
        push_completion(self.rc(), slot, status);
    }

    // ---- compare emulation and compare-and-write ----

    /// Reads the slot's range into fresh buffers; the result comes back as `step`.
    fn read_for_compare(&self, slot: usize, step: u64, lock_owner: Option<usize>) {
        let (offset, num) = {
            let slots = self.slots.borrow();
            let r = slots[slot].req.as_ref().expect("request present");
            (r.offset_blocks, r.num_blocks)
        };
        let len = (num * self.bdev.block_size() as u64) as usize;
        let Some(data) = IoData::alloc(len) else {
            self.end_compare(slot, step, Err(IoError::NoResources));
            return;
        };
        let me: Rc<dyn IoCallback> = self.rc();
        let read = IoRequest::read(offset, num, data);
        if let Err((e, _)) = self.submit(read, me, step | slot as u64, lock_owner) {
            self.end_compare(slot, step, Err(e));
        }
    }

    fn end_compare(&self, slot: usize, step: u64, status: IoStatus) {
        if step == STEP_CAW_READ || step == STEP_CAW_WRITE {
            self.unlock_range(slot);
        }
        self.complete_slot(slot, status);
    }

    /// The read for a compare is back: compare, and for compare-and-write go on
    /// to write.
    fn compare_read_done(&self, slot: usize, step: u64, status: IoStatus, mut read: IoRequest) {
        if let Err(e) = status {
            self.end_compare(slot, step, Err(e));
            return;
        }
        let len = read.data.len();
        let diff = {
            let slots = self.slots.borrow();
            let r = slots[slot].req.as_ref().expect("request present");
            r.data.first_difference(0, &read.data, len)
        };
        if let Some(offset) = diff {
            self.end_compare(
                slot,
                step,
                Err(IoError::Miscompare {
                    offset: offset as u64,
                }),
            );
            return;
        }
        if step == STEP_COMPARE_READ {
            self.complete_slot(slot, Ok(()));
            return;
        }
        // Reuse the read buffers for the new data.
        let fua = {
            let slots = self.slots.borrow();
            let r = slots[slot].req.as_ref().expect("request present");
            let mut at = 0;
            r.data.for_each_range(len, len, |chunk| {
                read.data.copy_from_slice(at, chunk);
                at += chunk.len();
            });
            r.fua
        };
        let write = IoRequest::write(read.offset_blocks, read.num_blocks, read.data.take(), fua);
        let me: Rc<dyn IoCallback> = self.rc();
        if let Err((e, _)) = self.submit(write, me, STEP_CAW_WRITE | slot as u64, Some(slot)) {
            self.end_compare(slot, STEP_CAW_WRITE, Err(e));
        }
    }

    /// Whether `req` overlaps a range locked by someone other than `owner_slot`
    /// of this channel.
    fn blocked_by_lock(&self, req: &IoRequest, owner_slot: Option<usize>) -> bool {
        let locks = self.bdev.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.iter().any(|l| {
            req.overlaps(l.offset, l.num)
                && !(l.owner_reactor == self.reactor && Some(l.owner_slot) == owner_slot)
        })
    }

    /// Takes the range lock for the compare-and-write in `slot`. If an overlapping
    /// lock is held, the slot parks and retries when that lock is released.
    fn lock_range(&self, slot: usize) {
        let (offset, num) = {
            let mut slots = self.slots.borrow_mut();
            let s = &mut slots[slot];
            s.state = SlotState::LockOwner;
            let r = s.req.as_ref().expect("request present");
            (r.offset_blocks, r.num_blocks)
        };
        let range = LockedRange {
            offset,
            num,
            owner_reactor: self.reactor,
            owner_slot: slot,
        };
        {
            let mut locks = self.bdev.locks.lock().unwrap_or_else(|e| e.into_inner());
            if locks
                .iter()
                .any(|l| l.offset < offset + num && offset < l.offset + l.num)
            {
                drop(locks);
                self.slots.borrow_mut()[slot].state = SlotState::Parked;
                self.parked.borrow_mut().push_back(slot);
                return;
            }
            locks.push(range.clone());
            self.bdev.lock_count.fetch_add(1, Ordering::SeqCst);
        }
        // Every channel of the bdev drains overlapping I/O already in flight.
        let reactors = self.bdev.channel_reactors();
        let ack = Arc::new(DrainAck {
            remaining: AtomicUsize::new(reactors.len()),
            bdev_id: self.bdev.id,
            owner_reactor: self.reactor,
            owner_slot: slot,
        });
        for r in reactors {
            let (range, ack) = (range.clone(), ack.clone());
            let msg = Box::new(move || {
                let bdev_id = ack.bdev_id;
                let mut ack = Some(ack);
                with_channel(bdev_id, |ch| {
                    ch.wait_drain(range, ack.take().expect("once"))
                });
                if let Some(ack) = ack {
                    drain_acked(ack);
                }
            });
            if let Err(e) = reactor::send(r, msg) {
                tracing::error!(
                    "bdev {}: range lock cannot reach reactor {r}: {e}",
                    self.bdev.name()
                );
            }
        }
    }

    fn wait_drain(&self, range: LockedRange, ack: Arc<DrainAck>) {
        if self.overlapping_in_flight(&range) {
            self.lock_waits.borrow_mut().push(LockWait { range, ack });
        } else {
            drain_acked(ack);
        }
    }

    fn overlapping_in_flight(&self, range: &LockedRange) -> bool {
        let mine = range.owner_reactor == self.reactor;
        self.slots.borrow().iter().any(|(_, s)| {
            s.state == SlotState::InFlight
                && !(mine && s.lock_owner == Some(range.owner_slot))
                && s.req
                    .as_ref()
                    .is_some_and(|r| r.overlaps(range.offset, range.num))
        })
    }

    fn check_lock_waits(&self) {
        let waits = std::mem::take(&mut *self.lock_waits.borrow_mut());
        for w in waits {
            if self.overlapping_in_flight(&w.range) {
                self.lock_waits.borrow_mut().push(w);
            } else {
                drain_acked(w.ack);
            }
        }
    }

    /// Every channel has drained: the compare-and-write in `slot` may run.
    fn lock_acquired(&self, slot: usize) {
        self.read_for_compare(slot, STEP_CAW_READ, Some(slot));
    }

    fn unlock_range(&self, slot: usize) {
        {
            let mut locks = self.bdev.locks.lock().unwrap_or_else(|e| e.into_inner());
            let before = locks.len();
            locks.retain(|l| !(l.owner_reactor == self.reactor && l.owner_slot == slot));
            let removed = before - locks.len();
            self.bdev.lock_count.fetch_sub(removed, Ordering::SeqCst);
        }
        // Let every channel retry what it parked.
        let bdev_id = self.bdev.id;
        for r in self.bdev.channel_reactors() {
            let msg = Box::new(move || {
                with_channel(bdev_id, |ch| ch.unpark());
            });
            if let Err(e) = reactor::send(r, msg) {
                tracing::error!(
                    "bdev {}: unlock cannot reach reactor {r}: {e}",
                    self.bdev.name()
                );
            }
        }
    }

    fn unpark(&self) {
        let n = self.parked.borrow().len();
        for _ in 0..n {
            let Some(slot) = self.parked.borrow_mut().pop_front() else {
                break;
            };
            let (blocked, io_type) = {
                let slots = self.slots.borrow();
                let s = &slots[slot];
                let r = s.req.as_ref().expect("request present");
                let blocked = if r.io_type == IoType::CompareAndWrite {
                    false // retries the lock itself
                } else {
                    self.bdev.lock_count.load(Ordering::Acquire) != 0
                        && self.blocked_by_lock(r, None)
                };
                (blocked, r.io_type)
            };
            if blocked {
                self.parked.borrow_mut().push_back(slot);
            } else {
                self.slots.borrow_mut()[slot].state = SlotState::InFlight;
                self.dispatch(slot, io_type);
            }
        }
    }
}

fn drain_acked(ack: Arc<DrainAck>) {
    if ack.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    let (bdev_id, slot) = (ack.bdev_id, ack.owner_slot);
    let msg = Box::new(move || {
        with_channel(bdev_id, |ch| ch.lock_acquired(slot));
    });
    if let Err(e) = reactor::send(ack.owner_reactor, msg) {
        tracing::error!("range lock: cannot reach the owner reactor: {e}");
    }
}

impl IoCallback for Channel {
    /// Completions of I/O this channel submitted for itself.
    fn io_done(&self, tag: u64, status: IoStatus, req: IoRequest) {
        let slot = (tag & SLOT_MASK) as usize;
        match tag & !SLOT_MASK {
            STEP_FORWARD => {
                let mut req = req;
                req.offset_blocks = self.slots.borrow()[slot].saved_offset;
                self.restore(slot, req);
                self.complete_slot(slot, status);
            }
            STEP_CAW_READ | STEP_COMPARE_READ => {
                self.compare_read_done(slot, tag & !SLOT_MASK, status, req)
            }
            STEP_CAW_WRITE => self.end_compare(slot, STEP_CAW_WRITE, status),
            _ => tracing::error!("bdev {}: unknown internal step {tag:#x}", self.bdev.name()),
        }
    }
}
