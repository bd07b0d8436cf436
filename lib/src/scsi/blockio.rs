//! The block-I/O engine: runs a block command as bdev I/O on the port's channel.
//!
//! A command becomes chunks of at most `MAX_IO_BYTES` (unmap and write-zeroes:
//! at most [`ZERO_CHUNK_BYTES`], so one I/O never holds a reactor long), issued
//! one after another. A task's own buffers are lent to each bdev I/O and given
//! back when it completes, so READ/WRITE data is never copied and nothing is
//! allocated on the heap; WRITE SAME, VERIFY and ORWRITE build their chunk
//! buffers from the arena.

use std::cell::RefCell;
use std::rc::Rc;

use ferrite_bdev::{IoCallback, IoData, IoError, IoRequest, IoStatus, IoType, MAX_IO_BYTES};
use ferrite_reactor::mem::MAX_BUF_SIZE;
use slab::Slab;

use super::cdb::{be32, be64};
use super::dev::LunView;
use super::exec::{sense_for, Done};
use super::sense::{asc, key, Sense};
use super::task::Task;

/// Most bytes one unmap or write-zeroes I/O covers.
pub(crate) const ZERO_CHUNK_BYTES: u64 = 16 << 20;
/// How often an ORWRITE chunk or a WRITE ATOMIC starts again after someone
/// else wrote its blocks.
const RMW_RETRIES: u8 = 16;

/// What a block command asks of the bdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockOp {
    /// Into the task's data (allocated here).
    Read,
    /// From the task's data.
    Write,
    /// Write (FUA), then compare the medium with the data, chunk by chunk.
    WriteVerify,
    /// Compare the medium with the task's data.
    Compare,
    /// Compare every block with the task's one block of data.
    ComparePattern,
    /// Read the medium and drop the data.
    Verify,
    /// Write the task's one block (or zeros) to every block.
    WritePattern,
    WriteZeroes,
    Unmap,
    /// Unmap the ranges of the UNMAP parameter list in the task's data; the
    /// I/O's `blocks` counts descriptors.
    UnmapList,
    Flush,
    /// The task's data: compare blocks, then write blocks.
    CompareAndWrite,
    /// Read, OR the task's data in, compare-and-write.
    OrWrite,
    /// Read, then compare-and-write the task's data over what was read: all
    /// of it is written or none, and no other I/O sees a part.
    AtomicWrite,
}

impl BlockOp {
    fn writes(self) -> bool {
        !matches!(
            self,
            BlockOp::Read | BlockOp::Compare | BlockOp::ComparePattern | BlockOp::Verify
        )
    }

    /// Whether chunks lend the task's own buffers to the bdev.
    fn lends(self) -> bool {
        matches!(
            self,
            BlockOp::Read
                | BlockOp::Write
                | BlockOp::WriteVerify
                | BlockOp::Compare
                | BlockOp::CompareAndWrite
        )
    }
}

/// The bdev work a block command needs: `blocks` blocks from `lba`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockIo {
    pub op: BlockOp,
    pub lba: u64,
    pub blocks: u64,
    pub fua: bool,
}

impl BlockIo {
    pub(crate) fn new(op: BlockOp, lba: u64, blocks: u64) -> BlockIo {
        BlockIo {
            op,
            lba,
            blocks,
            fua: false,
        }
    }

    pub(crate) fn fua(mut self, fua: bool) -> BlockIo {
        self.fua = fua;
        self
    }
}

/// A block command in progress.
struct Pending {
    task: Task,
    done: Done,
    view: Rc<LunView>,
    io: BlockIo,
    bs: u64,
    /// Blocks finished (UnmapList: within the current descriptor).
    pos: u64,
    /// Blocks of the chunk in flight.
    chunk: u64,
    /// The first task buffer lent to the I/O in flight.
    lent: Option<usize>,
    /// Step within a chunk (WriteVerify, OrWrite).
    step: u8,
    retries: u8,
    /// UnmapList: the current descriptor.
    desc: usize,
    /// OrWrite: the blocks read, between the two steps.
    held: Option<IoData>,
    /// WritePattern: the pattern is zeros (no data-out).
    zero: bool,
}

enum Fail {
    Sense(Sense),
    /// Out of buffers or I/O slots: BUSY, the initiator retries.
    Busy,
}

enum Next {
    Submit(IoRequest),
    Finished,
    Fail(Fail),
}

thread_local! {
    static PENDING: RefCell<Slab<Pending>> = RefCell::new(Slab::with_capacity(256));
    static BDEV_DONE: Rc<dyn IoCallback> = Rc::new(BdevDone);
}

/// Starts `io` for `task`; `done` gets the task when it is over.
pub(crate) fn start(view: Rc<LunView>, mut task: Task, done: Done, mut io: BlockIo) {
    let bdev = view.lun.bdev();
    let bs = bdev.block_size() as u64;
    if io.op == BlockOp::Read && !task.data.alloc((io.blocks * bs) as usize) {
        task.busy();
        return done.finish(task);
    }
    if io.op.lends() && !task.data.make_uniform() {
        task.busy();
        return done.finish(task);
    }
    let mut zero = false;
    if io.op == BlockOp::WriteZeroes && !bdev.supports(IoType::WriteZeroes) {
        io.op = BlockOp::WritePattern;
        zero = true;
    }
    let key = PENDING.with(|p| {
        p.borrow_mut().insert(Pending {
            task,
            done,
            view,
            io,
            bs,
            pos: 0,
            chunk: 0,
            lent: None,
            step: 0,
            retries: 0,
            desc: 0,
            held: None,
            zero,
        })
    });
    next(key);
}

/// LBA and block count of descriptor `i` of the UNMAP parameter list in the
/// task's data.
pub(crate) fn unmap_descriptor(task: &Task, i: usize) -> (u64, u64) {
    let mut d = [0u8; 16];
    task.data.copy_to_slice(8 + 16 * i, &mut d);
    (be64(&d), be32(&d[8..]) as u64)
}

fn data_chunk(bs: u64) -> u64 {
    MAX_IO_BYTES as u64 / bs
}

fn zero_chunk(bs: u64) -> u64 {
    ZERO_CHUNK_BYTES / bs
}

/// Lends the task buffers holding bytes `at..at+len` (buffer-aligned).
fn lend(pd: &mut Pending, at: u64, len: u64) -> IoData {
    let first = at as usize / MAX_BUF_SIZE;
    let count = (len as usize)
        .div_ceil(MAX_BUF_SIZE)
        .min(pd.task.data.segment_count() - first);
    pd.lent = Some(first);
    pd.task.data.lend(first, count)
}

/// `len` bytes of the task's first block repeated, or zeros.
fn pattern(task: &Task, bs: usize, len: usize, zero: bool) -> Option<IoData> {
    let mut d = IoData::alloc(len)?;
    if zero {
        d.fill(0);
    } else {
        let mut block = [0u8; 4096];
        task.data.copy_to_slice(0, &mut block[..bs]);
        for i in 0..len / bs {
            d.copy_from_slice(i * bs, &block[..bs]);
        }
    }
    Some(d)
}

/// The new blocks of a read-then-compare-and-write: the task's data from byte
/// `at`, `len` bytes, ORed into `read` when `or`. Where the task's data ends
/// first (a last block sent in part) the blocks keep what was read.
fn new_data(read: &IoData, task: &Task, at: usize, len: usize, or: bool) -> Option<IoData> {
    let mut out = IoData::alloc(len)?;
    let mut a = [0u8; 4096];
    let mut b = [0u8; 4096];
    let have = task.data.len().saturating_sub(at).min(len);
    let mut off = 0;
    while off < len {
        let m = (len - off).min(a.len());
        read.copy_to_slice(off, &mut a[..m]);
        let t = have.saturating_sub(off).min(m);
        task.data.copy_to_slice(at + off, &mut b[..t]);
        for (x, y) in a[..t].iter_mut().zip(&b[..t]) {
            *x = if or { *x | y } else { *y };
        }
        out.copy_from_slice(off, &a[..m]);
        off += m;
    }
    Some(out)
}

/// The next I/O of `pd`, or that it is over.
fn build(pd: &mut Pending) -> Next {
    let bs = pd.bs;
    let io = pd.io;
    match io.op {
        BlockOp::Flush => {
            if pd.pos > 0 {
                return Next::Finished;
            }
            pd.chunk = io.blocks;
            return Next::Submit(IoRequest::flush(io.lba, io.blocks));
        }
        BlockOp::UnmapList => loop {
            if pd.desc >= io.blocks as usize {
                return Next::Finished;
            }
            let (lba, n) = unmap_descriptor(&pd.task, pd.desc);
            if pd.pos >= n {
                pd.desc += 1;
                pd.pos = 0;
                continue;
            }
            let c = (n - pd.pos).min(zero_chunk(bs));
            pd.chunk = c;
            return Next::Submit(IoRequest::unmap(lba + pd.pos, c));
        },
        _ => {}
    }
    if pd.pos >= io.blocks {
        return Next::Finished;
    }
    let lba = io.lba + pd.pos;
    let left = io.blocks - pd.pos;
    let req = match io.op {
        BlockOp::Read | BlockOp::Write | BlockOp::WriteVerify | BlockOp::Compare => {
            let n = left.min(data_chunk(bs));
            pd.chunk = n;
            let data = lend(pd, pd.pos * bs, n * bs);
            match (io.op, pd.step) {
                (BlockOp::Read, _) => IoRequest::read(lba, n, data),
                (BlockOp::Write, _) => IoRequest::write(lba, n, data, io.fua),
                (BlockOp::WriteVerify, 0) => IoRequest::write(lba, n, data, true),
                _ => IoRequest::compare(lba, n, data),
            }
        }
        BlockOp::CompareAndWrite => {
            pd.chunk = left;
            let data = lend(pd, 0, 2 * left * bs);
            IoRequest::compare_and_write(lba, left, data, io.fua)
        }
        BlockOp::Verify => {
            let n = left.min(data_chunk(bs));
            pd.chunk = n;
            match IoData::alloc((n * bs) as usize) {
                Some(d) => IoRequest::read(lba, n, d),
                None => return Next::Fail(Fail::Busy),
            }
        }
        BlockOp::WritePattern | BlockOp::ComparePattern => {
            let n = left.min(data_chunk(bs));
            pd.chunk = n;
            let Some(d) = pattern(&pd.task, bs as usize, (n * bs) as usize, pd.zero) else {
                return Next::Fail(Fail::Busy);
            };
            if io.op == BlockOp::WritePattern {
                IoRequest::write(lba, n, d, io.fua)
            } else {
                IoRequest::compare(lba, n, d)
            }
        }
        BlockOp::WriteZeroes => {
            pd.chunk = left.min(zero_chunk(bs));
            IoRequest::write_zeroes(lba, pd.chunk)
        }
        BlockOp::Unmap => {
            pd.chunk = left.min(zero_chunk(bs));
            IoRequest::unmap(lba, pd.chunk)
        }
        BlockOp::OrWrite | BlockOp::AtomicWrite => {
            if pd.step == 0 {
                let n = left.min(data_chunk(bs) / 2);
                pd.chunk = n;
                match IoData::alloc((n * bs) as usize) {
                    Some(d) => IoRequest::read(lba, n, d),
                    None => return Next::Fail(Fail::Busy),
                }
            } else {
                let n = pd.chunk;
                let Some(mut both) = pd.held.take() else {
                    return Next::Fail(Fail::Busy);
                };
                let or = io.op == BlockOp::OrWrite;
                let at = (pd.pos * bs) as usize;
                let Some(new) = new_data(&both, &pd.task, at, (n * bs) as usize, or) else {
                    return Next::Fail(Fail::Busy);
                };
                for buf in new {
                    if both.push(buf).is_err() {
                        return Next::Fail(Fail::Busy);
                    }
                }
                IoRequest::compare_and_write(lba, n, both, io.fua)
            }
        }
        BlockOp::Flush | BlockOp::UnmapList => unreachable!("handled above"),
    };
    Next::Submit(req)
}

/// Issues the next I/O of pending command `key`, or finishes it.
fn next(key: usize) {
    let (next, view) = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let pd = &mut p[key];
        (build(pd), pd.view.clone())
    });
    match next {
        Next::Finished => complete(key, Ok(())),
        Next::Fail(f) => complete(key, Err(f)),
        Next::Submit(req) => {
            let cb = BDEV_DONE.with(Rc::clone);
            if let Err((e, req)) = view.ch.submit(req, &cb, key as u64) {
                chunk_done(key, Err(e), req);
            }
        }
    }
}

enum After {
    Continue,
    End(Result<(), Fail>),
}

fn chunk_done(key: usize, status: IoStatus, mut req: IoRequest) {
    let after = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let pd = &mut p[key];
        if let Some(first) = pd.lent.take() {
            pd.task.data.give_back(first, req.data.take());
        }
        let op = pd.io.op;
        match status {
            Ok(()) => {
                match (op, pd.step) {
                    (BlockOp::WriteVerify, 0) => pd.step = 1,
                    (BlockOp::OrWrite | BlockOp::AtomicWrite, 0) => {
                        pd.held = Some(req.data.take());
                        pd.step = 1;
                    }
                    _ => {
                        pd.pos += pd.chunk;
                        pd.step = 0;
                        pd.retries = 0;
                    }
                }
                After::Continue
            }
            Err(IoError::Miscompare { .. })
                if matches!(op, BlockOp::OrWrite | BlockOp::AtomicWrite) =>
            {
                // Someone wrote the chunk between our read and our write:
                // read it again.
                pd.retries += 1;
                pd.step = 0;
                if pd.retries > RMW_RETRIES {
                    After::End(Err(Fail::Sense(Sense::new(
                        key::ABORTED_COMMAND,
                        asc::NO_ADDITIONAL_SENSE,
                    ))))
                } else {
                    After::Continue
                }
            }
            Err(IoError::Miscompare { offset }) => {
                // INFORMATION: the offset in the data-out buffer (or in the
                // range verified) of the first byte that differs.
                let base = if op == BlockOp::CompareAndWrite {
                    0
                } else {
                    pd.pos * pd.bs
                };
                let at = (base + offset).min(u32::MAX as u64) as u32;
                After::End(Err(Fail::Sense(
                    Sense::new(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY).with_information(at),
                )))
            }
            Err(IoError::NoResources) => After::End(Err(Fail::Busy)),
            Err(e) => After::End(Err(Fail::Sense(sense_for(e, op.writes())))),
        }
    });
    match after {
        After::Continue => next(key),
        After::End(r) => complete(key, r),
    }
}

fn complete(key: usize, result: Result<(), Fail>) {
    let pd = PENDING.with(|p| p.borrow_mut().remove(key));
    let mut task = pd.task;
    match result {
        Ok(()) => {
            if pd.io.op == BlockOp::Read {
                // Send no more than the CDB asks and the initiator takes; the
                // transport reports the difference as a residual.
                let keep = (task.cmd_len as usize).min(task.data_in_limit());
                task.data.truncate(keep);
            } else {
                task.data.clear();
            }
            task.good();
        }
        Err(Fail::Busy) => task.busy(),
        Err(Fail::Sense(s)) => task.check(s),
    }
    pd.done.finish(task);
}

struct BdevDone;

impl IoCallback for BdevDone {
    fn io_done(&self, tag: u64, status: IoStatus, req: IoRequest) {
        chunk_done(tag as usize, status, req);
    }
}
