//! The reactor's io_uring: one ring per reactor (two when a bdev asks for an
//! SQPOLL ring), shared by every uring bdev with a channel on that reactor.
//!
//! This is the only place that talks to io_uring, and the only unsafe code of
//! the uring module. Its safe API takes a [`BdevIo`] by value and keeps it until
//! the kernel has answered every SQE made from it: the I/O's buffers (arena
//! buffers held by the request in its channel slot, which the `BdevIo` keeps
//! alive) therefore outlive the kernel's use of them, and no caller ever hands
//! the kernel a pointer.
//!
//! * Submissions only fill the SQ; the ring's poller makes one `io_uring_enter`
//!   per reactor loop for the whole batch, and reaps the CQ.
//! * The arena's I/O region is registered once per ring as fixed buffers, so
//!   reads and writes are `ReadFixed`/`WriteFixed` and the kernel pins no page
//!   per I/O. Files are registered (`types::Fixed`), so no fd lookup per I/O.
//! * A reactor asleep in epoll is woken by the ring fd, which reads as ready
//!   while the CQ holds completions.
//! * Nothing here allocates per I/O: the pending table and the wait queue are
//!   sized up front.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use ferrite_reactor::{self as reactor, Poll};
use io_uring::{opcode, types, IoUring};
use slab::Slab;

use crate::modules::iouring;
use crate::{BdevIo, IoError, IoStatus, IoType};

/// SQEs in flight per ring, at most; more I/O waits in the ring's queue. The SQ
/// has this many entries, so pushing an SQE never finds it full.
const SQ_ENTRIES: u32 = 4096;
const CQ_ENTRIES: u32 = 2 * SQ_ENTRIES;
/// Registered file slots per ring (two per uring bdev with a channel here).
const FILE_SLOTS: u32 = 1024;

/// What to do with an I/O's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    /// `fua`: the write is durable when it completes (`RWF_DSYNC`).
    Write {
        fua: bool,
    },
    /// `fdatasync`.
    Flush,
    /// fallocate `PUNCH_HOLE | KEEP_SIZE`.
    PunchHole,
    /// fallocate `ZERO_RANGE | KEEP_SIZE`.
    ZeroRange,
}

/// A file registered with one ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileSlot(u32);

/// One reactor's ring.
pub(crate) struct Ring {
    inner: RefCell<Inner>,
}

struct Inner {
    uring: IoUring,
    /// The arena's I/O region is registered as fixed buffers.
    fixed_buffers: bool,
    files: iouring::Files,
    pending: Slab<Pending>,
    /// I/O that would have taken the ring past [`SQ_ENTRIES`] SQEs in flight.
    waiting: VecDeque<(FileSlot, BdevIo, Op)>,
    /// SQEs pushed whose CQE has not been reaped.
    in_flight: usize,
    /// SQEs pushed since the last `io_uring_enter`.
    unsubmitted: usize,
}

/// An I/O the kernel holds SQEs of.
struct Pending {
    io: BdevIo,
    op: Op,
    file: FileSlot,
    /// Byte offset of the I/O in the file.
    offset: u64,
    /// SQEs whose CQE has not come back.
    left: u32,
    status: IoStatus,
}

thread_local! {
    /// This reactor's rings: [normal, SQPOLL], made on first use.
    static RINGS: RefCell<[Option<Rc<Ring>>; 2]> = const { RefCell::new([None, None]) };
    /// Each log line about ring set-up once per reactor.
    static WARNED_FIXED: Cell<bool> = const { Cell::new(false) };
}

/// This reactor's ring (the SQPOLL one when `sqpoll`), made on first use. Call
/// on a reactor.
pub(crate) fn ring(sqpoll: bool) -> io::Result<Rc<Ring>> {
    let i = sqpoll as usize;
    if let Some(r) = RINGS.with(|r| r.borrow()[i].clone()) {
        return Ok(r);
    }
    let ring = Rc::new(Ring::new(sqpoll)?);
    reactor::register_interrupt(ring.inner.borrow().uring.as_raw_fd())?;
    let poll = ring.clone();
    let name = if sqpoll { "uring_sqpoll" } else { "uring" };
    reactor::register_poller(name, move || poll.poll());
    RINGS.with(|r| r.borrow_mut()[i] = Some(ring.clone()));
    tracing::info!(
        "reactor {:?}: io_uring ready ({}{} fixed buffers)",
        reactor::current_index(),
        if sqpoll { "SQPOLL, " } else { "" },
        if ring.fixed_buffers() {
            "with"
        } else {
            "without"
        }
    );
    Ok(ring)
}

/// Packs an SQE's identity into its `user_data`: the pending I/O, which of its
/// buffers, and how many bytes of that buffer are already done (a short read or
/// write is resubmitted for the rest).
fn user_data(index: usize, seg: usize, done: u32) -> u64 {
    index as u64 | (seg as u64) << 32 | (done as u64) << 40
}

fn unpack(ud: u64) -> (usize, usize, u32) {
    (
        (ud & 0xffff_ffff) as usize,
        ((ud >> 32) & 0xff) as usize,
        (ud >> 40) as u32,
    )
}

impl Ring {
    fn new(sqpoll: bool) -> io::Result<Ring> {
        let uring: IoUring = iouring::build(SQ_ENTRIES, CQ_ENTRIES, sqpoll)?;
        let files = iouring::Files::new(&uring, FILE_SLOTS)?;
        let fixed_buffers = match iouring::register_arena(&uring) {
            Ok(()) => true,
            Err(e) => {
                if !WARNED_FIXED.with(|w| w.replace(true)) {
                    tracing::warn!(
                        "io_uring: cannot register the buffer arena as fixed buffers ({e}); \
                         uring bdevs use plain reads and writes (check ulimit -l)"
                    );
                }
                false
            }
        };
        Ok(Ring {
            inner: RefCell::new(Inner {
                uring,
                fixed_buffers,
                files,
                pending: Slab::with_capacity(SQ_ENTRIES as usize),
                waiting: VecDeque::with_capacity(SQ_ENTRIES as usize),
                in_flight: 0,
                unsubmitted: 0,
            }),
        })
    }

    /// Whether reads and writes use the registered arena (`ReadFixed`/`WriteFixed`).
    pub(crate) fn fixed_buffers(&self) -> bool {
        self.inner.borrow().fixed_buffers
    }

    /// Registers `fd` with the ring. The ring holds its own reference to the
    /// file; the caller may close `fd` after [`remove_file`](Self::remove_file).
    pub(crate) fn add_file(&self, fd: RawFd) -> io::Result<FileSlot> {
        let inner = &mut *self.inner.borrow_mut();
        inner.files.add(&inner.uring, fd).map(FileSlot)
    }

    /// Unregisters a file. SQEs still in flight keep the file open in the kernel.
    pub(crate) fn remove_file(&self, file: FileSlot) {
        let inner = &mut *self.inner.borrow_mut();
        inner.files.remove(&inner.uring, file.0);
    }

    /// Starts `io` on `file`: `op` over the I/O's range. It completes from the
    /// ring's poller with the kernel's answer (the first error, as
    /// `IoError::Device(errno)`).
    pub(crate) fn submit(&self, file: FileSlot, io: BdevIo, op: Op) {
        let mut inner = self.inner.borrow_mut();
        if !inner.waiting.is_empty() || !inner.has_room_for(&io, op) {
            inner.waiting.push_back((file, io, op));
            return;
        }
        inner.start(file, io, op);
    }

    /// The poller: one `io_uring_enter` for everything queued since the last
    /// run, then the completions.
    fn poll(&self) -> Poll {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let mut busy = iouring::enter(&mut inner.uring, &mut inner.unsubmitted, inner.in_flight);
        busy |= inner.reap();
        busy |= inner.start_waiting();
        Poll::from_work(busy)
    }
}

impl Inner {
    fn sqes_for(io: &BdevIo, op: Op) -> usize {
        match op {
            Op::Read | Op::Write { .. } => io.with_request(|r| r.data.segments().len()),
            _ => 1,
        }
    }

    fn has_room_for(&self, io: &BdevIo, op: Op) -> bool {
        self.in_flight + Self::sqes_for(io, op) <= SQ_ENTRIES as usize
    }

    fn start(&mut self, file: FileSlot, io: BdevIo, op: Op) {
        let p = io.params();
        let bs = io.bdev().block_size() as u64;
        let offset = p.offset_blocks * bs;
        let len = p.num_blocks * bs;
        let sqes = Self::sqes_for(&io, op);
        let index = self.pending.insert(Pending {
            io,
            op,
            file,
            offset,
            left: sqes as u32,
            status: Ok(()),
        });
        match op {
            Op::Read | Op::Write { .. } => {
                for seg in 0..sqes {
                    self.push_rw(index, seg, 0);
                }
            }
            Op::Flush => {
                let sqe = opcode::Fsync::new(types::Fixed(file.0))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build();
                self.push(sqe.user_data(user_data(index, 0, 0)));
            }
            Op::PunchHole | Op::ZeroRange => {
                let mode = libc::FALLOC_FL_KEEP_SIZE
                    | if op == Op::PunchHole {
                        libc::FALLOC_FL_PUNCH_HOLE
                    } else {
                        libc::FALLOC_FL_ZERO_RANGE
                    };
                let sqe = opcode::Fallocate::new(types::Fixed(file.0), len)
                    .offset(offset)
                    .mode(mode)
                    .build();
                self.push(sqe.user_data(user_data(index, 0, 0)));
            }
        }
    }

    /// Pushes the read or write of buffer `seg` of pending I/O `index`, from
    /// byte `done` of that buffer on.
    fn push_rw(&mut self, index: usize, seg: usize, done: u32) {
        let fixed = self.fixed_buffers;
        let p = &self.pending[index];
        let (op, file, offset) = (p.op, p.file, p.offset);
        let (addr, len, at) = p.io.with_request(|r| {
            let segs = r.data.segments_mut();
            let before: u64 = segs[..seg].iter().map(|b| b.len() as u64).sum();
            let buf = &mut segs[seg];
            let len = buf.len() as u32 - done;
            // In bounds: done < buf.len().
            let addr = buf[done as usize..].as_mut_ptr();
            (addr, len, offset + before + done as u64)
        });
        let buf_index = fixed
            .then(|| iouring::fixed_index(addr, len as usize))
            .flatten();
        let fd = types::Fixed(file.0);
        let sqe = match (op, buf_index) {
            (Op::Read, Some(bi)) => opcode::ReadFixed::new(fd, addr, len, bi).offset(at).build(),
            (Op::Read, None) => opcode::Read::new(fd, addr, len).offset(at).build(),
            (Op::Write { fua }, Some(bi)) => opcode::WriteFixed::new(fd, addr, len, bi)
                .offset(at)
                .rw_flags(if fua { libc::RWF_DSYNC } else { 0 })
                .build(),
            (Op::Write { fua }, None) => opcode::Write::new(fd, addr, len)
                .offset(at)
                .rw_flags(if fua { libc::RWF_DSYNC } else { 0 })
                .build(),
            _ => unreachable!("only reads and writes have buffers"),
        };
        self.push(sqe.user_data(user_data(index, seg, done)));
    }

    fn push(&mut self, sqe: io_uring::squeue::Entry) {
        // SAFETY: every pointer in `sqe` lies in an arena buffer of the request
        // held by a `Pending` entry, which stays in `self.pending` (keeping its
        // `BdevIo`, hence its channel slot and buffers) until this SQE's CQE is
        // reaped; the arena itself is never unmapped. File slots name files the
        // ring holds references to.
        let pushed = unsafe { self.uring.submission().push(&sqe) };
        // Cannot fail: at most SQ_ENTRIES SQEs are in flight, and the SQ has
        // that many entries.
        debug_assert!(pushed.is_ok(), "io_uring SQ full");
        if pushed.is_err() {
            tracing::error!("io_uring SQ full: an SQE was lost");
        }
        self.in_flight += 1;
        self.unsubmitted += 1;
    }

    /// Takes completions off the CQ and finishes the I/O they end. Whether any
    /// came.
    fn reap(&mut self) -> bool {
        let mut any = false;
        let mut batch = [(0u64, 0i32); iouring::REAP_BATCH];
        loop {
            let n = iouring::take_completions(&mut self.uring, &mut batch);
            if n == 0 {
                return any;
            }
            any = true;
            for &(ud, res) in &batch[..n] {
                self.in_flight -= 1;
                self.completed(ud, res);
            }
        }
    }

    fn completed(&mut self, ud: u64, res: i32) {
        let (index, seg, done) = unpack(ud);
        let Some(p) = self.pending.get_mut(index) else {
            tracing::error!("io_uring: completion for unknown I/O {index}");
            return;
        };
        if res < 0 {
            if matches!(-res, libc::EAGAIN | libc::EINTR) {
                // Transient: ask again.
                self.resubmit(index, seg, done);
                return;
            }
            if p.status.is_ok() {
                p.status = Err(IoError::Device(-res));
            }
        } else if matches!(p.op, Op::Read | Op::Write { .. }) {
            let seg_len = p.io.with_request(|r| r.data.segments()[seg].len() as u32);
            let now = done + res as u32;
            if now < seg_len {
                if res == 0 {
                    // End of file inside the bdev: the file shrank under us.
                    if p.status.is_ok() {
                        p.status = Err(IoError::Device(libc::EIO));
                    }
                } else {
                    self.resubmit(index, seg, now);
                    return;
                }
            }
        }
        p.left -= 1;
        if p.left == 0 {
            let p = self.pending.remove(index);
            p.io.complete(p.status);
        }
    }

    /// Pushes an SQE of a pending I/O again (its CQE was just reaped, so there
    /// is room).
    fn resubmit(&mut self, index: usize, seg: usize, done: u32) {
        let p = &self.pending[index];
        match p.op {
            Op::Read | Op::Write { .. } => self.push_rw(index, seg, done),
            op => {
                // Restart the whole one-SQE I/O.
                let p = self.pending.remove(index);
                self.start(p.file, p.io, op);
            }
        }
    }

    /// Starts queued I/O while there is room. Whether any started.
    fn start_waiting(&mut self) -> bool {
        let mut any = false;
        while let Some((_, io, op)) = self.waiting.front() {
            if !self.has_room_for(io, *op) {
                break;
            }
            let (file, io, op) = self.waiting.pop_front().expect("front exists");
            self.start(file, io, op);
            any = true;
        }
        any
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The kernel may still write into buffers of I/O in flight (a reactor
        // stopping with I/O outstanding): wait for it before those buffers go
        // back to the pool. The I/O are not completed: the reactor is gone.
        self.in_flight = iouring::drain(&mut self.uring, self.in_flight);
        if self.in_flight > 0 {
            tracing::error!(
                "io_uring: {} SQEs still in flight at shutdown; leaking their buffers",
                self.in_flight
            );
            for p in self.pending.drain() {
                std::mem::forget(p);
            }
        }
        self.waiting.clear();
    }
}

/// Which [`Op`] an I/O type becomes, given how the bdev zeroes blocks.
pub(crate) fn op_for(t: IoType, fua: bool, zero_by_punch: bool) -> Option<Op> {
    Some(match t {
        IoType::Read => Op::Read,
        IoType::Write => Op::Write { fua },
        IoType::Flush => Op::Flush,
        IoType::Unmap => Op::PunchHole,
        IoType::WriteZeroes if zero_by_punch => Op::PunchHole,
        IoType::WriteZeroes => Op::ZeroRange,
        _ => return None,
    })
}
