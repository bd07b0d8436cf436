//! io_uring plumbing shared by the uring bdev's ring (64-byte SQEs) and the
//! nvme bdev's ring (128-byte SQEs, 32-byte CQEs): building a ring with the
//! reactor-friendly flags, registering the buffer arena as fixed buffers,
//! finding the fixed buffer that holds an address, the one `io_uring_enter` per
//! poll, and waiting for the kernel before a ring goes away.
//!
//! Each ring module keeps its own SQE making and completion handling; this is
//! what is the same for both.

use std::io;
use std::time::{Duration, Instant};

use ferrite_reactor::mem;
use io_uring::{cqueue, squeue, IoUring};

/// The kernel takes at most 1 GiB per registered buffer: the arena's I/O region
/// is registered in pieces of this size, piece `i` as buffer index `i`.
pub(crate) const FIXED_PIECE: usize = 1 << 30;
/// How long a dying ring waits for the kernel to finish what it still holds.
const DRAIN_ON_DROP: Duration = Duration::from_secs(10);

/// Builds a ring of `sq_entries` (and `cq_entries` CQEs). Without `sqpoll`,
/// completions are posted when this thread next enters the kernel (the TASKRUN
/// flag says when it should), not by an interrupt that preempts the reactor; a
/// sleeping reactor is still woken by the ring fd. An older kernel that lacks
/// those flags gets a plain ring.
pub(crate) fn build<S: squeue::EntryMarker, C: cqueue::EntryMarker>(
    sq_entries: u32,
    cq_entries: u32,
    sqpoll: bool,
) -> io::Result<IoUring<S, C>> {
    let mut b = IoUring::<S, C>::builder();
    b.setup_cqsize(cq_entries).setup_submit_all();
    if sqpoll {
        // The kernel thread polls the SQ for a second after the last
        // submission before it sleeps and needs a wake-up.
        b.setup_sqpoll(1000);
    } else {
        b.setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_single_issuer();
    }
    match b.build(sq_entries) {
        Ok(u) => Ok(u),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let mut b = IoUring::<S, C>::builder();
            b.setup_cqsize(cq_entries);
            if sqpoll {
                b.setup_sqpoll(1000);
            }
            b.build(sq_entries)
        }
        Err(e) => Err(e),
    }
}

/// Registers the arena's I/O region as fixed buffers, in pieces of at most
/// [`FIXED_PIECE`] bytes.
pub(crate) fn register_arena<S: squeue::EntryMarker, C: cqueue::EntryMarker>(
    uring: &IoUring<S, C>,
) -> io::Result<()> {
    let (base, len) = mem::arena().io_region();
    let iovecs: Vec<libc::iovec> = (0..len)
        .step_by(FIXED_PIECE)
        .map(|at| libc::iovec {
            // In bounds: at < len.
            iov_base: base.wrapping_add(at) as *mut libc::c_void,
            iov_len: (len - at).min(FIXED_PIECE),
        })
        .collect();
    if iovecs.len() > u16::MAX as usize {
        return Err(io::Error::other(
            "the buffer arena is too large to register",
        ));
    }
    // SAFETY: the iovecs cover the arena's I/O region, which is mapped
    // read-write for the life of the process, so the kernel's pinned pages stay
    // valid as long as the ring that holds them.
    unsafe { uring.submitter().register_buffers(&iovecs) }
}

/// The fixed buffer (arena piece) that holds all of `[addr, addr + len)`, if one
/// does.
pub(crate) fn fixed_index(addr: *const u8, len: usize) -> Option<u16> {
    let (io_base, io_len) = mem::arena().io_region();
    let off = (addr as usize).checked_sub(io_base as usize)?;
    if off + len > io_len || off % FIXED_PIECE + len > FIXED_PIECE {
        return None;
    }
    Some((off / FIXED_PIECE) as u16)
}

/// The submit half of a poll: one `io_uring_enter` when SQEs were queued since
/// the last one (or the kernel asks for a visit to run completions). Whether
/// anything was submitted. A kernel short of something (CQ overflow backlog,
/// memory) leaves the SQEs queued for the next loop.
pub(crate) fn enter<S: squeue::EntryMarker, C: cqueue::EntryMarker>(
    uring: &mut IoUring<S, C>,
    unsubmitted: &mut usize,
    in_flight: usize,
) -> bool {
    let busy = *unsubmitted > 0;
    if busy || (in_flight > 0 && uring.submission().taskrun()) {
        match uring.submit() {
            Ok(_) => *unsubmitted = 0,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)
                ) => {}
            Err(e) => tracing::error!("io_uring_enter: {e}"),
        }
    }
    busy
}

/// Waits (up to 10 s) for the kernel to answer the `in_flight` SQEs of a ring
/// that is going away, so that buffers it may still write into are not reused.
/// Returns how many are still unanswered.
pub(crate) fn drain<S: squeue::EntryMarker, C: cqueue::EntryMarker>(
    uring: &mut IoUring<S, C>,
    mut in_flight: usize,
) -> usize {
    let deadline = Instant::now() + DRAIN_ON_DROP;
    while in_flight > 0 && Instant::now() < deadline {
        let _ = uring.submit();
        let n = uring.completion().count();
        in_flight = in_flight.saturating_sub(n);
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    in_flight
}

/// Completions taken off the CQ per pass.
pub(crate) const REAP_BATCH: usize = 256;

/// Takes up to [`REAP_BATCH`] completions off the CQ into `batch` as
/// `(user_data, result)`; returns how many. Copying them out first lets the
/// caller handle each with the ring borrowed mutably.
pub(crate) fn take_completions<S: squeue::EntryMarker, C: cqueue::EntryMarker>(
    uring: &mut IoUring<S, C>,
    batch: &mut [(u64, i32); REAP_BATCH],
) -> usize {
    let mut n = 0;
    for cqe in uring.completion() {
        let cqe: cqueue::Entry = cqe.into();
        batch[n] = (cqe.user_data(), cqe.result());
        n += 1;
        if n == REAP_BATCH {
            break;
        }
    }
    n
}

/// A ring's registered-file table: which slots are free.
pub(crate) struct Files {
    free: Vec<u32>,
}

impl Files {
    /// Registers a sparse table of `slots` files with `uring`.
    pub(crate) fn new<S: squeue::EntryMarker, C: cqueue::EntryMarker>(
        uring: &IoUring<S, C>,
        slots: u32,
    ) -> io::Result<Files> {
        uring.submitter().register_files_sparse(slots)?;
        Ok(Files {
            free: (0..slots).rev().collect(),
        })
    }

    /// Registers `fd` in a free slot. The ring holds its own reference to the
    /// file until the slot is removed.
    pub(crate) fn add<S: squeue::EntryMarker, C: cqueue::EntryMarker>(
        &mut self,
        uring: &IoUring<S, C>,
        fd: std::os::fd::RawFd,
    ) -> io::Result<u32> {
        let slot = self
            .free
            .pop()
            .ok_or_else(|| io::Error::other("no free io_uring file slot on this reactor"))?;
        if let Err(e) = uring.submitter().register_files_update(slot, &[fd]) {
            self.free.push(slot);
            return Err(e);
        }
        Ok(slot)
    }

    /// Unregisters a slot. SQEs still in flight keep the file open in the kernel.
    pub(crate) fn remove<S: squeue::EntryMarker, C: cqueue::EntryMarker>(
        &mut self,
        uring: &IoUring<S, C>,
        slot: u32,
    ) {
        if let Err(e) = uring.submitter().register_files_update(slot, &[-1]) {
            tracing::error!("io_uring: unregistering file slot {slot}: {e}");
            return;
        }
        self.free.push(slot);
    }
}
