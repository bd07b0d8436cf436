//! The initiator's I/O path: sessions in the full feature phase on a reactor.
//!
//! A session lives on one reactor with all its connections (so its CmdSN window
//! needs no lock); one poller per reactor runs every session there. Each
//! connection is a closed-loop job of `depth` slots, like a bdev [`crate::Job`]:
//! a completion turns its slot into the next I/O at once. Per poll and
//! connection: read what the socket has (Data-In payloads go straight into the
//! slot's buffer, the rest through a receive buffer), handle each PDU, queue the
//! next commands, then write everything queued in one call.
//!
//! Commands take the next CmdSN only when the window is open (CmdSN <=
//! MaxCmdSN) and the connection's send buffer has room; otherwise the slot waits
//! in the session's FIFO until a response opens the window. Writes carry
//! immediate data (ImmediateData=Yes) and unsolicited Data-Out (InitialR2T=No)
//! up to FirstBurstLength, the rest answers R2Ts. NOP-In pings are answered.
//!
//! Buffers (slots, receive and send buffers, queues) are allocated when the
//! session is built; steady-state I/O allocates nothing.

use std::collections::VecDeque;
use std::io::{IoSliceMut, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use ferrite_reactor::{self as reactor, ticks, Interest};
use ferrite_transport::iscsi::digest::{header_digest, DataDigest, DIGEST_LEN};
use hdrhistogram::Histogram;

use super::login::{ConnLimits, Negotiated, Window, OUR_MAX_RECV_DATA_SEGMENT_LENGTH};
use super::pdu::{self, opcode, Bhs, Lun, BHS_LEN, RESERVED_TAG};
use crate::job::{new_histogram, JobResult, MISCOMPARE_REPORTS};
use crate::pattern;
use crate::workload::{Pick, Picker, Workload};
use crate::{JobShared, Miscompare, TickConv};

/// Largest data segment we send (the target may declare a larger one).
pub const MAX_SEND_SEGMENT: usize = 256 * 1024;
/// Bytes queued for sending beyond which new commands wait.
const TX_LIMIT: usize = 1 << 20;
/// The receive buffer holds any whole PDU but a Data-In payload: header, the
/// largest AHS, digests and a MaxRecvDataSegmentLength data segment.
const RX_CAP: usize = OUR_MAX_RECV_DATA_SEGMENT_LENGTH as usize + 4096;
/// Compact the receive buffer when less than this is free at its end.
const RX_MIN_FREE: usize = 64 * 1024;
/// Socket reads per connection and poll, so one busy connection cannot starve
/// the others.
const READS_PER_POLL: usize = 8;
/// Most error descriptions a job keeps (all failures are counted).
pub const ERROR_REPORTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    VerifyWrite,
    VerifyRead,
}

impl Op {
    fn writes(self) -> bool {
        matches!(self, Op::Write | Op::VerifyWrite)
    }

    fn name(self) -> &'static str {
        if self.writes() {
            "WRITE(16)"
        } else {
            "READ(16)"
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Idle,
    /// Picked, waiting for the window or for room to send.
    Waiting,
    /// Sent; waiting for its status.
    InFlight,
}

struct Slot {
    /// Read target, write source, verify pattern.
    buf: Box<[u8]>,
    /// verify: the read-back.
    check: Box<[u8]>,
    op: Op,
    unit: u64,
    start: u64,
    itt: u32,
    gen: u8,
    state: SlotState,
    /// Data-In bytes received and the next DataSN expected.
    received: usize,
    data_sn: u32,
}

/// Data-Out owed for an R2T.
#[derive(Debug, Clone, Copy)]
struct R2tWork {
    slot: u16,
    itt: u32,
    ttt: u32,
    offset: usize,
    len: usize,
    sent: usize,
    data_sn: u32,
}

#[derive(Debug, Clone, Copy)]
enum RxState {
    /// Waiting for the next BHS.
    Header,
    /// A Data-In payload going into a slot's buffer.
    Payload {
        bhs: Bhs,
        slot: u16,
        off: usize,
        left: usize,
        digest: DataDigest,
        /// Padding plus data digest still to read after the payload.
        trailer: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Running,
    Stopping,
    Drained,
}

/// What one connection's job does.
#[derive(Debug, Clone)]
pub struct ConnSpec {
    /// Names the job in reports.
    pub label: String,
    pub workload: Workload,
    pub depth: usize,
    pub io_size: usize,
    pub read_pct: u32,
    pub seed: u64,
    pub block_size: usize,
    /// The job's range: first block and number of blocks.
    pub range: (u64, u64),
    pub lun: Lun,
}

/// One connection in the full feature phase and its job.
pub struct IoConn {
    label: String,
    stream: TcpStream,
    pub cid: u16,
    index: u8,
    pub limits: ConnLimits,
    lun: Lun,
    seed: u64,
    block_size: usize,
    io_size: usize,
    io_blocks: u32,
    first_block: u64,
    /// Largest data segment we send, immediate data and unsolicited data per write.
    max_send: usize,
    imm_len: usize,
    unsol_len: usize,
    /// Bytes a read and a write command put in the send buffer.
    read_need: usize,
    write_need: usize,
    picker: Picker,
    slots: Box<[Slot]>,
    rx: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
    rx_state: RxState,
    tx: Vec<u8>,
    tx_head: usize,
    /// Whether the reactor also wakes for writability (output blocked).
    want_write: bool,
    registered: bool,
    r2ts: VecDeque<R2tWork>,
    pub exp_stat_sn: u32,
    // Accounting, as a bdev job keeps it.
    hist: Histogram<u64>,
    ios: u64,
    reads: u64,
    writes: u64,
    fails: u64,
    miscompares: u64,
    ios_at_stop: u64,
    outstanding: usize,
    generation: u64,
    pings: u64,
    reports: Vec<Miscompare>,
    errors: Vec<String>,
    /// Why the connection failed, if it did.
    pub dead: Option<String>,
    /// Why the job ended before it was told to (the target asked for a logout).
    pub ended: Option<String>,
    state: State,
    start: u64,
    end: u64,
    shared: Arc<JobShared>,
    conv: TickConv,
    reactor: usize,
    core: usize,
}

/// What a connection's job did.
pub struct ConnResult {
    pub job: JobResult,
    pub errors: Vec<String>,
    pub pings: u64,
    pub dead: Option<String>,
    pub ended: Option<String>,
}

#[inline]
fn pdu_bytes(hd: bool, dd: bool, data: usize) -> usize {
    BHS_LEN
        + if hd { DIGEST_LEN } else { 0 }
        + if data > 0 {
            pdu::padded_len(data) + if dd { DIGEST_LEN } else { 0 }
        } else {
            0
        }
}

/// Appends a PDU (BHS, header digest, data, padding, data digest) to `tx`.
#[inline]
fn push_pdu(tx: &mut Vec<u8>, hd: bool, dd: bool, bhs: &Bhs, data: &[u8]) {
    tx.extend_from_slice(bhs);
    if hd {
        tx.extend_from_slice(&header_digest(bhs, &[]));
    }
    if !data.is_empty() {
        tx.extend_from_slice(data);
        let pad = pdu::pad_len(data.len());
        tx.extend_from_slice(&[0u8; 3][..pad]);
        if dd {
            let mut d = DataDigest::new();
            d.update(data);
            tx.extend_from_slice(&d.finish());
        }
    }
}

impl IoConn {
    /// Builds the job of a logged-in connection (allocating all its buffers).
    /// `index` numbers it within its session.
    pub fn new(
        spec: ConnSpec,
        stream: TcpStream,
        cid: u16,
        index: u8,
        limits: ConnLimits,
        neg: &Negotiated,
        exp_stat_sn: u32,
    ) -> std::io::Result<IoConn> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let io_blocks = (spec.io_size / spec.block_size) as u32;
        let units = spec.range.1 / u64::from(io_blocks);
        let max_send = (limits.target_mrdsl as usize).clamp(512, MAX_SEND_SEGMENT);
        let first_burst = neg.first_burst_length as usize;
        let imm_len = if neg.immediate_data {
            spec.io_size.min(first_burst).min(max_send)
        } else {
            0
        };
        let unsol_len = if neg.initial_r2t {
            imm_len
        } else {
            spec.io_size.min(first_burst)
        };
        let (hd, dd) = (limits.header_digest, limits.data_digest);
        let read_need = pdu_bytes(hd, dd, 0);
        let mut write_need = pdu_bytes(hd, dd, imm_len);
        let mut off = imm_len;
        while off < unsol_len {
            let n = max_send.min(unsol_len - off);
            write_need += pdu_bytes(hd, dd, n);
            off += n;
        }
        let r2t_need = pdu_bytes(hd, dd, max_send);
        let ping_need = pdu_bytes(hd, dd, OUR_MAX_RECV_DATA_SEGMENT_LENGTH as usize);
        let tx_cap = TX_LIMIT + write_need.max(r2t_need).max(ping_need);
        let verify = spec.workload == Workload::Verify;
        let mut slots = Vec::with_capacity(spec.depth);
        for _ in 0..spec.depth {
            let mut buf = vec![0u8; spec.io_size].into_boxed_slice();
            if spec.workload.writes() {
                // Writes carry this unless verify overwrites it with its pattern.
                pattern::fill_slice(&mut buf, spec.block_size, 0, 0, spec.seed);
            }
            let check = if verify {
                vec![0u8; spec.io_size].into_boxed_slice()
            } else {
                Box::default()
            };
            slots.push(Slot {
                buf,
                check,
                op: Op::Read,
                unit: 0,
                start: 0,
                itt: 0,
                gen: 0,
                state: SlotState::Idle,
                received: 0,
                data_sn: 0,
            });
        }
        Ok(IoConn {
            label: spec.label,
            stream,
            cid,
            index,
            limits,
            lun: spec.lun,
            seed: spec.seed,
            block_size: spec.block_size,
            io_size: spec.io_size,
            io_blocks,
            first_block: spec.range.0,
            max_send,
            imm_len,
            unsol_len,
            read_need,
            write_need,
            picker: Picker::new(spec.workload, spec.read_pct, units, spec.seed, None),
            slots: slots.into_boxed_slice(),
            rx: vec![0u8; RX_CAP].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
            rx_state: RxState::Header,
            tx: Vec::with_capacity(tx_cap),
            tx_head: 0,
            want_write: false,
            registered: false,
            r2ts: VecDeque::with_capacity(spec.depth * 2),
            exp_stat_sn,
            hist: new_histogram(),
            ios: 0,
            reads: 0,
            writes: 0,
            fails: 0,
            miscompares: 0,
            ios_at_stop: 0,
            outstanding: 0,
            generation: 0,
            pings: 0,
            reports: Vec::with_capacity(MISCOMPARE_REPORTS),
            errors: Vec::with_capacity(ERROR_REPORTS),
            dead: None,
            ended: None,
            state: State::Created,
            start: 0,
            end: 0,
            shared: Arc::new(JobShared::default()),
            conv: TickConv::new(),
            reactor: 0,
            core: 0,
        })
    }

    pub fn shared(&self) -> Arc<JobShared> {
        self.shared.clone()
    }

    /// Gives the socket back (for logout) with the results.
    pub fn finish(self) -> (ConnResult, TcpStream) {
        let end = if self.state == State::Drained {
            self.end
        } else {
            ticks()
        };
        let elapsed_ns = if self.start == 0 {
            0
        } else {
            self.conv.ns(end.wrapping_sub(self.start))
        };
        let job = JobResult {
            bdev: self.label,
            reactor: self.reactor,
            core: self.core,
            ios: self.ios,
            reads: self.reads,
            writes: self.writes,
            fails: self.fails,
            miscompares: self.miscompares,
            ios_at_stop: self.ios_at_stop,
            elapsed_ns,
            io_size: self.io_size,
            outstanding: self.outstanding,
            latency_ns: self.hist,
            reports: self.reports,
        };
        (
            ConnResult {
                job,
                errors: self.errors,
                pings: self.pings,
                dead: self.dead,
                ended: self.ended,
            },
            self.stream,
        )
    }

    #[inline]
    fn need(&self, op: Op) -> usize {
        if op.writes() {
            self.write_need
        } else {
            self.read_need
        }
    }

    /// Whether `need` more bytes may be queued for sending now (compacting the
    /// buffer if that makes room).
    #[inline]
    fn tx_room(&mut self, need: usize) -> bool {
        let pending = self.tx.len() - self.tx_head;
        if pending == 0 {
            self.tx.clear();
            self.tx_head = 0;
            return true;
        }
        if pending + need > TX_LIMIT {
            return false;
        }
        if self.tx.len() + need > self.tx.capacity() {
            self.tx.copy_within(self.tx_head.., 0);
            self.tx.truncate(pending);
            self.tx_head = 0;
        }
        true
    }

    /// Sends slot `s`'s command (and its unsolicited data) with the next CmdSN.
    /// The caller checked the window and the room.
    fn issue(&mut self, s: usize, window: &mut Window) {
        let (hd, dd) = (self.limits.header_digest, self.limits.data_digest);
        let slot = &mut self.slots[s];
        slot.gen = slot.gen.wrapping_add(1);
        let itt = u32::from(slot.gen) << 24 | u32::from(self.index) << 16 | s as u32;
        slot.itt = itt;
        slot.received = 0;
        slot.data_sn = 0;
        slot.state = SlotState::InFlight;
        let write = slot.op.writes();
        let lba = self.first_block + slot.unit * u64::from(self.io_blocks);
        let cdb = pdu::rw16(write, lba, self.io_blocks);
        let (imm, unsol) = if write {
            (self.imm_len, self.unsol_len)
        } else {
            (0, 0)
        };
        let cmd = pdu::Command {
            read: !write,
            write,
            final_: unsol == imm,
            lun: self.lun,
            itt,
            edtl: self.io_size as u32,
            cmd_sn: window.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            immediate_data: imm as u32,
            cdb: &cdb,
        };
        window.cmd_sn = window.cmd_sn.wrapping_add(1);
        push_pdu(&mut self.tx, hd, dd, &cmd.encode(), &slot.buf[..imm]);
        let mut off = imm;
        let mut data_sn = 0;
        while off < unsol {
            let n = self.max_send.min(unsol - off);
            let out = pdu::DataOut {
                final_: off + n == unsol,
                lun: self.lun,
                itt,
                ttt: RESERVED_TAG,
                exp_stat_sn: self.exp_stat_sn,
                data_sn,
                offset: off as u32,
                len: n as u32,
            };
            push_pdu(&mut self.tx, hd, dd, &out.encode(), &slot.buf[off..off + n]);
            off += n;
            data_sn += 1;
        }
    }

    /// Sends slot `s` now if nothing waits before it and it may go; otherwise
    /// queues it in the session's FIFO.
    #[inline]
    fn issue_or_wait(&mut self, s: usize, window: &mut Window, waiting: &mut VecDeque<(u8, u16)>) {
        self.outstanding += 1;
        let need = self.need(self.slots[s].op);
        if waiting.is_empty() && window.open() && self.tx_room(need) {
            self.issue(s, window);
        } else {
            self.slots[s].state = SlotState::Waiting;
            waiting.push_back((self.index, s as u16));
        }
    }

    /// Picks slot `s`'s next I/O and sends it (or queues it), unless the job
    /// is stopping.
    #[inline]
    fn next_io(&mut self, s: usize, window: &mut Window, waiting: &mut VecDeque<(u8, u16)>) {
        if self.state != State::Running || self.picker.left() == 0 {
            self.maybe_drained();
            return;
        }
        let (kind, unit) = self.picker.pick();
        let op = match kind {
            Pick::Read => Op::Read,
            Pick::Write => Op::Write,
            Pick::VerifyWrite => Op::VerifyWrite,
            Pick::Unmap | Pick::WriteZeroes | Pick::Flush => {
                unreachable!("the iSCSI workloads are reads and writes")
            }
        };
        if op == Op::VerifyWrite {
            self.generation += 1;
            let lba = self.first_block + unit * u64::from(self.io_blocks);
            pattern::fill_slice(
                &mut self.slots[s].buf,
                self.block_size,
                lba,
                self.generation,
                self.seed,
            );
        }
        let slot = &mut self.slots[s];
        slot.op = op;
        slot.unit = unit;
        slot.start = ticks();
        self.issue_or_wait(s, window, waiting);
    }

    fn maybe_drained(&mut self) {
        if self.state == State::Stopping && self.outstanding == 0 {
            self.state = State::Drained;
            self.end = ticks();
            self.shared.drained.store(true, Relaxed);
        }
    }

    /// Starts the job: every slot's first I/O.
    fn start(&mut self, window: &mut Window, waiting: &mut VecDeque<(u8, u16)>) {
        if self.state != State::Created {
            return;
        }
        self.state = State::Running;
        self.start = ticks();
        if self.dead.is_some() {
            self.state = State::Stopping;
            self.maybe_drained();
            return;
        }
        for s in 0..self.slots.len() {
            self.next_io(s, window, waiting);
        }
    }

    /// Stops picking new I/Os. Waiting slots are dropped by the session.
    fn stop(&mut self) {
        match self.state {
            State::Created => {
                self.state = State::Drained;
                self.shared.drained.store(true, Relaxed);
            }
            State::Running => {
                self.state = State::Stopping;
                self.ios_at_stop = self.ios;
            }
            State::Stopping | State::Drained => {}
        }
    }

    /// Lets go of a slot that waited and will not be sent.
    fn drop_waiting(&mut self, s: usize) {
        let slot = &mut self.slots[s];
        if slot.state != SlotState::Waiting {
            return;
        }
        slot.state = SlotState::Idle;
        let unit = slot.unit;
        self.picker.release(unit);
        self.outstanding -= 1;
    }

    /// A slot's command ended: accounting, verify's next step, the next I/O.
    fn complete(
        &mut self,
        s: usize,
        result: Result<(), String>,
        window: &mut Window,
        waiting: &mut VecDeque<(u8, u16)>,
    ) {
        let now = ticks();
        let slot = &mut self.slots[s];
        slot.state = SlotState::Idle;
        let (op, unit) = (slot.op, slot.unit);
        let ns = self.conv.ns(now.wrapping_sub(slot.start));
        self.hist.saturating_record(ns);
        self.outstanding -= 1;
        self.ios += 1;
        self.shared.ios.store(self.ios, Relaxed);
        if op.writes() {
            self.writes += 1;
        } else {
            self.reads += 1;
        }
        let ok = result.is_ok();
        if let Err(e) = result {
            self.fails += 1;
            self.shared.fails.store(self.fails, Relaxed);
            if self.errors.len() < ERROR_REPORTS {
                let lba = self.first_block + unit * u64::from(self.io_blocks);
                self.errors.push(format!("{} of LBA {lba}: {e}", op.name()));
            }
        }
        match op {
            Op::VerifyWrite if ok && self.state == State::Running => {
                let slot = &mut self.slots[s];
                slot.op = Op::VerifyRead;
                slot.start = ticks();
                self.issue_or_wait(s, window, waiting);
            }
            Op::VerifyWrite => {
                self.picker.release(unit);
                self.next_io(s, window, waiting);
            }
            Op::VerifyRead => {
                if ok {
                    self.compare(s);
                }
                self.picker.release(unit);
                self.next_io(s, window, waiting);
            }
            Op::Read | Op::Write => self.next_io(s, window, waiting),
        }
    }

    /// verify: the read-back against the pattern written.
    fn compare(&mut self, s: usize) {
        let slot = &self.slots[s];
        if slot.buf[..] == slot.check[..] {
            return;
        }
        let at = slot
            .buf
            .iter()
            .zip(slot.check.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        self.miscompares += 1;
        self.shared.miscompares.store(self.miscompares, Relaxed);
        if self.reports.len() < MISCOMPARE_REPORTS {
            let bs = self.block_size;
            self.reports.push(Miscompare {
                lba: self.first_block + slot.unit * u64::from(self.io_blocks) + (at / bs) as u64,
                byte: at % bs,
                expected: slot.buf[at],
                got: slot.check[at],
                stamped_lba: pattern::stamped_lba_in(&slot.check, bs, at),
            });
        }
    }

    /// The connection failed: every I/O it had is a failed I/O and the job ends.
    fn fail_conn(&mut self, why: String, waiting: &mut VecDeque<(u8, u16)>) {
        if self.dead.is_some() {
            return;
        }
        let index = self.index;
        waiting.retain(|&(c, _)| c != index);
        let lost = self.outstanding as u64;
        for slot in self.slots.iter_mut() {
            slot.state = SlotState::Idle;
        }
        self.fails += lost;
        self.shared.fails.store(self.fails, Relaxed);
        self.outstanding = 0;
        self.r2ts.clear();
        self.tx.clear();
        self.tx_head = 0;
        let msg = if lost > 0 {
            format!("{why} ({lost} I/O in flight lost)")
        } else {
            why
        };
        self.dead = Some(msg);
        self.unregister();
        if self.state == State::Running {
            self.ios_at_stop = self.ios;
        }
        if self.state != State::Drained {
            self.state = State::Stopping;
            self.maybe_drained();
        }
    }

    /// The target wants this connection to go: no new I/O on it; what is in
    /// flight may finish, and the connection logs out at the end of the run.
    fn end_early(&mut self, why: &str, waiting: &mut VecDeque<(u8, u16)>) {
        if self.ended.is_none() {
            self.ended = Some(why.to_string());
        }
        let index = self.index;
        waiting.retain(|&(c, s)| {
            if c == index {
                self.drop_waiting(s as usize);
                false
            } else {
                true
            }
        });
        self.stop();
        self.maybe_drained();
    }

    /// The slot a target PDU's ITT names, if it is in flight.
    #[inline]
    fn slot_of(&self, itt: u32) -> Result<usize, String> {
        let s = (itt & 0xffff) as usize;
        match self.slots.get(s) {
            Some(slot) if slot.itt == itt && slot.state == SlotState::InFlight => Ok(s),
            _ => Err(format!(
                "the target answered ITT {itt:#010x}, which names no command in flight"
            )),
        }
    }

    // ---- receiving ----

    /// Reads and handles what the socket has. Returns whether it did anything.
    fn poll_rx(&mut self, window: &mut Window, waiting: &mut VecDeque<(u8, u16)>) -> bool {
        if self.dead.is_some() {
            return false;
        }
        let mut did = false;
        let mut reads = 0;
        loop {
            match self.step(window, waiting) {
                Ok(true) => did = true,
                Ok(false) => {
                    if reads == READS_PER_POLL {
                        break;
                    }
                    reads += 1;
                    match self.read_more() {
                        Ok(true) => did = true,
                        Ok(false) => break,
                        Err(e) => {
                            self.fail_conn(e, waiting);
                            return true;
                        }
                    }
                }
                Err(e) => {
                    self.fail_conn(format!("protocol error: {e}"), waiting);
                    return true;
                }
            }
            if self.dead.is_some() {
                return true;
            }
        }
        did
    }

    /// Reads from the socket: straight into a slot's buffer (and the receive
    /// buffer behind it) while a Data-In payload is due and nothing is
    /// buffered, else into the receive buffer. Ok(false): nothing to read now.
    fn read_more(&mut self) -> Result<bool, String> {
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        } else if RX_CAP - self.rx_end < RX_MIN_FREE {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        let direct = match self.rx_state {
            RxState::Payload {
                slot, off, left, ..
            } if left > 0 && self.rx_start == self.rx_end => Some((slot as usize, off, left)),
            _ => None,
        };
        let res = match direct {
            Some((s, off, left)) => {
                let slot = &mut self.slots[s];
                let dst = if slot.op == Op::VerifyRead {
                    &mut slot.check[off..off + left]
                } else {
                    &mut slot.buf[off..off + left]
                };
                let mut iov = [
                    IoSliceMut::new(dst),
                    IoSliceMut::new(&mut self.rx[self.rx_end..]),
                ];
                self.stream.read_vectored(&mut iov)
            }
            None => self.stream.read(&mut self.rx[self.rx_end..]),
        };
        let n = match res {
            Ok(0) => return Err("the target closed the connection".into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(format!("receive failed: {e}")),
        };
        match (direct, &mut self.rx_state) {
            (
                Some((s, _, _)),
                RxState::Payload {
                    off, left, digest, ..
                },
            ) => {
                let into_slot = n.min(*left);
                if self.limits.data_digest {
                    let slot = &self.slots[s];
                    let src = if slot.op == Op::VerifyRead {
                        &slot.check
                    } else {
                        &slot.buf
                    };
                    digest.update(&src[*off..*off + into_slot]);
                }
                *off += into_slot;
                *left -= into_slot;
                self.rx_end += n - into_slot;
            }
            _ => self.rx_end += n,
        }
        Ok(true)
    }

    /// Handles the next PDU (or piece of a Data-In payload) from the receive
    /// buffer. Ok(false): more bytes are needed first.
    fn step(
        &mut self,
        window: &mut Window,
        waiting: &mut VecDeque<(u8, u16)>,
    ) -> Result<bool, String> {
        let avail = self.rx_end - self.rx_start;
        match self.rx_state {
            RxState::Header => {
                if avail < BHS_LEN {
                    return Ok(false);
                }
                let at = self.rx_start;
                let mut bhs = [0u8; BHS_LEN];
                bhs.copy_from_slice(&self.rx[at..at + BHS_LEN]);
                let ahs = pdu::ahs_len(&bhs);
                let hd = if self.limits.header_digest {
                    DIGEST_LEN
                } else {
                    0
                };
                let hlen = BHS_LEN + ahs + hd;
                if avail < hlen {
                    return Ok(false);
                }
                if hd > 0 {
                    let got = &self.rx[at + BHS_LEN + ahs..at + hlen];
                    if got != header_digest(&bhs, &self.rx[at + BHS_LEN..at + BHS_LEN + ahs]) {
                        return Err("header digest mismatch".into());
                    }
                }
                let dlen = pdu::data_len(&bhs);
                if dlen > OUR_MAX_RECV_DATA_SEGMENT_LENGTH as usize {
                    return Err(format!(
                        "a {dlen}-byte data segment (our MaxRecvDataSegmentLength is \
                         {OUR_MAX_RECV_DATA_SEGMENT_LENGTH})"
                    ));
                }
                let dd = if dlen > 0 && self.limits.data_digest {
                    DIGEST_LEN
                } else {
                    0
                };
                if pdu::opcode_of(&bhs) == opcode::SCSI_DATA_IN && dlen > 0 {
                    let (slot, off) = self.data_in_target(&bhs, dlen)?;
                    self.rx_start += hlen;
                    self.rx_state = RxState::Payload {
                        bhs,
                        slot: slot as u16,
                        off,
                        left: dlen,
                        digest: DataDigest::new(),
                        trailer: pdu::pad_len(dlen) + dd,
                    };
                    return Ok(true);
                }
                let total = hlen + pdu::padded_len(dlen) + dd;
                if avail < total {
                    return Ok(false);
                }
                let data = at + hlen..at + hlen + dlen;
                if dd > 0 {
                    let mut d = DataDigest::new();
                    d.update(&self.rx[data.clone()]);
                    if d.finish()[..] != self.rx[at + total - DIGEST_LEN..at + total] {
                        return Err("data digest mismatch".into());
                    }
                }
                self.rx_start += total;
                self.handle(&bhs, data, window, waiting)?;
                Ok(true)
            }
            RxState::Payload {
                bhs,
                slot,
                off,
                left,
                mut digest,
                trailer,
            } => {
                if left > 0 {
                    if avail == 0 {
                        return Ok(false);
                    }
                    let n = avail.min(left);
                    let src = &self.rx[self.rx_start..self.rx_start + n];
                    let sl = &mut self.slots[slot as usize];
                    let dst = if sl.op == Op::VerifyRead {
                        &mut sl.check[off..off + n]
                    } else {
                        &mut sl.buf[off..off + n]
                    };
                    dst.copy_from_slice(src);
                    if self.limits.data_digest {
                        digest.update(src);
                    }
                    self.rx_start += n;
                    self.rx_state = RxState::Payload {
                        bhs,
                        slot,
                        off: off + n,
                        left: left - n,
                        digest,
                        trailer,
                    };
                    return Ok(true);
                }
                if avail < trailer {
                    return Ok(false);
                }
                if self.limits.data_digest {
                    let end = self.rx_start + trailer;
                    if digest.finish()[..] != self.rx[end - DIGEST_LEN..end] {
                        return Err("data digest mismatch".into());
                    }
                }
                self.rx_start += trailer;
                self.rx_state = RxState::Header;
                self.data_in_done(&bhs, window, waiting)?;
                Ok(true)
            }
        }
    }

    /// Checks a Data-In with data against its command; returns the slot and
    /// where in its buffer the data goes.
    fn data_in_target(&mut self, bhs: &Bhs, dlen: usize) -> Result<(usize, usize), String> {
        let s = self.slot_of(pdu::itt(bhs))?;
        let slot = &mut self.slots[s];
        if slot.op.writes() {
            return Err(format!("Data-In for a write (ITT {:#010x})", slot.itt));
        }
        let off = pdu::buffer_offset(bhs) as usize;
        if off + dlen > self.io_size {
            return Err(format!(
                "Data-In of {dlen} bytes at offset {off} beyond the {}-byte transfer",
                self.io_size
            ));
        }
        let sn = pdu::data_sn(bhs);
        if sn != slot.data_sn {
            return Err(format!(
                "Data-In DataSN {sn}, expected {} (ITT {:#010x})",
                slot.data_sn, slot.itt
            ));
        }
        slot.data_sn += 1;
        slot.received += dlen;
        Ok((s, off))
    }

    /// A Data-In's header was handled and its data placed: the sequence numbers,
    /// and the status if it carries one.
    fn data_in_done(
        &mut self,
        bhs: &Bhs,
        window: &mut Window,
        waiting: &mut VecDeque<(u8, u16)>,
    ) -> Result<(), String> {
        window.update(pdu::exp_cmd_sn(bhs), pdu::max_cmd_sn(bhs));
        if bhs[1] & pdu::DATA_IN_STATUS == 0 {
            return Ok(());
        }
        self.take_stat_sn(bhs);
        let s = self.slot_of(pdu::itt(bhs))?;
        let result = self.status_result(s, bhs[3], bhs[1], pdu::residual(bhs), &[]);
        self.complete(s, result, window, waiting);
        Ok(())
    }

    #[inline]
    fn take_stat_sn(&mut self, bhs: &Bhs) {
        let sn = pdu::stat_sn(bhs);
        if pdu::sn_le(self.exp_stat_sn, sn) {
            self.exp_stat_sn = sn.wrapping_add(1);
        }
    }

    /// The outcome of a command from its status, residual and data received.
    fn status_result(
        &self,
        s: usize,
        status: u8,
        flags: u8,
        residual: u32,
        sense: &[u8],
    ) -> Result<(), String> {
        if status != pdu::STATUS_GOOD {
            return Err(pdu::describe_status(status, sense));
        }
        if flags & (pdu::DATA_IN_UNDERFLOW | pdu::DATA_IN_OVERFLOW) != 0 && residual > 0 {
            return Err(format!(
                "GOOD with a residual {} of {residual} bytes",
                if flags & pdu::DATA_IN_UNDERFLOW != 0 {
                    "underflow"
                } else {
                    "overflow"
                }
            ));
        }
        let slot = &self.slots[s];
        if !slot.op.writes() && slot.received != self.io_size {
            return Err(format!(
                "GOOD after {} of {} bytes of Data-In",
                slot.received, self.io_size
            ));
        }
        Ok(())
    }

    /// A whole PDU other than a Data-In with data.
    fn handle(
        &mut self,
        bhs: &Bhs,
        data: std::ops::Range<usize>,
        window: &mut Window,
        waiting: &mut VecDeque<(u8, u16)>,
    ) -> Result<(), String> {
        let op = pdu::opcode_of(bhs);
        if op == opcode::SCSI_DATA_IN {
            // No data: only a status (or nothing) to take.
            let s = self.slot_of(pdu::itt(bhs))?;
            let sn = pdu::data_sn(bhs);
            let slot = &mut self.slots[s];
            if sn != slot.data_sn {
                return Err(format!("Data-In DataSN {sn}, expected {}", slot.data_sn));
            }
            slot.data_sn += 1;
            return self.data_in_done(bhs, window, waiting);
        }
        if pdu::carries_window(bhs) {
            window.update(pdu::exp_cmd_sn(bhs), pdu::max_cmd_sn(bhs));
        }
        if pdu::carries_status(bhs) {
            self.take_stat_sn(bhs);
        }
        match op {
            opcode::SCSI_RESPONSE => {
                let s = self.slot_of(pdu::itt(bhs))?;
                let result = if bhs[2] != 0 {
                    Err(format!(
                        "the target failed the command (iSCSI response {:#04x})",
                        bhs[2]
                    ))
                } else {
                    let sense = &self.rx[data];
                    self.status_result(s, bhs[3], bhs[1], pdu::residual(bhs), sense)
                };
                self.complete(s, result, window, waiting);
            }
            opcode::R2T => {
                let itt = pdu::itt(bhs);
                let s = self.slot_of(itt)?;
                if !self.slots[s].op.writes() {
                    return Err(format!("R2T for a read (ITT {itt:#010x})"));
                }
                let (offset, len) = (
                    pdu::buffer_offset(bhs) as usize,
                    pdu::desired_length(bhs) as usize,
                );
                if len == 0 || offset + len > self.io_size {
                    return Err(format!(
                        "R2T for {len} bytes at offset {offset} of a {}-byte write",
                        self.io_size
                    ));
                }
                self.r2ts.push_back(R2tWork {
                    slot: s as u16,
                    itt,
                    ttt: pdu::ttt(bhs),
                    offset,
                    len,
                    sent: 0,
                    data_sn: 0,
                });
            }
            opcode::NOP_IN => {
                let ttt = pdu::ttt(bhs);
                if ttt != RESERVED_TAG {
                    // The target's ping: answer at once, echoing its data.
                    let mut lun = [0u8; 8];
                    lun.copy_from_slice(&bhs[8..16]);
                    let nop = pdu::NopOut {
                        lun,
                        itt: RESERVED_TAG,
                        ttt,
                        cmd_sn: window.cmd_sn,
                        exp_stat_sn: self.exp_stat_sn,
                        len: data.len() as u32,
                    };
                    let (hd, dd) = (self.limits.header_digest, self.limits.data_digest);
                    let _ = self.tx_room(0);
                    push_pdu(&mut self.tx, hd, dd, &nop.encode(), &self.rx[data]);
                    self.pings += 1;
                }
            }
            opcode::REJECT => {
                let rejected = self.rx.get(data.start).map(|b| b & 0x3f);
                return Err(format!(
                    "the target rejected a PDU (reason {:#04x}{})",
                    bhs[2],
                    rejected
                        .map(|o| format!(", opcode {o:#04x}"))
                        .unwrap_or_default()
                ));
            }
            opcode::ASYNC_MESSAGE => match bhs[36] {
                // A SCSI event, a renegotiation request, vendor-specific: ignored.
                0 | 4 | 255 => {}
                1 => self.end_early("the target asked for a logout", waiting),
                2 => self.fail_conn(
                    "the target announced it drops the connection".into(),
                    waiting,
                ),
                3 => self.fail_conn(
                    "the target announced it drops the session's connections".into(),
                    waiting,
                ),
                e => return Err(format!("asynchronous event {e}")),
            },
            other => return Err(format!("unexpected PDU, opcode {other:#04x}")),
        }
        Ok(())
    }

    // ---- sending ----

    /// Queues the Data-Out owed for R2Ts, as far as the send buffer takes it.
    fn pump_r2ts(&mut self) {
        let (hd, dd) = (self.limits.header_digest, self.limits.data_digest);
        while let Some(w) = self.r2ts.front().copied() {
            let n = self.max_send.min(w.len - w.sent);
            if !self.tx_room(pdu_bytes(hd, dd, n)) {
                return;
            }
            let slot = &self.slots[w.slot as usize];
            if slot.itt != w.itt || slot.state != SlotState::InFlight {
                self.r2ts.pop_front();
                continue;
            }
            let off = w.offset + w.sent;
            let out = pdu::DataOut {
                final_: w.sent + n == w.len,
                lun: self.lun,
                itt: w.itt,
                ttt: w.ttt,
                exp_stat_sn: self.exp_stat_sn,
                data_sn: w.data_sn,
                offset: off as u32,
                len: n as u32,
            };
            push_pdu(&mut self.tx, hd, dd, &out.encode(), &slot.buf[off..off + n]);
            let front = self.r2ts.front_mut().expect("front");
            front.sent += n;
            front.data_sn += 1;
            if front.sent == front.len {
                self.r2ts.pop_front();
            }
        }
    }

    /// Writes what is queued. Returns whether it wrote anything.
    fn flush(&mut self, waiting: &mut VecDeque<(u8, u16)>) -> bool {
        if self.dead.is_some() {
            return false;
        }
        let mut did = false;
        while self.tx_head < self.tx.len() {
            match self.stream.write(&self.tx[self.tx_head..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx_head += n;
                    did = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail_conn(format!("send failed: {e}"), waiting);
                    return true;
                }
            }
        }
        let blocked = self.tx_head < self.tx.len();
        if blocked != self.want_write && self.registered {
            self.want_write = blocked;
            let interest = if blocked {
                Interest::Both
            } else {
                Interest::Readable
            };
            let _ = reactor::modify_interrupt(self.stream.as_raw_fd(), interest);
        }
        if !blocked {
            self.tx.clear();
            self.tx_head = 0;
        }
        did
    }

    /// Makes the socket wake a sleeping reactor (when on one).
    fn register(&mut self) {
        if self.dead.is_none()
            && reactor::on_reactor()
            && reactor::register_interrupt_for(self.stream.as_raw_fd(), Interest::Readable).is_ok()
        {
            self.registered = true;
        }
    }

    fn unregister(&mut self) {
        if self.registered {
            let _ = reactor::unregister_interrupt(self.stream.as_raw_fd());
            self.registered = false;
        }
    }
}

/// A session in the full feature phase: its connections and CmdSN window.
pub struct IoSession {
    pub window: Window,
    pub conns: Vec<IoConn>,
    /// Slots (connection index, slot) waiting for the window or for room.
    waiting: VecDeque<(u8, u16)>,
    pub tsih: u16,
    /// Which URL and session number (for messages).
    pub url_index: usize,
    pub number: usize,
}

impl IoSession {
    pub fn new(
        window: Window,
        conns: Vec<IoConn>,
        tsih: u16,
        url_index: usize,
        number: usize,
    ) -> IoSession {
        let slots: usize = conns.iter().map(|c| c.slots.len()).sum();
        IoSession {
            window,
            conns,
            waiting: VecDeque::with_capacity(slots),
            tsih,
            url_index,
            number,
        }
    }

    /// Settles on the calling reactor: notes it and registers the sockets. (A
    /// session may also be polled by hand from a thread that is not a reactor.)
    pub fn install(&mut self) {
        let index = reactor::current_index().unwrap_or(0);
        let core = if reactor::on_reactor() {
            reactor::handle().core_of(index).unwrap_or(0)
        } else {
            0
        };
        for c in &mut self.conns {
            c.reactor = index;
            c.core = core;
            c.register();
        }
    }

    pub fn start(&mut self) {
        let IoSession {
            window,
            conns,
            waiting,
            ..
        } = self;
        for c in conns.iter_mut() {
            c.start(window, waiting);
        }
        self.poll();
    }

    pub fn stop(&mut self) {
        for c in &mut self.conns {
            c.stop();
        }
        while let Some((c, s)) = self.waiting.pop_front() {
            self.conns[c as usize].drop_waiting(s as usize);
        }
        for c in &mut self.conns {
            c.maybe_drained();
        }
    }

    /// Leaves the reactor: unregisters the sockets.
    pub fn uninstall(&mut self) {
        for c in &mut self.conns {
            c.unregister();
        }
    }

    /// One pass: receive on every connection, send what waits, write.
    pub fn poll(&mut self) -> bool {
        let IoSession {
            window,
            conns,
            waiting,
            ..
        } = self;
        let mut did = false;
        for c in conns.iter_mut() {
            did |= c.poll_rx(window, waiting);
        }
        while let Some(&(ci, s)) = waiting.front() {
            let c = &mut conns[ci as usize];
            let need = c.need(c.slots[s as usize].op);
            if !window.open() || !c.tx_room(need) {
                break;
            }
            waiting.pop_front();
            c.issue(s as usize, window);
            did = true;
        }
        for c in conns.iter_mut() {
            c.pump_r2ts();
            did |= c.flush(waiting);
        }
        did
    }
}
