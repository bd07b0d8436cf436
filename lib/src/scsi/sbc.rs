//! Block commands (SBC-3): capacity, READ/WRITE, VERIFY, WRITE AND VERIFY,
//! WRITE SAME, UNMAP, COMPARE AND WRITE, ORWRITE, GET LBA STATUS, SYNCHRONIZE
//! CACHE, PRE-FETCH, START STOP UNIT.
//!
//! Handlers check the CDB here and hand the I/O to [`blockio`](super::blockio).
//!
//! # Residuals
//!
//! The transport reports residuals by comparing `task.cmd_len` (what the CDB
//! transfers) with the initiator's expected length, whatever the status; the
//! SCSI layer moves no more than both allow:
//!
//! * Reads send `min(cmd_len, expected)` bytes: only the blocks needed are read
//!   and the data is cut there (libiscsi's Read*Residuals and Read10Invalid:
//!   GOOD with overflow or underflow; a read the initiator flagged as a write
//!   gets GOOD and no data).
//! * Writes (WRITE, WRITE AND VERIFY, ORWRITE) write exactly the
//!   `min(cmd_len, data received)` bytes the initiator sent, where the CDB puts
//!   them, and GOOD. When it sends less than the CDB asks, the blocks beyond are
//!   left alone (libiscsi's Write*Residuals check that the block beyond the
//!   expected length keeps its old data, and that EDTL 0 is GOOD). When what it
//!   sends ends inside a block, that last block is merged: read, overlaid with
//!   the bytes sent, written back by compare-and-write (atomic against other
//!   I/O, retried if someone wrote in between). libiscsi accepts GOOD or
//!   INVALID FIELD IN INFORMATION UNIT for a 200-byte WRITE of one block, but
//!   its reservation tests (ProutReserve.Access*) write 512 bytes with a
//!   one-block WRITE(10) whatever the block size, so on a 4 KiB LUN anything
//!   but GOOD fails them; and dropping a partial block silently would lose data
//!   the initiator believes written. (WRITE AND VERIFY skips the compare for
//!   such a merged write.) VERIFY with BYTCHK 01b compares whole blocks and
//!   refuses a partial one with INVALID FIELD IN INFORMATION UNIT.
//! * Commands whose data has a fixed shape (COMPARE AND WRITE: 2 x blocks;
//!   WRITE SAME: one block) need exactly that much, else INVALID FIELD IN CDB.

use super::blockio::{self, BlockIo, BlockOp};
use super::cdb::{be16, be32, be64};
use super::dev::LunView;
use super::exec::{Ctx, Done};
use super::opcode;
use super::sense::{asc, key, Sense};
use super::task::Task;
use super::vpd;

/// Logical block address and transfer length of a READ/WRITE/VERIFY-style CDB,
/// by its size (the operation code's group).
pub(crate) fn lba_len(cdb: &[u8]) -> (u64, u64) {
    match cdb[0] >> 5 {
        0 => {
            let lba = (((cdb[1] & 0x1f) as u64) << 16) | ((cdb[2] as u64) << 8) | cdb[3] as u64;
            // A transfer length of 0 means 256 blocks in the 6-byte form.
            let len = if cdb[4] == 0 { 256 } else { cdb[4] as u64 };
            (lba, len)
        }
        1 | 2 => (be32(&cdb[2..]) as u64, be16(&cdb[7..]) as u64),
        5 => (be32(&cdb[2..]) as u64, be32(&cdb[6..]) as u64),
        _ => (be64(&cdb[2..]), be32(&cdb[10..]) as u64),
    }
}

/// Where the transfer length of a CDB of this operation code starts.
fn len_byte(op: u8) -> u16 {
    match op >> 5 {
        0 => 4,
        1 | 2 => 7,
        5 => 6,
        _ => 10,
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

/// Checks the protection field (RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT, CDB
/// byte 1 bits 7-5): our LUNs have no protection information, so it must be 0.
fn check_protect(task: &mut Task) -> bool {
    if task.cdb[1] >> 5 != 0 {
        task.invalid_field(1, Some(7));
        return false;
    }
    true
}

/// Checks a transfer length against MAXIMUM TRANSFER LENGTH.
fn check_transfer(view: &LunView, task: &mut Task, len: u64) -> bool {
    if len > vpd::max_transfer_blocks(view.lun.bdev().block_size()) {
        task.invalid_field(len_byte(task.opcode()), None);
        return false;
    }
    true
}

fn bytes(blocks: u64, bs: u64) -> u32 {
    blocks.saturating_mul(bs).min(u32::MAX as u64) as u32
}

/// The bytes of data-out a write of `len` blocks uses (see the residual policy
/// above): what arrived, at most the CDB's length; the data is cut there.
fn data_out_bytes(task: &mut Task, len: u64, bs: u64) -> u64 {
    let got = (task.data.len() as u64).min(len * bs);
    task.data.truncate(got as usize);
    got
}

/// The I/O of a write that got `got` bytes: plain when whole blocks arrived,
/// else with the last block merged (`partial`, see the residual policy above).
fn write_io(op: BlockOp, partial: BlockOp, lba: u64, got: u64, bs: u64) -> BlockIo {
    if got.is_multiple_of(bs) {
        BlockIo::new(op, lba, got / bs)
    } else {
        BlockIo::new(partial, lba, got.div_ceil(bs))
    }
}

/// How many whole blocks of data-out to use for a command that transfers
/// `len` blocks. `None` after ending the task with INVALID FIELD IN
/// INFORMATION UNIT (a partial block).
fn data_out_blocks(task: &mut Task, len: u64, bs: u64) -> Option<u64> {
    let got = (task.data.len() as u64).min(len * bs);
    if !got.is_multiple_of(bs) {
        task.check(Sense::new(
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_INFORMATION_UNIT,
        ));
        return None;
    }
    task.data.truncate(got as usize);
    Some(got / bs)
}

pub(crate) fn read_capacity_10(ctx: &mut Ctx<'_>, task: &mut Task) {
    // SBC-2: with PMI 0 the LBA must be 0 (obsolete in SBC-3, still checked).
    if task.cdb[8] & 0x01 == 0 && be32(&task.cdb[2..]) != 0 {
        task.invalid_field(2, None);
        return;
    }
    let b = ctx.view.lun.bdev();
    let last = b.num_blocks() - 1;
    let mut r = [0u8; 8];
    r[0..4].copy_from_slice(&(last.min(0xffff_ffff) as u32).to_be_bytes());
    r[4..8].copy_from_slice(&b.block_size().to_be_bytes());
    task.reply(&r, 8);
}

pub(crate) fn read_capacity_16(ctx: &mut Ctx<'_>, task: &mut Task) {
    if task.cdb[14] & 0x01 == 0 && be64(&task.cdb[2..]) != 0 {
        task.invalid_field(2, None);
        return;
    }
    let b = ctx.view.lun.bdev();
    let alloc = be32(&task.cdb[10..]) as usize;
    let mut r = [0u8; 32];
    r[0..8].copy_from_slice(&(b.num_blocks() - 1).to_be_bytes());
    r[8..12].copy_from_slice(&b.block_size().to_be_bytes());
    if vpd::thin(&ctx.view) {
        r[14] = 0x80; // LBPME
        if vpd::unmap_reads_zeroes(&ctx.view) {
            r[14] |= 0x40; // LBPRZ
        }
    }
    task.reply(&r, alloc);
}

/// READ(6)/(10)/(12)/(16). DPO and FUA are accepted (there is no read cache
/// to bypass).
pub(crate) fn read(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let (lba, len) = lba_len(task.cdb());
    let view = &ctx.view;
    let bs = view.lun.bdev().block_size() as u64;
    task.cmd_len = bytes(len, bs);
    if (task.opcode() != opcode::READ_6 && !check_protect(&mut task))
        || !check_range(view, &mut task, lba, len)
        || !check_transfer(view, &mut task, len)
    {
        return done.finish(task);
    }
    // Read only the blocks the initiator takes.
    let want = (task.data_in_limit() as u64).min(len * bs);
    let blocks = want.div_ceil(bs);
    if blocks == 0 {
        return done.finish(task);
    }
    let io = BlockIo::new(BlockOp::Read, lba, blocks);
    blockio::start(view.clone(), task, done, io);
}

/// The FUA a write needs: the CDB's FUA bit, or every write when the write
/// cache is off (WCE 0: a write completes when it is durable).
fn write_fua(view: &LunView, cdb_fua: bool) -> bool {
    cdb_fua || !view.lun.mode.wce()
}

/// WRITE(6)/(10)/(12)/(16).
pub(crate) fn write(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let (lba, len) = lba_len(task.cdb());
    let view = &ctx.view;
    let bs = view.lun.bdev().block_size() as u64;
    task.cmd_len = bytes(len, bs);
    let six = task.opcode() == opcode::WRITE_6;
    if (!six && !check_protect(&mut task))
        || !check_range(view, &mut task, lba, len)
        || !check_transfer(view, &mut task, len)
    {
        return done.finish(task);
    }
    let got = data_out_bytes(&mut task, len, bs);
    if got == 0 {
        return done.finish(task);
    }
    let fua = write_fua(view, !six && task.cdb[1] & 0x08 != 0);
    let io = write_io(BlockOp::Write, BlockOp::AtomicWrite, lba, got, bs).fua(fua);
    blockio::start(view.clone(), task, done, io);
}

/// WRITE AND VERIFY(10)/(12)/(16): the write is forced to the medium; with
/// BYTCHK 01b the medium is then compared with the data.
pub(crate) fn write_and_verify(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let (lba, len) = lba_len(task.cdb());
    let view = &ctx.view;
    let bs = view.lun.bdev().block_size() as u64;
    task.cmd_len = bytes(len, bs);
    let bytchk = (task.cdb[1] >> 1) & 0x03;
    if !check_protect(&mut task) {
        return done.finish(task);
    }
    if bytchk > 1 {
        task.invalid_field(1, Some(2));
        return done.finish(task);
    }
    if !check_range(view, &mut task, lba, len) || !check_transfer(view, &mut task, len) {
        return done.finish(task);
    }
    let got = data_out_bytes(&mut task, len, bs);
    if got == 0 {
        return done.finish(task);
    }
    let op = if bytchk == 1 {
        BlockOp::WriteVerify
    } else {
        BlockOp::Write
    };
    let io = write_io(op, BlockOp::AtomicWrite, lba, got, bs).fua(true);
    blockio::start(view.clone(), task, done, io);
}

/// VERIFY(10)/(12)/(16). BYTCHK 00b reads the medium; 01b compares it with the
/// data-out; 11b compares every block with the one block of data-out. A
/// miscompare ends with MISCOMPARE and the offset of the first differing byte
/// in INFORMATION.
pub(crate) fn verify(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let (lba, len) = lba_len(task.cdb());
    let view = &ctx.view;
    let bs = view.lun.bdev().block_size() as u64;
    let bytchk = (task.cdb[1] >> 1) & 0x03;
    task.cmd_len = match bytchk {
        1 => bytes(len, bs),
        3 if len > 0 => bs as u32,
        _ => 0,
    };
    if !check_protect(&mut task) {
        return done.finish(task);
    }
    if bytchk == 2 {
        task.invalid_field(1, Some(2));
        return done.finish(task);
    }
    if !check_range(view, &mut task, lba, len) {
        return done.finish(task);
    }
    if bytchk == 1 && !check_transfer(view, &mut task, len) {
        return done.finish(task);
    }
    if len == 0 {
        return done.finish(task);
    }
    let io = match bytchk {
        0 => BlockIo::new(BlockOp::Verify, lba, len),
        1 => {
            let Some(blocks) = data_out_blocks(&mut task, len, bs) else {
                return done.finish(task);
            };
            if blocks == 0 {
                return done.finish(task);
            }
            BlockIo::new(BlockOp::Compare, lba, blocks)
        }
        _ => {
            if (task.data.len() as u64) < bs {
                task.check(Sense::new(
                    key::ILLEGAL_REQUEST,
                    asc::INVALID_FIELD_IN_INFORMATION_UNIT,
                ));
                return done.finish(task);
            }
            task.data.truncate(bs as usize);
            BlockIo::new(BlockOp::ComparePattern, lba, len)
        }
    };
    blockio::start(view.clone(), task, done, io);
}

/// WRITE SAME(10)/(16). UNMAP set on a thin LUN deallocates the blocks
/// whatever the data (SBC-3 lets the device server unmap; libiscsi's
/// WriteSame10.UnmapUntilEnd expects zeros back even for non-zero data when
/// LBPRZ is set); NDOB (16 only) writes zeros without data; a zero block uses
/// the bdev's write-zeroes; any other block is written repeatedly. NUMBER OF
/// LOGICAL BLOCKS 0 means to the end of the LUN (WSNZ 0), within MAXIMUM WRITE
/// SAME LENGTH. ANCHOR is not supported (ANC_SUP 0).
pub(crate) fn write_same(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let cdb = task.cdb;
    let ten = cdb[0] == opcode::WRITE_SAME_10;
    let view = &ctx.view;
    let bdev = view.lun.bdev();
    let bs = bdev.block_size() as u64;
    let flags = cdb[1];
    let unmap = flags & 0x08 != 0;
    let ndob = !ten && flags & 0x01 != 0;
    let (lba, n) = if ten {
        (be32(&cdb[2..]) as u64, be16(&cdb[7..]) as u64)
    } else {
        (be64(&cdb[2..]), be32(&cdb[10..]) as u64)
    };
    task.cmd_len = if ndob { 0 } else { bs as u32 };
    // UNMAP on a thin LUN needs no data: accept none (as for NDOB).
    let no_data = ndob || (unmap && task.data.is_empty() && vpd::thin(view));
    if !check_protect(&mut task) {
        return done.finish(task);
    }
    if flags & 0x10 != 0 {
        task.invalid_field(1, Some(4)); // ANCHOR
        return done.finish(task);
    }
    if flags & 0x06 != 0 {
        // PBDATA/LBDATA (obsolete).
        task.invalid_field(1, Some(if flags & 0x04 != 0 { 2 } else { 1 }));
        return done.finish(task);
    }
    let capacity = bdev.num_blocks();
    if lba > capacity {
        task.lba_out_of_range();
        return done.finish(task);
    }
    let n = if n == 0 { capacity - lba } else { n };
    if n > vpd::MAX_WRITE_SAME_BLOCKS {
        task.invalid_field(if ten { 7 } else { 10 }, None);
        return done.finish(task);
    }
    if !check_range(view, &mut task, lba, n) {
        return done.finish(task);
    }
    if !no_data && task.data.len() as u64 != bs {
        task.invalid_field(if ten { 7 } else { 10 }, None);
        return done.finish(task);
    }
    if n == 0 {
        return done.finish(task);
    }
    let fua = write_fua(view, false);
    let zero = no_data || is_zero(&task, bs as usize);
    let op = if unmap && vpd::thin(view) {
        BlockOp::Unmap
    } else if zero {
        BlockOp::WriteZeroes
    } else {
        BlockOp::WritePattern
    };
    blockio::start(view.clone(), task, done, BlockIo::new(op, lba, n).fua(fua));
}

fn is_zero(task: &Task, len: usize) -> bool {
    let mut left = len;
    for seg in task.data.segments() {
        let n = seg.len().min(left);
        if seg[..n].iter().any(|&b| b != 0) {
            return false;
        }
        left -= n;
        if left == 0 {
            break;
        }
    }
    true
}

/// UNMAP: the parameter list is checked whole (lengths, descriptor count, each
/// range) before anything is unmapped.
pub(crate) fn unmap(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let view = &ctx.view;
    let bdev = view.lun.bdev();
    let plen = be16(&task.cdb[7..]) as usize;
    task.cmd_len = plen as u32;
    if task.cdb[1] & 0x01 != 0 {
        task.invalid_field(1, Some(0)); // ANCHOR
        return done.finish(task);
    }
    if plen == 0 {
        return done.finish(task);
    }
    let got = plen.min(task.data.len());
    if got < 8 {
        task.param_list_length_error();
        return done.finish(task);
    }
    let mut hdr = [0u8; 8];
    task.data.copy_to_slice(0, &mut hdr);
    let bd_len = be16(&hdr[2..]) as usize;
    let count = bd_len.min(got - 8) / 16;
    if count > vpd::MAX_UNMAP_DESCRIPTORS {
        task.invalid_param(2, None);
        return done.finish(task);
    }
    let max = vpd::max_unmap_blocks(bdev.block_size());
    for i in 0..count {
        let (lba, n) = blockio::unmap_descriptor(&task, i);
        if n > max {
            task.invalid_param((8 + 16 * i + 8) as u16, None);
            return done.finish(task);
        }
        if !check_range(view, &mut task, lba, n) {
            return done.finish(task);
        }
    }
    if count == 0 {
        return done.finish(task);
    }
    let io = BlockIo::new(BlockOp::UnmapList, 0, count as u64);
    blockio::start(view.clone(), task, done, io);
}

/// COMPARE AND WRITE: compares NUMBER OF LOGICAL BLOCKS blocks with the first
/// half of the data and, if equal, writes the second half, atomically (the bdev
/// layer holds a range lock across reactors). A miscompare ends with MISCOMPARE
/// and the offset of the first differing byte in INFORMATION.
pub(crate) fn compare_and_write(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let view = &ctx.view;
    let bs = view.lun.bdev().block_size() as u64;
    let lba = be64(&task.cdb[2..]);
    let n = task.cdb[13] as u64;
    task.cmd_len = bytes(2 * n, bs);
    if !check_protect(&mut task) || !check_range(view, &mut task, lba, n) {
        return done.finish(task);
    }
    if n > vpd::max_compare_and_write_blocks(bs as u32) {
        task.invalid_field(13, None);
        return done.finish(task);
    }
    // The data must be exactly the compare and the write blocks. (This also
    // catches 256 blocks asked for in the one-byte field: 0 blocks with data.)
    if task.data.len() as u64 != 2 * n * bs {
        task.invalid_field(13, None);
        return done.finish(task);
    }
    if n == 0 {
        return done.finish(task);
    }
    let fua = write_fua(view, task.cdb[1] & 0x08 != 0);
    let io = BlockIo::new(BlockOp::CompareAndWrite, lba, n).fua(fua);
    blockio::start(view.clone(), task, done, io);
}

/// ORWRITE(16): each block becomes itself OR the data. Done per chunk of up to
/// 1 MiB as read, OR, then COMPARE AND WRITE of what was read against the
/// result: a write by anyone else in between makes the compare fail and the
/// chunk starts again, so every chunk is atomic the way COMPARE AND WRITE is
/// (an ORWRITE longer than a chunk is atomic chunk by chunk).
pub(crate) fn orwrite(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let (lba, len) = lba_len(task.cdb());
    let view = &ctx.view;
    let bs = view.lun.bdev().block_size() as u64;
    task.cmd_len = bytes(len, bs);
    if !check_protect(&mut task)
        || !check_range(view, &mut task, lba, len)
        || !check_transfer(view, &mut task, len)
    {
        return done.finish(task);
    }
    let got = data_out_bytes(&mut task, len, bs);
    if got == 0 {
        return done.finish(task);
    }
    let fua = write_fua(view, task.cdb[1] & 0x08 != 0);
    let io = write_io(BlockOp::OrWrite, BlockOp::OrWrite, lba, got, bs).fua(fua);
    blockio::start(view.clone(), task, done, io);
}

/// WRITE ATOMIC(16): the blocks are written all or not at all, and no other
/// command sees a part of them. Done as read, then COMPARE AND WRITE of what
/// was read against the new data (the bdev layer's range lock makes that
/// atomic), again from the read when another writer got in between. No
/// alignment or granularity limits; no atomic boundaries (ATOMIC BOUNDARY
/// must be 0).
pub(crate) fn write_atomic(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let view = &ctx.view;
    let bs = view.lun.bdev().block_size() as u64;
    let lba = be64(&task.cdb[2..]);
    let boundary = be16(&task.cdb[10..]);
    let n = be16(&task.cdb[12..]) as u64;
    task.cmd_len = bytes(n, bs);
    if !check_protect(&mut task) {
        return done.finish(task);
    }
    if boundary != 0 {
        task.invalid_field(10, None);
        return done.finish(task);
    }
    if !check_range(view, &mut task, lba, n) {
        return done.finish(task);
    }
    if n > vpd::max_atomic_blocks(bs as u32) {
        task.invalid_field(12, None);
        return done.finish(task);
    }
    if n == 0 {
        return done.finish(task);
    }
    // All of it or nothing: a short data-out is refused, not written in part.
    if (task.data.len() as u64) < n * bs {
        task.check(Sense::new(
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_INFORMATION_UNIT,
        ));
        return done.finish(task);
    }
    task.data.truncate((n * bs) as usize);
    let fua = write_fua(view, task.cdb[1] & 0x08 != 0);
    let io = BlockIo::new(BlockOp::AtomicWrite, lba, n).fua(fua);
    blockio::start(view.clone(), task, done, io);
}

/// READ DEFECT DATA(10)/(12): there are no defects; the header echoes the
/// lists and format asked for, with an empty list.
pub(crate) fn read_defect_data(_ctx: &mut Ctx<'_>, task: &mut Task) {
    let twelve = task.opcode() == opcode::READ_DEFECT_DATA_12;
    let (flags, alloc, len) = if twelve {
        (task.cdb[1], be32(&task.cdb[6..]) as usize, 8)
    } else {
        (task.cdb[2], be16(&task.cdb[7..]) as usize, 4)
    };
    let mut r = [0u8; 8];
    r[1] = flags & 0x1f; // PLISTV, GLISTV, DEFECT LIST FORMAT
    task.reply(&r[..len], alloc);
}

/// GET LBA STATUS: the bdev layer cannot tell mapped from deallocated blocks,
/// so everything from the starting LBA to the end is reported mapped (which
/// SBC allows: a deallocated block may be reported mapped).
pub(crate) fn get_lba_status(ctx: &mut Ctx<'_>, task: &mut Task) {
    let lba = be64(&task.cdb[2..]);
    let alloc = be32(&task.cdb[10..]) as usize;
    let capacity = ctx.view.lun.bdev().num_blocks();
    if lba >= capacity {
        task.lba_out_of_range();
        return;
    }
    let mut r = [0u8; 24];
    r[0..4].copy_from_slice(&20u32.to_be_bytes()); // PARAMETER DATA LENGTH
    r[8..16].copy_from_slice(&lba.to_be_bytes());
    let n = (capacity - lba).min(u32::MAX as u64) as u32;
    r[16..20].copy_from_slice(&n.to_be_bytes());
    r[20] = 0x00; // PROVISIONING STATUS: mapped
    task.reply(&r, alloc);
}

/// SYNCHRONIZE CACHE(10)/(16): flushes the range (0 blocks: to the end). The
/// flush completes before the status, IMMED or not (SBC allows waiting).
pub(crate) fn synchronize_cache(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let (lba, len) = lba_len(task.cdb());
    let view = &ctx.view;
    let bdev = view.lun.bdev();
    if !check_range(view, &mut task, lba, len) {
        return done.finish(task);
    }
    let len = if len == 0 {
        bdev.num_blocks() - lba
    } else {
        len
    };
    if len == 0 || !bdev.supports(ferrite_bdev::IoType::Flush) {
        return done.finish(task);
    }
    blockio::start(
        view.clone(),
        task,
        done,
        BlockIo::new(BlockOp::Flush, lba, len),
    );
}

/// PRE-FETCH(10)/(16): there is no cache to load; after the range check the
/// answer is GOOD ("not all blocks could be prefetched", SBC-3 5.8), never
/// CONDITION MET.
pub(crate) fn pre_fetch(ctx: &mut Ctx<'_>, task: &mut Task) {
    let (lba, len) = lba_len(task.cdb());
    check_range(&ctx.view, task, lba, len);
}

/// START STOP UNIT: the medium is always there and started; accepted.
pub(crate) fn start_stop_unit(_ctx: &mut Ctx<'_>, task: &mut Task) {
    task.good();
}
