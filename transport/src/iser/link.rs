//! An iSER connection's link (RFC 7145 §7): the iSCSI logic's PDUs travel in
//! RDMA SENDs behind an iSER header, read data goes out by RDMA WRITE to the
//! initiator's read buffer chained before the SEND of the SCSI Response, and
//! write data beyond the immediate data comes in by RDMA READ from its write
//! buffer, at most the negotiated number of READs at once on the QP.
//!
//! The link posts through [`Verbs`], which the RDMA layer's connection
//! implements (and a recorder in the tests). It is told about completions by
//! whoever owns the connection ([`IserLink::recv`], [`IserLink::completed`])
//! and hands them to the iSCSI logic the way the TCP framing does: a header
//! ([`RecvEvent::Header`]), then, once told where the data goes, the PDU
//! ([`RecvEvent::Pdu`]); finished RDMA READs as [`RecvEvent::Fetched`].
//!
//! Immediate data is copied from the receive buffer into the task's buffers
//! (at most TargetRecvDataSegmentLength, 8 KiB by default); everything else
//! moves by RDMA without a copy.

// The RDMA connection driver that makes and feeds this link is not in yet;
// until then only the tests use parts of it.
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::VecDeque;
use std::io;

use arrayvec::ArrayVec;
use ferrite_lib::scsi::TaskData;
use ferrite_reactor::mem::Buffer;
use slab::Slab;

use super::header::{
    parse_message, IserHeader, IserMessage, RemoteBuffer, HELLO_LEN, ISER_HEADER_LEN,
};
use crate::iscsi::pdu::{self, Bhs, BHS_LEN};
use crate::iscsi::wire::{Dest, Flushed, Header, OutData, RecvEvent, TaskDataSlots};

/// Most scatter entries of one work request the link builds (the QP may
/// take fewer: see [`IserLink::new`]).
pub(crate) const MAX_SGES: usize = 16;
/// Most work requests in one post (the RDMA layer's limit); longer WRITE
/// chains go in several posts, which the QP carries out in order.
pub(crate) const MAX_CHAIN: usize = 16;
/// The tag of unsignalled RDMA WRITEs: reported only if one fails.
pub(crate) const WRITE_TAG: u32 = u32::MAX - 1;
/// The largest RDMA READ the link posts (a write's data comes in such pieces).
pub(crate) const MAX_READ: u32 = 1 << 20;

/// Part of a registered buffer.
#[derive(Clone, Copy)]
pub(crate) struct Segment<'a> {
    pub buf: &'a Buffer,
    pub offset: usize,
    pub len: usize,
}

/// One work request, as the link asks for it.
pub(crate) enum Work<'a> {
    /// RDMA WRITE of `from` to the peer's `to`; unsignalled (the SEND after
    /// it in the same chain completes for it).
    Write {
        to: RemoteBuffer,
        from: ArrayVec<Segment<'a>, MAX_SGES>,
    },
    /// SEND of `msg`, signalled, optionally invalidating the peer's STag.
    Send {
        tag: u32,
        msg: Segment<'a>,
        invalidate: Option<u32>,
    },
    /// RDMA READ of the peer's `from` into `into`, signalled.
    Read {
        tag: u32,
        from: RemoteBuffer,
        into: ArrayVec<Segment<'a>, MAX_SGES>,
    },
}

/// What the link needs of an RDMA connection.
pub(crate) trait Verbs {
    /// Posts the work requests as one chain, in order.
    fn post(&self, chain: &[Work<'_>]) -> io::Result<()>;
    /// Ends the connection (flushing what is posted).
    fn disconnect(&self);
}

/// A finished work request, as the owner of the connection reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    Ok,
    /// Failed or flushed: the connection is going down.
    Failed,
}

/// Something to post.
enum OutItem {
    Pdu {
        bhs: Bhs,
        data: OutData,
        release: Option<usize>,
        close_after: bool,
        /// A read command's data, written before the PDU.
        write: Option<DataWrite>,
        invalidate: Option<u32>,
    },
    Hello([u8; HELLO_LEN]),
    Read {
        slot: usize,
        offset: u32,
        len: u32,
        from: RemoteBuffer,
    },
}

/// Task data to RDMA WRITE to the initiator.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DataWrite {
    pub slot: usize,
    pub len: u32,
    pub to: RemoteBuffer,
}

/// A posted work request, by tag.
enum InFlight {
    Send {
        _msg: Buffer,
        release: Option<usize>,
        close_after: bool,
        /// Send-queue entries its completion retires (the WRITEs before it).
        wrs: u32,
    },
    Read {
        slot: usize,
        offset: u32,
        len: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Nothing being handled.
    Idle,
    /// A header was returned; waiting for `set_dest`.
    NeedDest,
    /// Destination known; the next poll places the data.
    Place(Dest),
}

/// The iSER side of a connection.
pub(crate) struct IserLink {
    verbs: Box<dyn Verbs>,
    /// RDMA READs this QP may have outstanding (the CM's initiator depth).
    max_reads: u8,
    reads_out: u8,
    /// Send-queue entries the link may use, and in use.
    max_wrs: u32,
    wrs_out: u32,
    /// Scatter entries per work request the QP takes.
    max_sges: usize,
    send_with_invalidate: bool,
    incoming: VecDeque<Buffer>,
    current: Option<Buffer>,
    stage: Stage,
    header: Header,
    iser: IserHeader,
    scratch: Vec<u8>,
    /// Finished RDMA READs: slot and bytes.
    fetched: VecDeque<(usize, u32)>,
    queue: VecDeque<OutItem>,
    /// Posted reads are taken from the queue in order, but may wait behind
    /// the READ limit while later PDUs go: they wait here.
    reads_waiting: VecDeque<OutItem>,
    in_flight: Slab<InFlight>,
    /// Slots whose last SEND completed, reported by the next flush.
    released: Vec<usize>,
    close: bool,
    failed: bool,
}

impl IserLink {
    /// `max_reads`: RDMA READs the QP may have outstanding; `max_wrs`:
    /// send-queue entries the link may use; `max_sges`: scatter entries per
    /// work request the QP takes.
    pub fn new(
        verbs: Box<dyn Verbs>,
        max_reads: u8,
        max_wrs: u32,
        max_sges: usize,
        send_with_invalidate: bool,
    ) -> IserLink {
        IserLink {
            verbs,
            max_reads: max_reads.max(1),
            reads_out: 0,
            max_wrs: max_wrs.max(2),
            wrs_out: 0,
            max_sges: max_sges.clamp(1, MAX_SGES),
            send_with_invalidate,
            incoming: VecDeque::with_capacity(64),
            current: None,
            stage: Stage::Idle,
            header: Header {
                bhs: [0; BHS_LEN],
                ahs: [0; pdu::MAX_AHS_LEN],
                ahs_len: 0,
                data_len: 0,
            },
            iser: IserHeader::default(),
            scratch: Vec::with_capacity(8192),
            fetched: VecDeque::with_capacity(64),
            queue: VecDeque::with_capacity(256),
            reads_waiting: VecDeque::with_capacity(64),
            in_flight: Slab::with_capacity(256),
            released: Vec::with_capacity(64),
            close: false,
            failed: false,
        }
    }

    // ---- what the connection's owner reports ----

    /// A message arrived (a RECV completion).
    pub fn recv(&mut self, msg: Buffer) {
        self.incoming.push_back(msg);
    }

    /// A signalled work request finished.
    pub fn completed(&mut self, tag: u32, result: Completion) {
        if result == Completion::Failed {
            self.failed = true;
        }
        if tag == WRITE_TAG {
            return;
        }
        let Some(done) = self.in_flight.try_remove(tag as usize) else {
            return;
        };
        match done {
            InFlight::Send {
                release,
                close_after,
                wrs,
                ..
            } => {
                self.wrs_out = self.wrs_out.saturating_sub(wrs);
                if let Some(slot) = release {
                    self.released.push(slot);
                }
                self.close |= close_after;
            }
            InFlight::Read { slot, offset, len } => {
                self.wrs_out = self.wrs_out.saturating_sub(1);
                self.reads_out = self.reads_out.saturating_sub(1);
                let _ = offset;
                if result == Completion::Ok {
                    self.fetched.push_back((slot, len));
                }
            }
        }
    }

    // ---- receiving (the iSCSI logic's side) ----

    pub fn begin(&mut self) {}

    /// The iSER header of the PDU being handled.
    pub fn iser_header(&self) -> IserHeader {
        self.iser
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn scratch(&self) -> &[u8] {
        &self.scratch
    }

    /// Messages received and not handled yet.
    pub fn buffered(&self) -> usize {
        self.incoming.len() + self.fetched.len()
    }

    pub fn set_dest(&mut self, dest: Dest) {
        debug_assert_eq!(self.stage, Stage::NeedDest);
        self.stage = Stage::Place(dest);
    }

    pub fn poll(&mut self, tasks: &mut dyn TaskDataSlots) -> RecvEvent {
        if self.failed {
            return RecvEvent::Error(io::Error::other("an RDMA work request failed"));
        }
        match self.stage {
            Stage::NeedDest => return RecvEvent::Header,
            Stage::Place(dest) => {
                self.stage = Stage::Idle;
                self.place(dest, tasks);
                return RecvEvent::Pdu;
            }
            Stage::Idle => {}
        }
        // Done with the last message: its buffer goes back to the pool.
        self.current = None;
        if let Some((slot, len)) = self.fetched.pop_front() {
            return RecvEvent::Fetched { slot, len };
        }
        loop {
            let Some(msg) = self.incoming.pop_front() else {
                return RecvEvent::WouldBlock;
            };
            match parse_message(&msg) {
                Err(e) => {
                    return RecvEvent::Error(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                Ok(IserMessage::Hello(hello)) => {
                    let reply = hello.answer(u16::from(self.max_reads));
                    self.queue.push_back(OutItem::Hello(reply.encode()));
                }
                Ok(IserMessage::HelloReply(_)) => {
                    return RecvEvent::Error(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "iSER HelloReply sent to a target",
                    ));
                }
                Ok(IserMessage::Pdu {
                    header,
                    bhs,
                    ahs,
                    data,
                }) => {
                    self.iser = header;
                    self.header.bhs = *bhs;
                    self.header.ahs_len = ahs.len();
                    self.header.ahs[..ahs.len()].copy_from_slice(ahs);
                    self.header.data_len = data.len();
                    self.current = Some(msg);
                    if self.header.data_len == 0 {
                        // Nothing of an earlier PDU may pass for this one's
                        // data (a data-less NOP-Out gets a data-less NOP-In).
                        self.scratch.clear();
                        return RecvEvent::Pdu;
                    }
                    self.stage = Stage::NeedDest;
                    return RecvEvent::Header;
                }
            }
        }
    }

    /// Puts the current PDU's data where the iSCSI logic said.
    fn place(&mut self, dest: Dest, tasks: &mut dyn TaskDataSlots) {
        let Some(msg) = &self.current else {
            return;
        };
        let at = ISER_HEADER_LEN + BHS_LEN + self.header.ahs_len;
        let data = &msg[at..at + self.header.data_len];
        match dest {
            Dest::Scratch => {
                self.scratch.clear();
                self.scratch.extend_from_slice(data);
            }
            Dest::Task { slot, offset } => {
                if let Some(td) = tasks.task_data_mut(slot) {
                    td.copy_from_slice(offset as usize, data);
                }
            }
            Dest::Discard => {}
        }
    }

    // ---- sending ----

    /// Queues a PDU.
    pub fn push(&mut self, bhs: Bhs, data: OutData, release: Option<usize>) {
        self.queue.push_back(OutItem::Pdu {
            bhs,
            data,
            release,
            close_after: false,
            write: None,
            invalidate: None,
        });
    }

    /// Queues a command's response, after the RDMA WRITE of its read data if
    /// any; with send-with-invalidate agreed, the SEND retires `stag`.
    pub fn push_response(
        &mut self,
        bhs: Bhs,
        data: OutData,
        slot: usize,
        write: Option<DataWrite>,
        stag: Option<u32>,
    ) {
        self.queue.push_back(OutItem::Pdu {
            bhs,
            data,
            release: Some(slot),
            close_after: false,
            write,
            invalidate: stag.filter(|_| self.send_with_invalidate),
        });
    }

    /// Queues the RDMA READs of write data `offset..offset + len` of the task
    /// in `slot` from the initiator's buffer `from` (which holds `offset`
    /// at its base address), in pieces of at most [`MAX_READ`].
    pub fn fetch(&mut self, slot: usize, offset: u32, len: u32, from: RemoteBuffer) {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(MAX_READ);
            let Some(va) = from.at(done) else {
                self.failed = true;
                return;
            };
            self.queue.push_back(OutItem::Read {
                slot,
                offset: offset + done,
                len: n,
                from: RemoteBuffer {
                    stag: from.stag,
                    va,
                },
            });
            done += n;
        }
    }

    pub fn mark_close(&mut self) {
        if let Some(OutItem::Pdu { close_after, .. }) = self.queue.back_mut() {
            *close_after = true;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.reads_waiting.is_empty() && self.in_flight.is_empty()
    }

    /// Posts what is queued as far as the send queue and the READ limit allow;
    /// reports the slots whose last SEND completed.
    pub fn flush(
        &mut self,
        tasks: &dyn TaskDataSlots,
        on_release: &mut dyn FnMut(usize),
    ) -> io::Result<Flushed> {
        let mut out = Flushed {
            released: 0,
            close: false,
            blocked: false,
        };
        for slot in self.released.drain(..) {
            on_release(slot);
            out.released += 1;
        }
        if self.close {
            out.close = true;
            return Ok(out);
        }
        if self.failed {
            return Err(io::Error::other("an RDMA work request failed"));
        }
        // READs that waited for the limit go first, in order.
        self.post_waiting_reads(tasks)?;
        while let Some(item) = self.queue.pop_front() {
            let is_read = matches!(item, OutItem::Read { .. });
            if is_read && (self.reads_out >= self.max_reads || !self.reads_waiting.is_empty()) {
                self.reads_waiting.push_back(item);
                continue;
            }
            if self.wrs_out + wrs_needed(&item, tasks, self.max_sges) > self.max_wrs {
                self.queue.push_front(item);
                out.blocked = true;
                break;
            }
            self.post(item, tasks)?;
        }
        // And those queued or split meanwhile.
        self.post_waiting_reads(tasks)?;
        Ok(out)
    }

    fn post_waiting_reads(&mut self, tasks: &dyn TaskDataSlots) -> io::Result<()> {
        while self.reads_out < self.max_reads && self.wrs_out < self.max_wrs {
            let Some(item) = self.reads_waiting.pop_front() else {
                break;
            };
            self.post(item, tasks)?;
        }
        Ok(())
    }

    fn post(&mut self, item: OutItem, tasks: &dyn TaskDataSlots) -> io::Result<()> {
        let needed = wrs_needed(&item, tasks, self.max_sges);
        match item {
            OutItem::Read {
                slot,
                offset,
                len,
                from,
            } => {
                let Some(td) = tasks.task_data(slot) else {
                    return Ok(()); // the command is gone
                };
                let into = segments(td, offset as usize, len as usize, self.max_sges);
                let covered: usize = into.iter().map(|s| s.len).sum();
                if covered == 0 {
                    self.failed = true;
                    return Err(io::Error::other("write data beyond the task's buffers"));
                }
                let covered = covered as u32;
                if covered < len {
                    // More buffers than one READ's scatter list holds: the
                    // rest is the next READ.
                    let Some(va) = from.at(covered) else {
                        self.failed = true;
                        return Err(io::Error::other("write buffer address wraps"));
                    };
                    self.reads_waiting.push_front(OutItem::Read {
                        slot,
                        offset: offset + covered,
                        len: len - covered,
                        from: RemoteBuffer {
                            stag: from.stag,
                            va,
                        },
                    });
                }
                let tag = self.in_flight.insert(InFlight::Read {
                    slot,
                    offset,
                    len: covered,
                });
                let work = [Work::Read {
                    tag: tag as u32,
                    from,
                    into,
                }];
                if let Err(e) = self.verbs.post(&work) {
                    self.in_flight.remove(tag);
                    return Err(e);
                }
                self.reads_out += 1;
            }
            OutItem::Hello(bytes) => {
                let mut msg = Buffer::alloc(HELLO_LEN).ok_or_else(no_buffer)?;
                msg[..HELLO_LEN].copy_from_slice(&bytes);
                self.post_send(msg, HELLO_LEN, None, None, false, None, 1, tasks)?;
            }
            OutItem::Pdu {
                bhs,
                data,
                release,
                close_after,
                write,
                invalidate,
            } => {
                let data_len = out_data_len(&data);
                let len = ISER_HEADER_LEN + BHS_LEN + data_len;
                let mut msg = Buffer::alloc(len).ok_or_else(no_buffer)?;
                msg[..ISER_HEADER_LEN].copy_from_slice(&IserHeader::TARGET.encode());
                msg[ISER_HEADER_LEN..ISER_HEADER_LEN + BHS_LEN].copy_from_slice(&bhs);
                let body = &mut msg[ISER_HEADER_LEN + BHS_LEN..len];
                match &data {
                    OutData::None => {}
                    OutData::Owned(v) => body.copy_from_slice(v),
                    OutData::Sense { buf, len } => body.copy_from_slice(&buf[..*len as usize]),
                    OutData::Task { slot, offset, len } => {
                        if let Some(td) = tasks.task_data(*slot) {
                            td.copy_to_slice(*offset as usize, &mut body[..*len as usize]);
                        }
                    }
                }
                self.post_send(
                    msg,
                    len,
                    release,
                    write,
                    close_after,
                    invalidate,
                    needed,
                    tasks,
                )?;
            }
        }
        self.wrs_out += needed;
        Ok(())
    }

    /// Posts the RDMA WRITEs of `write` (in as many posts as the chain limit
    /// needs; the QP keeps them in order) and the SEND of `msg` last.
    #[allow(clippy::too_many_arguments)]
    fn post_send(
        &mut self,
        msg: Buffer,
        len: usize,
        release: Option<usize>,
        write: Option<DataWrite>,
        close_after: bool,
        invalidate: Option<u32>,
        wrs: u32,
        tasks: &dyn TaskDataSlots,
    ) -> io::Result<()> {
        let tag = self.in_flight.insert(InFlight::Send {
            _msg: msg,
            release,
            close_after,
            wrs,
        });
        let res = self.post_chain(tag, len, write, invalidate, tasks);
        if res.is_err() {
            self.in_flight.remove(tag);
        }
        res
    }

    fn post_chain(
        &self,
        tag: usize,
        len: usize,
        write: Option<DataWrite>,
        invalidate: Option<u32>,
        tasks: &dyn TaskDataSlots,
    ) -> io::Result<()> {
        let InFlight::Send { _msg: msg, .. } = &self.in_flight[tag] else {
            unreachable!("a send's tag");
        };
        let (td, total, to) = match write {
            Some(w) => match tasks.task_data(w.slot) {
                Some(td) => (Some(td), w.len as usize, w.to),
                None => (None, 0, w.to),
            },
            None => (None, 0, RemoteBuffer::default()),
        };
        let mut done = 0usize;
        loop {
            let mut chain: ArrayVec<Work<'_>, MAX_CHAIN> = ArrayVec::new();
            if let Some(td) = td {
                while done < total && chain.len() < MAX_CHAIN - 1 {
                    let from = segments(td, done, total - done, self.max_sges);
                    let n: usize = from.iter().map(|s| s.len).sum();
                    let va = to
                        .at(done as u32)
                        .ok_or_else(|| io::Error::other("read buffer address wraps"))?;
                    if n == 0 {
                        return Err(io::Error::other("read data beyond the task's buffers"));
                    }
                    chain.push(Work::Write {
                        to: RemoteBuffer { stag: to.stag, va },
                        from,
                    });
                    done += n;
                }
            }
            if done < total {
                self.verbs.post(&chain)?;
                continue;
            }
            chain.push(Work::Send {
                tag: tag as u32,
                msg: Segment {
                    buf: msg,
                    offset: 0,
                    len,
                },
                invalidate,
            });
            return self.verbs.post(&chain);
        }
    }

    /// Drops what is queued and ends the connection; slots of queued PDUs and
    /// of posted SENDs are released (the flushed completions find nothing).
    pub fn shutdown(&mut self, on_release: &mut dyn FnMut(usize)) {
        for item in self.queue.drain(..) {
            if let OutItem::Pdu {
                release: Some(slot),
                ..
            } = item
            {
                on_release(slot);
            }
        }
        self.reads_waiting.clear();
        for slot in self.released.drain(..) {
            on_release(slot);
        }
        for f in self.in_flight.drain() {
            if let InFlight::Send {
                release: Some(slot),
                ..
            } = f
            {
                on_release(slot);
            }
        }
        self.incoming.clear();
        self.current = None;
        self.verbs.disconnect();
    }
}

fn no_buffer() -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, "no buffer for an iSER SEND")
}

fn out_data_len(data: &OutData) -> usize {
    match data {
        OutData::None => 0,
        OutData::Owned(v) => v.len(),
        OutData::Sense { len, .. } => *len as usize,
        OutData::Task { len, .. } => *len as usize,
    }
}

/// Send-queue entries an item takes: one per WRITE piece and the SEND, one
/// per READ.
fn wrs_needed(item: &OutItem, tasks: &dyn TaskDataSlots, max_sges: usize) -> u32 {
    match item {
        OutItem::Pdu { write: Some(w), .. } => {
            // Each WRITE starts at a buffer boundary, so whole buffers count.
            let bufs = tasks.task_data(w.slot).map_or(0, |td| td.segments().len());
            1 + bufs.div_ceil(max_sges) as u32
        }
        _ => 1,
    }
}

/// Up to `max` pieces of task data covering up to `len` bytes from `offset`.
fn segments(
    td: &TaskData,
    offset: usize,
    len: usize,
    max: usize,
) -> ArrayVec<Segment<'_>, MAX_SGES> {
    let mut out = ArrayVec::new();
    let mut at = offset;
    let mut want = len;
    for buf in td.segments() {
        if want == 0 || out.is_full() || out.len() >= max {
            break;
        }
        if at >= buf.len() {
            at -= buf.len();
            continue;
        }
        let n = (buf.len() - at).min(want);
        out.push(Segment {
            buf,
            offset: at,
            len: n,
        });
        want -= n;
        at = 0;
    }
    out
}

#[cfg(test)]
mod tests;
