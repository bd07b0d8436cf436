//! Command dispatch and the block-I/O engine every transport's tasks go through.
//!
//! Emulated commands finish synchronously but are completed from this reactor's
//! `scsi_completions` poller, so a transport's callback never runs inside its own
//! `execute` call. Block commands become bdev I/O on the port's channel, issued in
//! chunks of at most `MAX_IO_BYTES`; a task's buffers are lent to each bdev I/O and
//! given back when it completes, so data is never copied.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use ferrite_bdev::{IoCallback, IoError, IoRequest, IoStatus, MAX_IO_BYTES};
use ferrite_reactor::mem::MAX_BUF_SIZE;
use ferrite_reactor::Poll;
use slab::Slab;

use super::dev::{LunView, ScsiPort};
use super::sense::{asc, key, Sense};
use super::task::{Task, TaskCallback};
use super::{opcode, sbc, spc};

/// A block command in progress.
struct Pending {
    task: Task,
    callback: Rc<dyn TaskCallback>,
    tag: u64,
    view: Rc<LunView>,
    op: BlockOp,
    fua: bool,
    lba: u64,
    blocks: u64,
    /// Blocks already moved.
    done: u64,
    /// The chunk in flight: its first buffer index and block count.
    chunk_first_seg: usize,
    chunk_blocks: u64,
}

/// The bdev work a block command needs: `blocks` blocks from `lba`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockIo {
    pub op: BlockOp,
    pub lba: u64,
    pub blocks: u64,
    pub fua: bool,
}

/// What a block command asks of the bdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockOp {
    Read,
    Write,
    Flush,
}

type Finished = (Rc<dyn TaskCallback>, u64, Task);

thread_local! {
    static FINISHED: RefCell<VecDeque<Finished>> = RefCell::new(VecDeque::with_capacity(1024));
    static PENDING: RefCell<Slab<Pending>> = RefCell::new(Slab::with_capacity(256));
    static BDEV_DONE: Rc<dyn IoCallback> = Rc::new(BdevDone);
    static POLLER: Cell<bool> = const { Cell::new(false) };
}

fn ensure_poller() {
    if !POLLER.with(|p| p.replace(true)) {
        ferrite_reactor::register_poller("scsi_completions", poll_finished);
    }
}

fn poll_finished() -> Poll {
    let mut n = 0;
    while let Some((cb, tag, task)) = FINISHED.with(|f| f.borrow_mut().pop_front()) {
        cb.task_done(tag, task);
        n += 1;
    }
    Poll::from_work(n > 0)
}

/// Hands `task` back to its transport from the completion poller.
pub(crate) fn finish(callback: Rc<dyn TaskCallback>, tag: u64, task: Task) {
    FINISHED.with(|f| f.borrow_mut().push_back((callback, tag, task)));
}

pub(crate) fn execute(
    port: &mut ScsiPort,
    mut task: Task,
    callback: Rc<dyn TaskCallback>,
    tag: u64,
) {
    ensure_poller();
    task.good();
    task.cmd_len = 0;
    let op = task.opcode();
    // Commands that answer for the device as a whole, LUN or not.
    match op {
        opcode::REPORT_LUNS => {
            spc::report_luns(port, &mut task);
            return finish(callback, tag, task);
        }
        opcode::INQUIRY | opcode::REQUEST_SENSE if port.lun(task.lun).is_none() => {
            spc::no_lun(&mut task);
            return finish(callback, tag, task);
        }
        _ => {}
    }
    let Some(view) = port.lun(task.lun) else {
        task.check(Sense::new(
            key::ILLEGAL_REQUEST,
            asc::LOGICAL_UNIT_NOT_SUPPORTED,
        ));
        return finish(callback, tag, task);
    };
    match op {
        opcode::TEST_UNIT_READY => task.good(),
        opcode::INQUIRY => spc::inquiry(&view, port, &mut task),
        opcode::REQUEST_SENSE => spc::request_sense(&mut task),
        opcode::MODE_SENSE_6 | opcode::MODE_SENSE_10 => spc::mode_sense(&view, &mut task),
        opcode::READ_CAPACITY_10 => sbc::read_capacity_10(&view, &mut task),
        opcode::SERVICE_ACTION_IN_16 if task.cdb[1] & 0x1f == 0x10 => {
            sbc::read_capacity_16(&view, &mut task)
        }
        opcode::READ_6 | opcode::READ_10 | opcode::READ_12 | opcode::READ_16 => {
            return sbc::read(view, task, callback, tag);
        }
        opcode::WRITE_6 | opcode::WRITE_10 | opcode::WRITE_12 | opcode::WRITE_16 => {
            return sbc::write(view, task, callback, tag);
        }
        opcode::SYNCHRONIZE_CACHE_10 | opcode::SYNCHRONIZE_CACHE_16 => {
            return sbc::synchronize_cache(view, task, callback, tag);
        }
        _ => task.invalid_opcode(),
    }
    finish(callback, tag, task)
}

/// Starts block I/O for `task`: `blocks` blocks from `lba`. For reads the data
/// buffers are allocated here; for writes they are the task's data.
pub(crate) fn start_block_io(
    view: Rc<LunView>,
    mut task: Task,
    callback: Rc<dyn TaskCallback>,
    tag: u64,
    io: BlockIo,
) {
    let BlockIo {
        op,
        lba,
        blocks,
        fua,
    } = io;
    let bs = view.lun.bdev().block_size() as u64;
    if op == BlockOp::Read && !task.data.alloc((blocks * bs) as usize) {
        task.busy();
        return finish(callback, tag, task);
    }
    let key = PENDING.with(|p| {
        p.borrow_mut().insert(Pending {
            task,
            callback,
            tag,
            view,
            op,
            fua,
            lba,
            blocks,
            done: 0,
            chunk_first_seg: 0,
            chunk_blocks: 0,
        })
    });
    next_chunk(key);
}

/// Issues the next chunk of pending command `key`, or finishes it.
fn next_chunk(key: usize) {
    let submit = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let pd = &mut p[key];
        let bs = pd.view.lun.bdev().block_size() as u64;
        if pd.op == BlockOp::Flush {
            if pd.done > 0 {
                return None;
            }
            pd.chunk_blocks = pd.blocks;
            return Some((pd.view.clone(), IoRequest::flush(pd.lba, pd.blocks)));
        }
        if pd.done == pd.blocks {
            return None;
        }
        let max_blocks = MAX_IO_BYTES as u64 / bs;
        let n = (pd.blocks - pd.done).min(max_blocks);
        let first_seg = (pd.done * bs) as usize / MAX_BUF_SIZE;
        let seg_count = ((n * bs) as usize)
            .div_ceil(MAX_BUF_SIZE)
            .min(pd.task.data.segment_count() - first_seg);
        let data = pd.task.data.lend(first_seg, seg_count);
        pd.chunk_first_seg = first_seg;
        pd.chunk_blocks = n;
        let lba = pd.lba + pd.done;
        let req = match pd.op {
            BlockOp::Read => IoRequest::read(lba, n, data),
            BlockOp::Write => IoRequest::write(lba, n, data, pd.fua),
            BlockOp::Flush => unreachable!(),
        };
        Some((pd.view.clone(), req))
    });
    match submit {
        None => complete(key, Ok(())),
        Some((view, req)) => {
            let cb = BDEV_DONE.with(Rc::clone);
            if let Err((e, req)) = view.ch.submit(req, &cb, key as u64) {
                chunk_done(key, Err(e), req);
            }
        }
    }
}

fn chunk_done(key: usize, status: IoStatus, req: IoRequest) {
    let more = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let pd = &mut p[key];
        if !req.data.is_empty() {
            pd.task.data.give_back(pd.chunk_first_seg, req.data);
        }
        if status.is_ok() {
            pd.done += pd.chunk_blocks.max(1);
        }
        status.is_ok()
    });
    if more {
        next_chunk(key);
    } else {
        complete(key, status);
    }
}

fn complete(key: usize, status: IoStatus) {
    let pd = PENDING.with(|p| p.borrow_mut().remove(key));
    let mut task = pd.task;
    match status {
        Ok(()) => {
            if pd.op == BlockOp::Read {
                // Send no more than the initiator expects (the rest is overflow).
                task.data.truncate(task.expected_len as usize);
            } else {
                task.data.clear();
            }
            task.good();
        }
        Err(e) => task.check(sense_for(e, pd.op)),
    }
    finish(pd.callback, pd.tag, task);
}

/// The sense data a failed bdev I/O maps to.
pub(crate) fn sense_for(e: IoError, op: BlockOp) -> Sense {
    match e {
        IoError::OutOfRange => Sense::new(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE),
        IoError::Miscompare { offset } => {
            Sense::new(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY)
                .with_information(offset as u32)
        }
        IoError::Unsupported | IoError::BadLength => {
            Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB)
        }
        IoError::Aborted | IoError::NoResources | IoError::Removed => {
            Sense::new(key::ABORTED_COMMAND, asc::NO_ADDITIONAL_SENSE)
        }
        IoError::Device(_) => match op {
            BlockOp::Read => Sense::new(key::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR),
            _ => Sense::new(key::MEDIUM_ERROR, asc::WRITE_ERROR),
        },
    }
}

struct BdevDone;

impl IoCallback for BdevDone {
    fn io_done(&self, tag: u64, status: IoStatus, req: IoRequest) {
        chunk_done(tag as usize, status, req);
    }
}
