//! One closed-loop I/O generator: a bdev, a reactor, `depth` slots.
//!
//! There is no poller on the I/O path. [`Job::start`] submits one I/O per slot;
//! callback, turning the request that came back into the next one in place. A
//! slot owns its data buffers for the whole run (allocated once, at
//! [`Job::create`]); the tag of an I/O is its slot's index. The only poller is the
//! retry poller, registered while some slot waits after a refused submission
//! (`NoResources`, or a refused I/O counted as a failure) and removed when none
//! does.
//!
//! `verify`: a slot writes a pattern ([`crate::pattern`]) to the next free unit of
//! the job's range (sequential, skipping units another slot holds), reads it back
//! into its second buffer and compares. Units are held from the write until the
//! compare, so two slots never touch the same blocks at once.

use std::cell::{OnceCell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use ferrite_bdev::{
    self as bdev, BdevEvent, Desc, IoCallback, IoChannel, IoData, IoError, IoRequest, IoStatus,
    IoType,
};
use ferrite_reactor::{self as reactor, ticks, Poll, PollerId};
use hdrhistogram::Histogram;

use crate::pattern;
use crate::workload::{Pick, Picker, Workload};
use crate::TickConv;

/// Latencies are recorded in nanoseconds, 1 ns to 60 s, 3 significant figures.
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;
/// Most miscompares a job describes in detail (all are counted).
pub const MISCOMPARE_REPORTS: usize = 8;

/// What one job does.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub bdev: String,
    pub workload: Workload,
    /// I/Os kept in flight.
    pub depth: usize,
    /// Bytes per I/O; a multiple of the bdev's block size.
    pub io_size: usize,
    /// Percentage of reads for `rw`/`randrw`.
    pub read_pct: u32,
    /// The job's range: first block and number of blocks (`None`: the whole bdev).
    pub range: Option<(u64, u64)>,
    /// Seeds offsets and verify patterns.
    pub seed: u64,
    /// Stop by itself after this many I/Os (verify: writes) were submitted.
    pub max_ios: Option<u64>,
}

/// Counters other threads read while the job runs (single writer, relaxed).
#[derive(Debug, Default)]
pub struct JobShared {
    /// I/Os completed (successfully or not).
    pub ios: AtomicU64,
    pub fails: AtomicU64,
    pub miscompares: AtomicU64,
    /// Set once the job has stopped and every I/O it submitted has come back.
    pub drained: AtomicBool,
}

/// One miscompare, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miscompare {
    /// The block whose data differed.
    pub lba: u64,
    /// Byte within that block.
    pub byte: usize,
    pub expected: u8,
    pub got: u8,
    /// The LBA stamped in the block read back (tells a misplaced write).
    pub stamped_lba: u64,
}

/// What a job did, taken when it closes.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub bdev: String,
    pub reactor: usize,
    pub core: usize,
    pub ios: u64,
    pub reads: u64,
    pub writes: u64,
    pub fails: u64,
    pub miscompares: u64,
    /// I/Os completed by the time the job was told to stop.
    pub ios_at_stop: u64,
    /// From start to the last completion after stop.
    pub elapsed_ns: u64,
    pub io_size: usize,
    /// I/Os still outstanding when the job was closed (a drain that timed out).
    pub outstanding: usize,
    pub latency_ns: Histogram<u64>,
    pub reports: Vec<Miscompare>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    VerifyWrite,
    VerifyRead,
    Unmap,
    WriteZeroes,
    Flush,
}

struct Slot {
    /// The data buffer while no I/O carries it (verify: the written pattern).
    buf: Option<IoData>,
    /// verify: the buffer the data is read back into.
    check: Option<IoData>,
    /// The unit (I/O-sized piece of the range) of the current I/O.
    unit: u64,
    op: Op,
    start: u64,
    /// A request refused with `NoResources`, to submit again.
    pending: Option<IoRequest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Running,
    Stopping,
    Drained,
}

struct Inner {
    slots: Box<[Slot]>,
    /// Each I/O's kind and unit (and, for verify, the units slots hold).
    picker: Picker,
    generation: u64,
    hist: Histogram<u64>,
    ios: u64,
    reads: u64,
    writes: u64,
    fails: u64,
    miscompares: u64,
    ios_at_stop: u64,
    outstanding: usize,
    /// Slots waiting for the retry poller; never longer than `depth`.
    retry: Vec<usize>,
    retry_spare: Vec<usize>,
    retry_poller: Option<PollerId>,
    reports: Vec<Miscompare>,
    state: State,
    start: u64,
    end: u64,
}

/// Fixed facts of a job.
struct Params {
    cfg: JobConfig,
    reactor: usize,
    core: usize,
    block_size: usize,
    io_blocks: u64,
    first_block: u64,
    conv: TickConv,
}

/// A running job. Lives on one reactor; drive it with `start`, `stop`, `close`.
pub struct Job {
    p: Params,
    chan: IoChannel,
    desc: RefCell<Option<Desc>>,
    me: Weak<Job>,
    inner: RefCell<Inner>,
    shared: Arc<JobShared>,
}

/// Checks a job's geometry against a bdev: returns (io_blocks, first_block, units).
pub fn geometry(
    cfg: &JobConfig,
    block_size: u32,
    num_blocks: u64,
) -> Result<(u64, u64, u64), String> {
    let bs = block_size as usize;
    if cfg.io_size == 0 || !cfg.io_size.is_multiple_of(bs) {
        return Err(format!(
            "I/O size {} is not a multiple of bdev {}'s block size {bs}",
            cfg.io_size, cfg.bdev
        ));
    }
    if cfg.io_size > ferrite_bdev::MAX_IO_BYTES {
        return Err(format!(
            "I/O size {} is larger than the largest I/O, {} bytes",
            cfg.io_size,
            ferrite_bdev::MAX_IO_BYTES
        ));
    }
    if cfg.depth == 0 {
        return Err("queue depth must be at least 1".into());
    }
    let io_blocks = (cfg.io_size / bs) as u64;
    let (first, len) = cfg.range.unwrap_or((0, num_blocks));
    if first.checked_add(len).is_none_or(|end| end > num_blocks) {
        return Err(format!(
            "range {first}+{len} lies beyond bdev {}'s {num_blocks} blocks",
            cfg.bdev
        ));
    }
    let units = len / io_blocks;
    if units == 0 {
        return Err(format!(
            "bdev {} ({len} blocks of {bs} bytes for this job) is smaller than one {}-byte I/O",
            cfg.bdev, cfg.io_size
        ));
    }
    if cfg.workload == Workload::Verify && units < cfg.depth as u64 {
        return Err(format!(
            "verify needs at least queue depth x I/O size = {} x {} bytes of bdev {} per job \
             (so no two I/Os in flight overlap), but each job has {} bytes",
            cfg.depth,
            cfg.io_size,
            cfg.bdev,
            len * bs as u64
        ));
    }
    Ok((io_blocks, first, units))
}

/// A fresh latency histogram (1 ns to 60 s, 3 significant figures); recording
/// into it never allocates.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("valid histogram bounds")
}

impl Job {
    /// Opens the bdev, gets this reactor's channel and allocates every slot's
    /// buffers. Call on the reactor that will run the job.
    pub fn create(cfg: JobConfig) -> Result<Rc<Job>, String> {
        let reactor_index =
            reactor::current_index().ok_or("jobs are created on a reactor thread")?;
        let core = reactor::handle().core_of(reactor_index).unwrap_or(0);
        let b = bdev::get(&cfg.bdev).ok_or_else(|| format!("bdev {} does not exist", cfg.bdev))?;
        for &t in cfg.workload.io_types() {
            if !b.supports(t) {
                return Err(format!(
                    "bdev {} ({}) does not support {t}, which workload {} needs",
                    cfg.bdev,
                    b.module(),
                    cfg.workload
                ));
            }
        }
        let (io_blocks, first_block, units) = geometry(&cfg, b.block_size(), b.num_blocks())?;

        // The remove event stops the job; the job finds itself through this cell.
        let cell: Rc<OnceCell<Weak<Job>>> = Rc::new(OnceCell::new());
        let c2 = cell.clone();
        let desc = bdev::open(&cfg.bdev, cfg.workload.writes(), move |ev| {
            if ev == BdevEvent::Remove {
                if let Some(job) = c2.get().and_then(Weak::upgrade) {
                    tracing::warn!("bdev {} is being removed: stopping its job", job.p.cfg.bdev);
                    job.stop();
                }
            }
        })
        .map_err(|e| format!("cannot open bdev {}: {e}", cfg.bdev))?;
        let chan = desc.channel();

        let nbuf = cfg.workload.buffers_per_slot();
        let alloc = || {
            IoData::alloc(cfg.io_size).ok_or_else(|| {
                format!(
                    "the buffer arena has no room for {} more {}-byte buffers",
                    cfg.depth * nbuf,
                    cfg.io_size
                )
            })
        };
        let mut slots = Vec::with_capacity(cfg.depth);
        for _ in 0..cfg.depth {
            let mut buf = if nbuf >= 1 { Some(alloc()?) } else { None };
            let check = if nbuf >= 2 { Some(alloc()?) } else { None };
            if let Some(data) = buf.as_mut() {
                // Writes carry this unless verify overwrites it with its pattern.
                pattern::fill(data, b.block_size() as usize, 0, 0, cfg.seed);
            }
            slots.push(Slot {
                buf,
                check,
                unit: 0,
                op: Op::Read,
                start: 0,
                pending: None,
            });
        }
        let inner = Inner {
            slots: slots.into_boxed_slice(),
            picker: Picker::new(cfg.workload, cfg.read_pct, units, cfg.seed, cfg.max_ios),
            generation: 0,
            hist: new_histogram(),
            ios: 0,
            reads: 0,
            writes: 0,
            fails: 0,
            miscompares: 0,
            ios_at_stop: 0,
            outstanding: 0,
            retry: Vec::with_capacity(cfg.depth),
            retry_spare: Vec::with_capacity(cfg.depth),
            retry_poller: None,
            reports: Vec::with_capacity(MISCOMPARE_REPORTS),
            state: State::Created,
            start: 0,
            end: 0,
        };
        let p = Params {
            block_size: b.block_size() as usize,
            cfg,
            reactor: reactor_index,
            core,
            io_blocks,
            first_block,
            conv: TickConv::new(),
        };
        let job = Rc::new_cyclic(|me| Job {
            p,
            chan,
            desc: RefCell::new(Some(desc)),
            me: me.clone(),
            inner: RefCell::new(inner),
            shared: Arc::new(JobShared::default()),
        });
        let _ = cell.set(Rc::downgrade(&job));
        Ok(job)
    }

    /// The counters other threads may watch.
    pub fn shared(&self) -> Arc<JobShared> {
        self.shared.clone()
    }

    pub fn bdev_name(&self) -> &str {
        &self.p.cfg.bdev
    }

    pub fn reactor(&self) -> usize {
        self.p.reactor
    }

    pub fn core(&self) -> usize {
        self.p.core
    }

    /// Submits the first I/O of every slot.
    pub fn start(&self) {
        {
            let mut g = self.inner.borrow_mut();
            if g.state != State::Created {
                return;
            }
            g.state = State::Running;
            g.start = ticks();
        }
        for slot in 0..self.p.cfg.depth {
            let req = {
                let mut g = self.inner.borrow_mut();
                if g.state != State::Running {
                    return;
                }
                if g.picker.left() == 0 {
                    g.finish_early(&self.shared);
                    return;
                }
                g.prepare(&self.p, slot)
            };
            if self.submit(slot, req) {
                // The channel is full: the other slots start from the retry poller.
                let mut g = self.inner.borrow_mut();
                g.retry.extend(slot + 1..self.p.cfg.depth);
                return;
            }
        }
    }

    /// Stops submitting. The job is drained (see [`JobShared::drained`]) once the
    /// I/Os in flight have come back.
    pub fn stop(&self) {
        let poller = {
            let mut g = self.inner.borrow_mut();
            let g = &mut *g;
            match g.state {
                State::Created => {
                    g.state = State::Drained;
                    self.shared.drained.store(true, Relaxed);
                    return;
                }
                State::Running => {}
                State::Stopping | State::Drained => return,
            }
            g.state = State::Stopping;
            g.ios_at_stop = g.ios;
            let retry = std::mem::take(&mut g.retry);
            for &slot in &retry {
                if let Some(req) = g.slots[slot].pending.take() {
                    g.reclaim(&self.p, slot, req);
                }
            }
            g.retry = retry;
            g.retry.clear();
            g.maybe_drained(&self.shared);
            g.retry_poller.take()
        };
        if let Some(id) = poller {
            reactor::unregister_poller(id);
        }
    }

    /// Takes the results and closes the bdev. Call after the job drained (or
    /// gave up waiting for it).
    pub fn close(&self) -> JobResult {
        self.stop();
        let mut g = self.inner.borrow_mut();
        let end = if g.state == State::Drained {
            g.end
        } else {
            ticks()
        };
        let elapsed_ns = if g.start == 0 {
            0
        } else {
            self.p.conv.ns(end.wrapping_sub(g.start))
        };
        let hist = std::mem::replace(&mut g.hist, new_histogram());
        let result = JobResult {
            bdev: self.p.cfg.bdev.clone(),
            reactor: self.p.reactor,
            core: self.p.core,
            ios: g.ios,
            reads: g.reads,
            writes: g.writes,
            fails: g.fails,
            miscompares: g.miscompares,
            ios_at_stop: g.ios_at_stop,
            elapsed_ns,
            io_size: self.p.cfg.io_size,
            outstanding: g.outstanding,
            latency_ns: hist,
            reports: g.reports.clone(),
        };
        drop(g);
        self.desc.borrow_mut().take();
        result
    }

    /// Hands `req` (prepared for `slot`) to the channel; a refusal sends the slot
    /// to the retry poller. Returns whether the channel refused it for lack of
    /// resources.
    #[inline]
    fn submit(&self, slot: usize, req: IoRequest) -> bool {
        let Some(me) = self.me.upgrade() else {
            return false;
        };
        let me: Rc<dyn IoCallback> = me;
        match self.chan.submit(req, &me, slot as u64) {
            Ok(()) => false,
            Err((e, req)) => {
                self.refused(slot, e, req);
                e == IoError::NoResources
            }
        }
    }

    #[cold]
    fn refused(&self, slot: usize, e: IoError, req: IoRequest) {
        let arm = {
            let mut g = self.inner.borrow_mut();
            let g = &mut *g;
            g.outstanding -= 1;
            if e == IoError::NoResources {
                g.slots[slot].pending = Some(req);
            } else {
                // Refused for good: a failed I/O. Move on to the next one.
                g.fails += 1;
                self.shared.fails.store(g.fails, Relaxed);
                g.reclaim(&self.p, slot, req);
            }
            if g.state != State::Running {
                if let Some(req) = g.slots[slot].pending.take() {
                    g.reclaim(&self.p, slot, req);
                }
                g.maybe_drained(&self.shared);
                return;
            }
            g.retry.push(slot);
            g.retry_poller.is_none()
        };
        if arm {
            let w = self.me.clone();
            let id = reactor::register_poller("perf_retry", move || match w.upgrade() {
                Some(job) => job.run_retries(),
                None => Poll::Idle,
            });
            self.inner.borrow_mut().retry_poller = Some(id);
        }
    }

    /// The retry poller: submits again what was refused, or the next I/O of a
    /// slot whose I/O was refused for good.
    fn run_retries(&self) -> Poll {
        let work = {
            let mut g = self.inner.borrow_mut();
            if g.state != State::Running || g.retry.is_empty() {
                Vec::new()
            } else {
                let spare = std::mem::take(&mut g.retry_spare);
                std::mem::replace(&mut g.retry, spare)
            }
        };
        let did = !work.is_empty();
        for (i, &slot) in work.iter().enumerate() {
            let req = {
                let mut g = self.inner.borrow_mut();
                let g = &mut *g;
                if g.state != State::Running {
                    if let Some(req) = g.slots[slot].pending.take() {
                        g.reclaim(&self.p, slot, req);
                    }
                    continue;
                }
                match g.slots[slot].pending.take() {
                    Some(req) => {
                        g.outstanding += 1;
                        g.slots[slot].start = ticks();
                        req
                    }
                    None if g.picker.left() == 0 => {
                        g.finish_early(&self.shared);
                        continue;
                    }
                    None => g.prepare(&self.p, slot),
                }
            };
            if self.submit(slot, req) {
                // The channel is full: the rest would be refused too. They wait
                // (in order, behind the one just refused) for the next poll.
                self.inner
                    .borrow_mut()
                    .retry
                    .extend_from_slice(&work[i + 1..]);
                break;
            }
        }
        let poller = {
            let mut g = self.inner.borrow_mut();
            if did {
                let mut work = work;
                work.clear();
                g.retry_spare = work;
            }
            if g.retry.is_empty() {
                g.retry_poller.take()
            } else {
                None
            }
        };
        if let Some(id) = poller {
            reactor::unregister_poller(id);
        }
        Poll::from_work(did)
    }
}

impl Inner {
    /// The next operation and unit of the job.
    #[inline]
    fn pick(&mut self, _p: &Params) -> (Op, u64) {
        let (kind, unit) = self.picker.pick();
        let op = match kind {
            Pick::Read => Op::Read,
            Pick::Write => Op::Write,
            Pick::VerifyWrite => Op::VerifyWrite,
            Pick::Unmap => Op::Unmap,
            Pick::WriteZeroes => Op::WriteZeroes,
            Pick::Flush => Op::Flush,
        };
        (op, unit)
    }

    /// Picks the slot's next I/O, takes its buffer and marks it in flight.
    fn prepare(&mut self, p: &Params, slot: usize) -> IoRequest {
        let (op, unit) = self.pick(p);
        let offset = p.first_block + unit * p.io_blocks;
        let n = p.io_blocks;
        self.outstanding += 1;
        let s = &mut self.slots[slot];
        s.unit = unit;
        s.op = op;
        let req = match op {
            Op::Read => IoRequest::read(offset, n, s.buf.take().expect("slot buffer")),
            Op::Write => IoRequest::write(offset, n, s.buf.take().expect("slot buffer"), false),
            Op::VerifyWrite => {
                self.generation += 1;
                let mut data = s.buf.take().expect("slot buffer");
                pattern::fill(&mut data, p.block_size, offset, self.generation, p.cfg.seed);
                IoRequest::write(offset, n, data, false)
            }
            Op::Unmap => IoRequest::unmap(offset, n),
            Op::WriteZeroes => IoRequest::write_zeroes(offset, n),
            Op::Flush => IoRequest::flush(offset, n),
            Op::VerifyRead => unreachable!("read-back is prepared on write completion"),
        };
        s.start = ticks();
        req
    }

    /// The fast path of every workload but verify: turns the request that just
    /// came back into the slot's next one, in place (its buffer stays with it, and
    /// nothing the size of an `IoData` is copied).
    #[inline]
    fn retarget(&mut self, p: &Params, slot: usize, req: &mut IoRequest) {
        let (op, unit) = self.pick(p);
        req.offset_blocks = p.first_block + unit * p.io_blocks;
        req.io_type = match op {
            Op::Read => IoType::Read,
            Op::Write => IoType::Write,
            Op::Unmap => IoType::Unmap,
            Op::WriteZeroes => IoType::WriteZeroes,
            Op::Flush => IoType::Flush,
            Op::VerifyWrite | Op::VerifyRead => unreachable!("verify does not retarget"),
        };
        self.outstanding += 1;
        let s = &mut self.slots[slot];
        s.unit = unit;
        s.op = op;
        s.start = ticks();
    }

    fn release_unit(&mut self, unit: u64) {
        self.picker.release(unit);
    }

    /// Puts a request's buffer back into its slot (and lets go of a verify unit).
    fn reclaim(&mut self, _p: &Params, slot: usize, mut req: IoRequest) {
        let s = &mut self.slots[slot];
        let data = std::mem::take(&mut req.data);
        let (op, unit) = (s.op, s.unit);
        match op {
            Op::Read | Op::Write | Op::VerifyWrite => s.buf = Some(data),
            Op::VerifyRead => s.check = Some(data),
            Op::Unmap | Op::WriteZeroes | Op::Flush => {}
        }
        if matches!(op, Op::VerifyWrite | Op::VerifyRead) {
            self.release_unit(unit);
        }
    }

    /// No new I/O: stop (if `max_ios` ran out) and see whether the job drained.
    #[cold]
    fn finish_early(&mut self, shared: &JobShared) {
        if self.state == State::Running {
            self.state = State::Stopping;
            self.ios_at_stop = self.ios;
        }
        self.maybe_drained(shared);
    }

    fn maybe_drained(&mut self, shared: &JobShared) {
        if self.state == State::Stopping && self.outstanding == 0 {
            self.state = State::Drained;
            self.end = ticks();
            shared.drained.store(true, Relaxed);
        }
    }
}

impl IoCallback for Job {
    #[inline]
    fn io_done(&self, tag: u64, status: IoStatus, mut req: IoRequest) {
        let now = ticks();
        let slot = tag as usize;
        let next = {
            let mut g = self.inner.borrow_mut();
            let g = &mut *g;
            let s = &g.slots[slot];
            let ns = self.p.conv.ns(now.wrapping_sub(s.start));
            let (op, unit) = (s.op, s.unit);
            g.hist.saturating_record(ns);
            g.outstanding -= 1;
            g.ios += 1;
            self.shared.ios.store(g.ios, Relaxed);
            match op {
                Op::Read | Op::VerifyRead => g.reads += 1,
                Op::Write | Op::VerifyWrite => g.writes += 1,
                _ => {}
            }
            let ok = status.is_ok();
            if !ok {
                g.fails += 1;
                self.shared.fails.store(g.fails, Relaxed);
            }
            let running = g.state == State::Running;
            match op {
                Op::VerifyWrite => {
                    let s = &mut g.slots[slot];
                    s.buf = Some(std::mem::take(&mut req.data));
                    if ok && running {
                        // Read it back into the slot's second buffer.
                        req.data = s.check.take().expect("slot check buffer");
                        req.io_type = IoType::Read;
                        s.op = Op::VerifyRead;
                        s.start = ticks();
                        g.outstanding += 1;
                        req
                    } else {
                        g.release_unit(unit);
                        if !running || g.picker.left() == 0 {
                            g.finish_early(&self.shared);
                            return;
                        }
                        g.prepare(&self.p, slot)
                    }
                }
                Op::VerifyRead => {
                    let data = std::mem::take(&mut req.data);
                    if ok {
                        self.compare(g, slot, unit, &data);
                    }
                    g.slots[slot].check = Some(data);
                    g.release_unit(unit);
                    if !running || g.picker.left() == 0 {
                        g.finish_early(&self.shared);
                        return;
                    }
                    g.prepare(&self.p, slot)
                }
                _ => {
                    if !running || g.picker.left() == 0 {
                        g.slots[slot].buf = Some(std::mem::take(&mut req.data));
                        g.finish_early(&self.shared);
                        return;
                    }
                    g.retarget(&self.p, slot, &mut req);
                    req
                }
            }
        };
        self.submit(slot, next);
    }
}

impl Job {
    /// verify: compares what was read back with what the slot wrote.
    #[inline]
    fn compare(&self, g: &mut Inner, slot: usize, unit: u64, got: &IoData) {
        let expected = g.slots[slot].buf.as_ref().expect("slot buffer");
        let len = self.p.cfg.io_size;
        let Some(at) = got.first_difference(0, expected, len) else {
            return;
        };
        g.miscompares += 1;
        self.shared.miscompares.store(g.miscompares, Relaxed);
        if g.reports.len() < MISCOMPARE_REPORTS {
            let bs = self.p.block_size;
            let mut e = [0u8; 1];
            let mut r = [0u8; 1];
            expected.copy_to_slice(at, &mut e);
            got.copy_to_slice(at, &mut r);
            g.reports.push(Miscompare {
                lba: self.p.first_block + unit * self.p.io_blocks + (at / bs) as u64,
                byte: at % bs,
                expected: e[0],
                got: r[0],
                stamped_lba: pattern::stamped_lba(got, bs, at),
            });
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(id) = self.inner.get_mut().retry_poller.take() {
            if reactor::on_reactor() {
                reactor::unregister_poller(id);
            }
        }
    }
}
