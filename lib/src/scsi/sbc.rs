//! Block commands (SBC-3): capacity, read, write, cache synchronisation.

use std::rc::Rc;

use super::cdb::{be16, be32, be64};
use super::dev::LunView;
use super::exec::{finish, start_block_io, BlockIo, BlockOp};
use super::opcode;
use super::task::{Task, TaskCallback};

/// Logical block address and transfer length of a READ/WRITE CDB, and its FUA bit.
pub(crate) fn rw_fields(cdb: &[u8]) -> (u64, u64, bool) {
    match cdb[0] {
        opcode::READ_6 | opcode::WRITE_6 => {
            let lba = (((cdb[1] & 0x1f) as u64) << 16) | ((cdb[2] as u64) << 8) | cdb[3] as u64;
            // A transfer length of 0 means 256 blocks in the 6-byte form.
            let len = if cdb[4] == 0 { 256 } else { cdb[4] as u64 };
            (lba, len, false)
        }
        opcode::READ_10 | opcode::WRITE_10 => (
            be32(&cdb[2..]) as u64,
            be16(&cdb[7..]) as u64,
            cdb[1] & 0x08 != 0,
        ),
        opcode::READ_12 | opcode::WRITE_12 => (
            be32(&cdb[2..]) as u64,
            be32(&cdb[6..]) as u64,
            cdb[1] & 0x08 != 0,
        ),
        _ => (be64(&cdb[2..]), be32(&cdb[10..]) as u64, cdb[1] & 0x08 != 0),
    }
}

/// Checks `lba..lba+len` against the LUN; sets CHECK CONDITION if out of range.
pub(crate) fn check_range(view: &LunView, task: &mut Task, lba: u64, len: u64) -> bool {
    match lba.checked_add(len) {
        Some(end) if end <= view.lun.bdev().num_blocks() => true,
        _ => {
            task.lba_out_of_range();
            false
        }
    }
}

pub(crate) fn read_capacity_10(view: &LunView, task: &mut Task) {
    let b = view.lun.bdev();
    let last = b.num_blocks() - 1;
    let mut r = [0u8; 8];
    r[0..4].copy_from_slice(&(last.min(0xffff_ffff) as u32).to_be_bytes());
    r[4..8].copy_from_slice(&b.block_size().to_be_bytes());
    task.reply(&r, 8);
}

pub(crate) fn read_capacity_16(view: &LunView, task: &mut Task) {
    let b = view.lun.bdev();
    let alloc = be32(&task.cdb[10..]) as usize;
    let mut r = [0u8; 32];
    r[0..8].copy_from_slice(&(b.num_blocks() - 1).to_be_bytes());
    r[8..12].copy_from_slice(&b.block_size().to_be_bytes());
    if b.supports(ferrite_bdev::IoType::Unmap) {
        r[14] = 0x80; // LBPME
    }
    task.reply(&r, alloc);
}

pub(crate) fn read(view: Rc<LunView>, mut task: Task, callback: Rc<dyn TaskCallback>, tag: u64) {
    let (lba, len, fua) = rw_fields(task.cdb());
    let bs = view.lun.bdev().block_size() as u64;
    task.cmd_len = (len * bs) as u32;
    if !check_range(&view, &mut task, lba, len) || len == 0 {
        return finish(callback, tag, task);
    }
    start_block_io(
        view,
        task,
        callback,
        tag,
        BlockIo {
            op: BlockOp::Read,
            lba,
            blocks: len,
            fua,
        },
    );
}

pub(crate) fn write(view: Rc<LunView>, mut task: Task, callback: Rc<dyn TaskCallback>, tag: u64) {
    let (lba, len, fua) = rw_fields(task.cdb());
    let bs = view.lun.bdev().block_size() as u64;
    task.cmd_len = (len * bs) as u32;
    if !check_range(&view, &mut task, lba, len) || len == 0 {
        return finish(callback, tag, task);
    }
    if (task.data.len() as u64) < len * bs {
        // The initiator sent less than the command writes.
        task.invalid_field(0, None);
        return finish(callback, tag, task);
    }
    task.data.truncate((len * bs) as usize);
    start_block_io(
        view,
        task,
        callback,
        tag,
        BlockIo {
            op: BlockOp::Write,
            lba,
            blocks: len,
            fua,
        },
    );
}

pub(crate) fn synchronize_cache(
    view: Rc<LunView>,
    mut task: Task,
    callback: Rc<dyn TaskCallback>,
    tag: u64,
) {
    let (lba, len) = if task.opcode() == opcode::SYNCHRONIZE_CACHE_10 {
        (be32(&task.cdb[2..]) as u64, be16(&task.cdb[7..]) as u64)
    } else {
        (be64(&task.cdb[2..]), be32(&task.cdb[10..]) as u64)
    };
    if !check_range(&view, &mut task, lba, len) {
        return finish(callback, tag, task);
    }
    if !view.lun.bdev().supports(ferrite_bdev::IoType::Flush) {
        task.good();
        return finish(callback, tag, task);
    }
    let len = if len == 0 {
        view.lun.bdev().num_blocks() - lba
    } else {
        len
    };
    start_block_io(
        view,
        task,
        callback,
        tag,
        BlockIo {
            op: BlockOp::Flush,
            lba,
            blocks: len,
            fua: false,
        },
    );
}
