//! A SCSI task: one command from an initiator, as a transport hands it to the
//! SCSI layer and gets it back.

use ferrite_bdev::IoData;
use ferrite_reactor::mem::{Buffer, MAX_BUF_SIZE};

use super::sense::{asc, key, Sense};

/// Longest CDB accepted (variable-length CDBs are 32 bytes).
pub const MAX_CDB: usize = 32;

/// Which way data moves, from the initiator's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataDir {
    #[default]
    None,
    /// Target to initiator (Data-In).
    Read,
    /// Initiator to target (Data-Out).
    Write,
    /// Both (e.g. XDWRITEREAD); rarely used.
    Bidi,
}

/// SAM task attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskAttr {
    Untagged,
    #[default]
    Simple,
    Ordered,
    HeadOfQueue,
    Aca,
}

/// SAM status codes.
pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const CONDITION_MET: u8 = 0x04;
    pub const BUSY: u8 = 0x08;
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    pub const TASK_SET_FULL: u8 = 0x28;
    pub const ACA_ACTIVE: u8 = 0x30;
    pub const TASK_ABORTED: u8 = 0x40;
}

/// A task's data: arena buffers in order, `len` bytes valid. The transport keeps
/// one per task slot and reuses it, so its list never reallocates in steady state.
#[derive(Debug, Default)]
pub struct TaskData {
    bufs: Vec<Buffer>,
    len: usize,
}

impl TaskData {
    /// Room for `max_bytes` of large buffers without reallocating.
    pub fn with_capacity(max_bytes: usize) -> TaskData {
        TaskData {
            bufs: Vec::with_capacity(max_bytes.div_ceil(MAX_BUF_SIZE).max(1)),
            len: 0,
        }
    }

    /// Bytes of valid data.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns every buffer to the pool.
    pub fn clear(&mut self) {
        self.bufs.clear();
        self.len = 0;
    }

    /// Makes the data exactly `len` bytes of fresh buffers (contents undefined).
    /// Large transfers use 128 KiB buffers, so every bdev-sized chunk starts on a
    /// buffer boundary. Returns false when the pool is empty (try again later).
    pub fn alloc(&mut self, len: usize) -> bool {
        self.clear();
        let mut left = len;
        while left > 0 {
            let n = left.min(MAX_BUF_SIZE);
            match Buffer::alloc(n) {
                Some(b) => self.bufs.push(b),
                None => {
                    self.clear();
                    return false;
                }
            }
            left -= n;
        }
        self.len = len;
        true
    }

    /// Appends a filled buffer (a transport receiving data).
    pub fn push(&mut self, buf: Buffer) {
        self.len += buf.len();
        self.bufs.push(buf);
    }

    pub fn segments(&self) -> &[Buffer] {
        &self.bufs
    }

    pub fn segments_mut(&mut self) -> &mut [Buffer] {
        &mut self.bufs
    }

    /// Shortens the valid length (e.g. to an allocation length).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let mut left = len;
        let mut keep = 0;
        for b in self.bufs.iter_mut() {
            if left == 0 {
                break;
            }
            let n = b.len().min(left);
            b.set_len(n);
            left -= n;
            keep += 1;
        }
        self.bufs.truncate(keep);
        self.len = len;
    }

    /// Copies `src` in at byte `at`. Panics if it does not fit.
    pub fn copy_from_slice(&mut self, mut at: usize, src: &[u8]) {
        assert!(at + src.len() <= self.len, "copy beyond the task data");
        let mut done = 0;
        for b in self.bufs.iter_mut() {
            if done == src.len() {
                break;
            }
            if at >= b.len() {
                at -= b.len();
                continue;
            }
            let n = (b.len() - at).min(src.len() - done);
            b[at..at + n].copy_from_slice(&src[done..done + n]);
            done += n;
            at = 0;
        }
    }

    /// Copies bytes from `at` into `dst`. Panics if out of range.
    pub fn copy_to_slice(&self, mut at: usize, dst: &mut [u8]) {
        assert!(at + dst.len() <= self.len, "copy beyond the task data");
        let mut done = 0;
        for b in self.bufs.iter() {
            if done == dst.len() {
                break;
            }
            if at >= b.len() {
                at -= b.len();
                continue;
            }
            let n = (b.len() - at).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&b[at..at + n]);
            done += n;
            at = 0;
        }
    }

    /// Replaces the data with a copy of `src` (for emulated commands' replies).
    pub fn set(&mut self, src: &[u8]) -> bool {
        if !self.alloc(src.len()) {
            return false;
        }
        self.copy_from_slice(0, src);
        true
    }

    /// Moves buffers `first..first+count` out into an `IoData` for a bdev I/O.
    pub(crate) fn lend(&mut self, first: usize, count: usize) -> IoData {
        let mut d = IoData::new();
        for b in self.bufs.drain(first..first + count) {
            let _ = d.push(b);
        }
        d
    }

    /// Puts buffers lent with [`lend`](Self::lend) back at `first`.
    pub(crate) fn give_back(&mut self, first: usize, data: IoData) {
        let tail = self.bufs.len() - first;
        self.bufs.extend(data);
        // Move the returned buffers in front of the ones after them.
        let returned = self.bufs.len() - first - tail;
        self.bufs[first..].rotate_right(returned);
    }

    pub(crate) fn segment_count(&self) -> usize {
        self.bufs.len()
    }

    /// Makes every buffer but the last `MAX_BUF_SIZE` long, as block I/O lends
    /// whole buffers per chunk; copies only when a transport handed in other
    /// sizes. Returns false when the pool is empty.
    pub(crate) fn make_uniform(&mut self) -> bool {
        let n = self.bufs.len();
        if self.bufs[..n.saturating_sub(1)]
            .iter()
            .all(|b| b.len() == MAX_BUF_SIZE)
        {
            return true;
        }
        let mut fresh = TaskData::with_capacity(self.len);
        if !fresh.alloc(self.len) {
            return false;
        }
        let mut at = 0;
        for b in &self.bufs {
            fresh.copy_from_slice(at, b);
            at += b.len();
        }
        std::mem::swap(&mut self.bufs, &mut fresh.bufs);
        true
    }
}

/// One SCSI command.
#[derive(Debug)]
pub struct Task {
    /// The LUN addressed (flat LUN number).
    pub lun: u64,
    pub cdb: [u8; MAX_CDB],
    pub cdb_len: u8,
    pub dir: DataDir,
    pub attr: TaskAttr,
    /// Bytes the initiator expects to move (iSCSI's Expected Data Transfer Length).
    pub expected_len: u32,
    /// Write: the data received. Read: the data to send, `data.len()` bytes.
    pub data: TaskData,
    /// The initiator's tag for this task (ABORT TASK names it).
    pub tag: u64,
    /// Result: SAM status.
    pub status: u8,
    /// Result: sense data with CHECK CONDITION.
    pub sense: Sense,
    /// Result: the bytes the command itself would move (from its CDB, or for
    /// emulated replies the reply cut to the allocation length); the transport
    /// compares it with `expected_len` for residuals, whatever the status.
    pub cmd_len: u32,
    /// Sense goes back in descriptor format (the LUN's D_SENSE is set).
    pub(crate) desc_sense: bool,
    /// Result: the task was aborted (task management, PREEMPT AND ABORT); the
    /// transport sends no response for it. See [`tmf`](super::tmf).
    pub aborted: bool,
    /// The SCSI layer's handle on the task while it holds it.
    pub(crate) track: u32,
}

impl Task {
    /// A task with room for `max_bytes` of data, to keep in a transport's slot.
    pub fn new(max_bytes: usize) -> Task {
        Task {
            lun: 0,
            cdb: [0; MAX_CDB],
            cdb_len: 0,
            dir: DataDir::None,
            attr: TaskAttr::Simple,
            expected_len: 0,
            data: TaskData::with_capacity(max_bytes),
            tag: 0,
            status: status::GOOD,
            sense: Sense::default(),
            cmd_len: 0,
            desc_sense: false,
            aborted: false,
            track: super::tmf::UNTRACKED,
        }
    }

    /// Resets the per-command fields for reuse (keeps the data list's capacity).
    pub fn reset(&mut self) {
        self.data.clear();
        self.status = status::GOOD;
        self.sense.clear();
        self.cmd_len = 0;
        self.desc_sense = false;
        self.aborted = false;
        self.cdb = [0; MAX_CDB];
        self.cdb_len = 0;
        self.dir = DataDir::None;
        self.expected_len = 0;
    }

    pub fn cdb(&self) -> &[u8] {
        &self.cdb[..self.cdb_len as usize]
    }

    pub fn set_cdb(&mut self, cdb: &[u8]) {
        let n = cdb.len().min(MAX_CDB);
        self.cdb[..n].copy_from_slice(&cdb[..n]);
        self.cdb_len = n as u8;
    }

    pub fn opcode(&self) -> u8 {
        self.cdb[0]
    }

    /// Ends the task with GOOD.
    pub fn good(&mut self) {
        self.status = status::GOOD;
        self.sense.clear();
    }

    /// Ends the task with CHECK CONDITION and this sense; drops any data.
    pub fn check(&mut self, sense: Sense) {
        self.status = status::CHECK_CONDITION;
        self.sense = sense;
        self.data.clear();
    }

    /// CHECK CONDITION, ILLEGAL REQUEST, INVALID FIELD IN CDB at `byte` (and `bit`).
    pub fn invalid_field(&mut self, byte: u16, bit: Option<u8>) {
        self.check(
            Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB)
                .with_field_pointer(true, byte, bit),
        );
    }

    /// CHECK CONDITION, ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST at
    /// `byte` (and `bit`) of the parameter list.
    pub fn invalid_param(&mut self, byte: u16, bit: Option<u8>) {
        self.check(
            Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_PARAMETER_LIST)
                .with_field_pointer(false, byte, bit),
        );
    }

    /// CHECK CONDITION, ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR.
    pub fn param_list_length_error(&mut self) {
        self.check(Sense::new(
            key::ILLEGAL_REQUEST,
            asc::PARAMETER_LIST_LENGTH_ERROR,
        ));
    }

    /// CHECK CONDITION, DATA PROTECT, WRITE PROTECTED.
    pub fn write_protected(&mut self) {
        self.check(Sense::new(key::DATA_PROTECT, asc::WRITE_PROTECTED));
    }

    /// The most Data-In bytes the initiator takes: its expected length, or
    /// nothing when it flagged the command as a write only.
    pub fn data_in_limit(&self) -> usize {
        match self.dir {
            DataDir::Write => 0,
            _ => self.expected_len as usize,
        }
    }

    /// CHECK CONDITION, ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
    pub fn invalid_opcode(&mut self) {
        self.check(
            Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_COMMAND_OPERATION_CODE)
                .with_field_pointer(true, 0, Some(7)),
        );
    }

    /// CHECK CONDITION, ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub fn lba_out_of_range(&mut self) {
        self.check(Sense::new(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE));
    }

    /// RESERVATION CONFLICT (no sense).
    pub fn reservation_conflict(&mut self) {
        self.status = status::RESERVATION_CONFLICT;
        self.sense.clear();
        self.data.clear();
    }

    /// Replies with `bytes`, cut to the allocation length and to what the
    /// initiator expects.
    pub fn reply(&mut self, bytes: &[u8], alloc_len: usize) {
        let n = bytes.len().min(alloc_len);
        self.cmd_len = n as u32;
        let n = n.min(self.data_in_limit());
        if !self.data.set(&bytes[..n]) {
            self.busy();
            return;
        }
        self.good();
    }

    /// BUSY: out of buffers; the initiator retries.
    pub fn busy(&mut self) {
        self.status = status::BUSY;
        self.sense.clear();
        self.data.clear();
    }
}

/// Receives finished tasks, with the transport's tag.
pub trait TaskCallback {
    fn task_done(&self, tag: u64, task: Task);
}
