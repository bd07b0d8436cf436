//! The reactor's NVMe passthrough ring: 128-byte SQEs and 32-byte CQEs, one
//! per reactor, shared by every nvme bdev with a channel there, reaped by a
//! poller with one `io_uring_enter` per poll (see [`crate::modules::iouring`]).
//!
//! Each bdev I/O becomes one or more `IORING_OP_URING_CMD` SQEs carrying
//! `NVME_URING_CMD_IO`: a read or write per arena buffer (cut at the device's
//! largest transfer), write-zeroes per 65536 blocks, one DSM deallocate, one
//! flush. Buffers are the I/O's own arena buffers, passed as fixed buffers
//! (`IORING_URING_CMD_FIXED`) when the kernel takes them, else by address:
//! never copied. An I/O keeps at most [`PER_IO_WINDOW`] commands in flight and
//! issues the next one as each completes, so even a huge write-zeroes never
//! waits for more SQ room than it frees.
//!
//! This is the nvme module's only unsafe code: the SQE push. Its safe API takes
//! the [`BdevIo`] by value and keeps it until every command made from it is
//! answered, so the buffers the kernel uses outlive its use of them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use ferrite_reactor::mem::Buffer;
use ferrite_reactor::{self as reactor, Poll};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

use super::cmd::{self, Command};
use crate::modules::iouring;
use crate::{BdevIo, IoError, IoStatus, IoType, MAX_SEGMENTS};

const SQ_ENTRIES: u32 = 1024;
const CQ_ENTRIES: u32 = 2 * SQ_ENTRIES;
const FILE_SLOTS: u32 = 256;
/// Commands one bdev I/O keeps in flight at most.
const PER_IO_WINDOW: u32 = 32;

const fn iowr(nr: u32, size: u32) -> u32 {
    (3 << 30) | (size << 16) | ((b'N' as u32) << 8) | nr
}
/// `NVME_URING_CMD_IO` and `_IO_VEC`: `_IOWR('N', 0x80/0x81, struct nvme_uring_cmd)`.
const NVME_URING_CMD_IO: u32 = iowr(0x80, 72);
const NVME_URING_CMD_IO_VEC: u32 = iowr(0x81, 72);

type NvmeUring = IoUring<squeue::Entry128, cqueue::Entry32>;

/// A namespace as the ring addresses it: its registered file and geometry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ns {
    slot: u32,
    pub nsid: u32,
    /// log2 of the block size.
    pub block_shift: u32,
    /// Largest transfer per command, in bytes (a block multiple).
    pub max_transfer: u32,
}

/// One reactor's NVMe ring.
pub(crate) struct Ring {
    inner: RefCell<Inner>,
}

struct Inner {
    uring: NvmeUring,
    fixed_buffers: bool,
    files: iouring::Files,
    pending: Slab<Pending>,
    waiting: VecDeque<(Ns, BdevIo)>,
    in_flight: usize,
    unsubmitted: usize,
    /// Whether a namespace was probed for fixed-buffer passthrough yet.
    probed: bool,
}

/// The `user_data` of the probe command (never a pending index).
const PROBE: u64 = u64::MAX;

/// What is left to send of an I/O.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// Read, write or compare: buffer `seg`, from byte `at` of it.
    Data {
        seg: usize,
        at: usize,
    },
    /// Write-zeroes: from block `at` (relative to the I/O's start).
    Zeroes {
        at: u64,
    },
    /// One command left (flush, deallocate, a vectored read/write).
    One,
    Done,
}

struct Pending {
    io: BdevIo,
    ns: Ns,
    kind: IoType,
    fua: bool,
    offset_blocks: u64,
    num_blocks: u64,
    cursor: Cursor,
    /// Commands of this I/O in flight.
    in_flight: u32,
    status: IoStatus,
    /// DSM ranges (deallocate), an arena buffer.
    ranges: Option<Buffer>,
    /// The iovecs of a vectored read/write (buffers that are not block multiples).
    iov: [libc::iovec; MAX_SEGMENTS],
    iov_count: usize,
}

thread_local! {
    static RING: RefCell<Option<Rc<Ring>>> = const { RefCell::new(None) };
}

/// This reactor's NVMe ring, made on first use. Call on a reactor.
pub(crate) fn ring() -> io::Result<Rc<Ring>> {
    if let Some(r) = RING.with(|r| r.borrow().clone()) {
        return Ok(r);
    }
    let ring = Rc::new(Ring::new()?);
    reactor::register_interrupt(ring.inner.borrow().uring.as_raw_fd())?;
    let poll = ring.clone();
    reactor::register_poller("nvme_uring", move || poll.poll());
    RING.with(|r| *r.borrow_mut() = Some(ring.clone()));
    tracing::info!(
        "reactor {:?}: NVMe passthrough ring ready (128-byte SQEs, 32-byte CQEs)",
        reactor::current_index()
    );
    Ok(ring)
}

impl Ring {
    fn new() -> io::Result<Ring> {
        let uring: NvmeUring = iouring::build(SQ_ENTRIES, CQ_ENTRIES, false)?;
        let files = iouring::Files::new(&uring, FILE_SLOTS)?;
        Ok(Ring {
            inner: RefCell::new(Inner {
                uring,
                // Until the first namespace's probe says the kernel takes them.
                fixed_buffers: false,
                files,
                pending: Slab::with_capacity(SQ_ENTRIES as usize),
                waiting: VecDeque::with_capacity(SQ_ENTRIES as usize),
                in_flight: 0,
                unsubmitted: 0,
                probed: false,
            }),
        })
    }

    pub(crate) fn fixed_buffers(&self) -> bool {
        self.inner.borrow().fixed_buffers
    }

    /// Registers the namespace's char device with the ring.
    pub(crate) fn add_ns(
        &self,
        fd: RawFd,
        nsid: u32,
        block_size: u32,
        max_transfer: u32,
    ) -> io::Result<Ns> {
        let inner = &mut *self.inner.borrow_mut();
        let slot = inner.files.add(&inner.uring, fd)?;
        let ns = Ns {
            slot,
            nsid,
            block_shift: block_size.trailing_zeros(),
            max_transfer,
        };
        if !inner.probed {
            inner.probed = true;
            inner.probe_fixed(ns, block_size);
        }
        Ok(ns)
    }

    pub(crate) fn remove_ns(&self, ns: Ns) {
        let inner = &mut *self.inner.borrow_mut();
        inner.files.remove(&inner.uring, ns.slot);
    }

    /// Sends `io` to the namespace. It completes from the poller with the
    /// first failure's meaning (see [`cmd::io_error`]).
    pub(crate) fn submit(&self, ns: Ns, io: BdevIo) {
        let mut inner = self.inner.borrow_mut();
        if !inner.waiting.is_empty() || !inner.has_room() {
            inner.waiting.push_back((ns, io));
            return;
        }
        inner.start(ns, io);
    }

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
    fn has_room(&self) -> bool {
        self.in_flight + PER_IO_WINDOW as usize <= SQ_ENTRIES as usize
    }

    /// Registers the arena as fixed buffers and reads the first block into
    /// one. When the kernel refuses (`IORING_URING_CMD_FIXED` on NVMe
    /// passthrough: Debian 12's 6.1 answers EINVAL for a hugepage-backed
    /// arena, though it takes a small buffer on normal pages), the arena is
    /// unregistered again and commands pass plain addresses.
    fn probe_fixed(&mut self, ns: Ns, block_size: u32) {
        if let Err(e) = iouring::register_arena(&self.uring) {
            tracing::warn!(
                "NVMe ring: cannot register the buffer arena as fixed buffers ({e}); \
                 commands pass buffer addresses (check ulimit -l)"
            );
            return;
        }
        let Some(mut buf) = Buffer::alloc(block_size as usize) else {
            let _ = self.uring.submitter().unregister_buffers();
            return;
        };
        let Some(index) = iouring::fixed_index(buf.as_mut_ptr(), block_size as usize) else {
            let _ = self.uring.submitter().unregister_buffers();
            return;
        };
        let c = cmd::rw(cmd::OPC_READ, ns.nsid, 0, 1, false);
        let sqe = opcode::UringCmd80::new(types::Fixed(ns.slot), NVME_URING_CMD_IO)
            .cmd(cmd::uring_cmd_bytes(
                &c,
                buf.as_mut_ptr() as u64,
                block_size,
            ))
            .buf_index(Some(index))
            .build();
        self.push(sqe.user_data(PROBE));
        let res = loop {
            if let Err(e) = self.uring.submit_and_wait(1) {
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                tracing::error!("NVMe ring: probing fixed buffers: {e}");
                // The probe may still be in flight: keep its buffer.
                std::mem::forget(buf);
                return;
            }
            self.unsubmitted = 0;
            let mut probe = None;
            let mut batch = [(0u64, 0i32); iouring::REAP_BATCH];
            let n = iouring::take_completions(&mut self.uring, &mut batch);
            for &(ud, res) in &batch[..n] {
                self.in_flight -= 1;
                if ud == PROBE {
                    probe = Some(res);
                } else {
                    self.completed(ud as usize, res);
                }
            }
            if let Some(res) = probe {
                break res;
            }
        };
        if matches!(-res, libc::EINVAL | libc::EOPNOTSUPP | libc::EFAULT) {
            tracing::warn!(
                "NVMe ring: this kernel refuses fixed buffers for NVMe passthrough \
                 ({}); commands pass buffer addresses instead",
                io::Error::from_raw_os_error(-res)
            );
            // Nothing in flight uses them: the probe has completed.
            if let Err(e) = self.uring.submitter().unregister_buffers() {
                tracing::error!("NVMe ring: unregistering the arena: {e}");
            }
            return;
        }
        self.fixed_buffers = true;
    }

    fn start(&mut self, ns: Ns, io: BdevIo) {
        let p = io.params();
        let bs_mask = (1usize << ns.block_shift) - 1;
        let (cursor, iov_count, vectored) = match p.io_type {
            IoType::Read | IoType::Write | IoType::Compare => {
                let (n, aligned) = io.with_request(|r| {
                    let segs = r.data.segments();
                    (segs.len(), segs.iter().all(|s| s.len() & bs_mask == 0))
                });
                if aligned {
                    (Cursor::Data { seg: 0, at: 0 }, 0, false)
                } else {
                    (Cursor::One, n, true)
                }
            }
            IoType::WriteZeroes => (Cursor::Zeroes { at: 0 }, 0, false),
            IoType::Flush | IoType::Unmap => (Cursor::One, 0, false),
            _ => {
                io.complete(Err(IoError::Unsupported));
                return;
            }
        };
        let mut pending = Pending {
            io,
            ns,
            kind: p.io_type,
            fua: p.fua,
            offset_blocks: p.offset_blocks,
            num_blocks: p.num_blocks,
            cursor,
            in_flight: 0,
            status: Ok(()),
            ranges: None,
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_SEGMENTS],
            iov_count,
        };
        if vectored {
            let iov = &mut pending.iov;
            pending.io.with_request(|r| {
                for (v, s) in iov.iter_mut().zip(r.data.segments_mut()) {
                    v.iov_base = s.as_mut_ptr().cast();
                    v.iov_len = s.len();
                }
            });
        }
        if p.io_type == IoType::Unmap {
            let Some(mut buf) = Buffer::alloc(cmd::DSM_MAX_RANGES * 16) else {
                pending.io.complete(Err(IoError::NoResources));
                return;
            };
            if cmd::dsm_ranges(&mut buf[..], p.offset_blocks, p.num_blocks).is_none() {
                pending.io.complete(Err(IoError::BadLength));
                return;
            }
            pending.ranges = Some(buf);
        }
        let index = self.pending.insert(pending);
        self.issue(index);
    }

    /// Sends commands of pending I/O `index` until its window is full or it has
    /// none left; completes it when nothing is left in flight.
    fn issue(&mut self, index: usize) {
        while self.pending[index].in_flight < PER_IO_WINDOW {
            let Some(sqe) = self.next_sqe(index) else {
                break;
            };
            self.push(sqe.user_data(index as u64));
            self.pending[index].in_flight += 1;
        }
        if self.pending[index].in_flight == 0 {
            let p = self.pending.remove(index);
            p.io.complete(p.status);
        }
    }

    /// The next command of pending I/O `index`, its cursor moved past it.
    fn next_sqe(&mut self, index: usize) -> Option<squeue::Entry128> {
        let fixed = self.fixed_buffers;
        let p = &mut self.pending[index];
        if p.status.is_err() {
            // Stop at the first failure; what is in flight still comes back.
            p.cursor = Cursor::Done;
        }
        let ns = p.ns;
        let shift = ns.block_shift;
        let file = types::Fixed(ns.slot);
        let opc = match p.kind {
            IoType::Read => cmd::OPC_READ,
            IoType::Write => cmd::OPC_WRITE,
            _ => cmd::OPC_COMPARE,
        };
        match p.cursor {
            Cursor::Done => None,
            Cursor::Data { seg, at } => {
                let fua = p.fua && p.kind == IoType::Write;
                let (addr, len, before) = p.io.with_request(|r| {
                    let segs = r.data.segments_mut();
                    let before: usize = segs[..seg].iter().map(|b| b.len()).sum();
                    let buf = &mut segs[seg];
                    let len = (buf.len() - at).min(ns.max_transfer as usize);
                    // In bounds: at < buf.len().
                    (buf[at..].as_mut_ptr(), len, before + at)
                });
                let slba = p.offset_blocks + (before >> shift) as u64;
                let c = cmd::rw(opc, ns.nsid, slba, (len >> shift) as u64, fua);
                let segs = p.io.with_request(|r| r.data.segments().len());
                let seg_len = p.io.with_request(|r| r.data.segments()[seg].len());
                p.cursor = if at + len < seg_len {
                    Cursor::Data { seg, at: at + len }
                } else if seg + 1 < segs {
                    Cursor::Data {
                        seg: seg + 1,
                        at: 0,
                    }
                } else {
                    Cursor::Done
                };
                Some(uring_cmd(file, &c, addr, len, fixed, NVME_URING_CMD_IO))
            }
            Cursor::Zeroes { at } => {
                let nlb = (p.num_blocks - at).min(cmd::MAX_NLB);
                let mut c = cmd::rw(
                    cmd::OPC_WRITE_ZEROES,
                    ns.nsid,
                    p.offset_blocks + at,
                    nlb,
                    false,
                );
                c.opcode = cmd::OPC_WRITE_ZEROES;
                p.cursor = if at + nlb < p.num_blocks {
                    Cursor::Zeroes { at: at + nlb }
                } else {
                    Cursor::Done
                };
                Some(uring_cmd(
                    file,
                    &c,
                    std::ptr::null_mut(),
                    0,
                    false,
                    NVME_URING_CMD_IO,
                ))
            }
            Cursor::One => {
                p.cursor = Cursor::Done;
                match p.kind {
                    IoType::Flush => Some(uring_cmd(
                        file,
                        &cmd::flush(ns.nsid),
                        std::ptr::null_mut(),
                        0,
                        false,
                        NVME_URING_CMD_IO,
                    )),
                    IoType::Unmap => {
                        let n = p.num_blocks.div_ceil(cmd::DSM_RANGE_MAX_BLOCKS) as usize;
                        let buf = p.ranges.as_mut().expect("ranges filled at start");
                        let c = cmd::deallocate(ns.nsid, n);
                        Some(uring_cmd(
                            file,
                            &c,
                            buf.as_mut_ptr(),
                            n * 16,
                            fixed,
                            NVME_URING_CMD_IO,
                        ))
                    }
                    _ => {
                        // Vectored: the iovec array and its count; the kernel
                        // takes no fixed buffers for these.
                        let fua = p.fua && p.kind == IoType::Write;
                        let c = cmd::rw(opc, ns.nsid, p.offset_blocks, p.num_blocks, fua);
                        let sqe = opcode::UringCmd80::new(file, NVME_URING_CMD_IO_VEC)
                            .cmd(cmd::uring_cmd_bytes(
                                &c,
                                p.iov.as_ptr() as u64,
                                p.iov_count as u32,
                            ))
                            .build();
                        Some(sqe)
                    }
                }
            }
        }
    }

    fn push(&mut self, sqe: squeue::Entry128) {
        // SAFETY: every address in `sqe` (data buffer, DSM ranges, iovec array
        // and the buffers it names) lies in memory owned by a `Pending` entry
        // (its `BdevIo`'s request buffers, its `ranges` buffer, its `iov`
        // array, which the slab does not move) that stays in `self.pending`
        // until this SQE's CQE is reaped; the arena is never unmapped. The
        // file slot names a file the ring holds a reference to.
        let pushed = unsafe { self.uring.submission().push(&sqe) };
        // Cannot fail: an I/O starts only when PER_IO_WINDOW more fit, and
        // keeps at most that many in flight.
        debug_assert!(pushed.is_ok(), "NVMe SQ full");
        if pushed.is_err() {
            tracing::error!("NVMe SQ full: a command was lost");
        }
        self.in_flight += 1;
        self.unsubmitted += 1;
    }

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
                self.completed(ud as usize, res);
            }
        }
    }

    fn completed(&mut self, index: usize, res: i32) {
        let Some(p) = self.pending.get_mut(index) else {
            tracing::error!("NVMe ring: completion for unknown I/O {index}");
            return;
        };
        p.in_flight -= 1;
        if matches!(-res, libc::ENODEV | libc::ENXIO) {
            super::note_removed(p.io.bdev(), -res);
        }
        if res != 0 && p.status.is_ok() {
            p.status = Err(if res < 0 {
                cmd::errno_error(-res)
            } else {
                cmd::io_error(res as u16)
            });
            if res > 0 && !matches!(p.status, Err(IoError::DeviceMiscompare)) {
                tracing::warn!(
                    "nvme bdev {}: {} at block {}: {}",
                    p.io.bdev().name(),
                    p.kind,
                    p.offset_blocks,
                    cmd::status_text(res as u16)
                );
            }
        }
        self.issue(index);
    }

    fn start_waiting(&mut self) -> bool {
        let mut any = false;
        while !self.waiting.is_empty() && self.has_room() {
            let (ns, io) = self.waiting.pop_front().expect("not empty");
            self.start(ns, io);
            any = true;
        }
        any
    }
}

/// An `IORING_OP_URING_CMD` SQE for `c` over `[addr, addr + len)`, as a fixed
/// buffer when the ring has the arena registered and one piece holds it.
fn uring_cmd(
    file: types::Fixed,
    c: &Command,
    addr: *mut u8,
    len: usize,
    fixed: bool,
    op: u32,
) -> squeue::Entry128 {
    let bytes = cmd::uring_cmd_bytes(c, addr as u64, len as u32);
    let buf_index = (fixed && len > 0)
        .then(|| iouring::fixed_index(addr, len))
        .flatten();
    opcode::UringCmd80::new(file, op)
        .cmd(bytes)
        .buf_index(buf_index)
        .build()
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The kernel may still write into buffers of commands in flight: wait
        // before they go back to the pool.
        self.in_flight = iouring::drain(&mut self.uring, self.in_flight);
        if self.in_flight > 0 {
            tracing::error!(
                "NVMe ring: {} commands still in flight at shutdown; leaking their buffers",
                self.in_flight
            );
            for p in self.pending.drain() {
                std::mem::forget(p);
            }
        }
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uring_cmd_opcodes_match_the_kernel_headers() {
        assert_eq!(NVME_URING_CMD_IO, 0xc048_4e80);
        assert_eq!(NVME_URING_CMD_IO_VEC, 0xc048_4e81);
    }
}
