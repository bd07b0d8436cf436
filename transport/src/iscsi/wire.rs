//! Moving PDUs over a connection's socket: framing received bytes into PDUs
//! (header, AHS, digests, data placed straight into task buffers) and a send
//! queue written with vectored writes.
//!
//! Received bytes land in a small staging buffer, so many small PDUs cost one
//! read; a large data segment is read directly into the arena buffers of the task
//! it belongs to. Sent data is never copied: a queued PDU refers to its task's
//! buffers until the socket has taken them.

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};

use ferrite_lib::scsi::TaskData;

use super::digest;
use super::pdu::{self, Bhs, BHS_LEN};
use crate::tcp::{Progress, Socket};

/// Staging buffer size: enough for many command PDUs per read.
const STAGING: usize = 16 * 1024;
/// Largest header: BHS, the biggest AHS and a header digest.
pub(crate) const MAX_HEADER: usize = BHS_LEN + pdu::MAX_AHS_LEN + 4;
/// Most iovecs in one writev.
const MAX_IOV: usize = 64;
/// Most pieces of one PDU: header, data buffers, padding, digest. Data-In PDUs
/// are capped at [`MAX_SEND_SEGMENT`], so their data spans few buffers.
const MAX_PARTS: usize = 16;
/// The largest data segment this target sends in one PDU.
pub(crate) const MAX_SEND_SEGMENT: usize = 1 << 20;

/// Whether digests are in use on this connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Digests {
    pub header: bool,
    pub data: bool,
}

/// A received header, ready to decode.
pub(crate) struct Header {
    pub bhs: Bhs,
    pub ahs: [u8; pdu::MAX_AHS_LEN],
    pub ahs_len: usize,
    pub data_len: usize,
}

impl Header {
    pub fn ahs(&self) -> &[u8] {
        &self.ahs[..self.ahs_len]
    }
}

/// Where a data segment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// The connection's scratch buffer (login, text, NOP data).
    Scratch,
    /// A task's data at this byte offset (immediate data, Data-Out).
    Task { slot: usize, offset: u32 },
    /// Nowhere: the PDU is being rejected or was for a task that is gone.
    Discard,
}

/// Where the connection keeps its tasks' data, by slot.
pub(crate) trait TaskDataSlots {
    fn task_data(&self, slot: usize) -> Option<&TaskData>;
    fn task_data_mut(&mut self, slot: usize) -> Option<&mut TaskData>;
}

/// What reading produced.
pub(crate) enum RecvEvent {
    /// A header arrived; the caller decides where its data goes (`set_dest`).
    Header,
    /// The whole PDU (header and data) arrived and its digests are good.
    Pdu,
    /// Nothing more for now.
    WouldBlock,
    /// The peer closed the connection.
    Closed,
    /// A header digest did not match: the connection must close (ERL 0).
    HeaderDigestError,
    /// A data digest did not match: reject the PDU.
    DataDigestError,
    /// The socket failed.
    Error(std::io::Error),
    /// iSER: an RDMA READ brought `len` bytes of write data to the task in
    /// `slot`.
    Fetched { slot: usize, len: u32 },
}

enum Stage {
    Header,
    /// Waiting for the caller to say where the data goes.
    NeedDest,
    Data {
        dest: Dest,
        got: usize,
    },
}

/// The receiving half of a connection.
pub(crate) struct Receiver {
    staging: Box<[u8]>,
    start: usize,
    end: usize,
    stage: Stage,
    pub header: Header,
    sink: Sink,
    pub digests: Digests,
    /// A read since [`begin`](Self::begin) got less than it asked for.
    drained: bool,
}

/// Where data bytes are written and digested.
struct Sink {
    /// Data of a PDU whose destination is `Scratch`.
    scratch: Vec<u8>,
    digest: digest::DataDigest,
    digest_bytes: [u8; 4],
}

impl Receiver {
    pub fn new() -> Receiver {
        Receiver {
            staging: vec![0u8; STAGING].into_boxed_slice(),
            start: 0,
            end: 0,
            stage: Stage::Header,
            header: Header {
                bhs: [0; BHS_LEN],
                ahs: [0; pdu::MAX_AHS_LEN],
                ahs_len: 0,
                data_len: 0,
            },
            sink: Sink {
                scratch: Vec::with_capacity(8192),
                digest: digest::DataDigest::new(),
                digest_bytes: [0; 4],
            },
            digests: Digests::default(),
            drained: false,
        }
    }

    /// Starts handling a readiness event: the socket may have data again.
    pub fn begin(&mut self) {
        self.drained = false;
    }

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The data of the PDU just framed when its destination was `Scratch`;
    /// empty when it had no data.
    pub fn scratch(&self) -> &[u8] {
        &self.sink.scratch
    }

    /// Says where the data of the header just returned goes.
    pub fn set_dest(&mut self, dest: Dest) {
        debug_assert!(matches!(self.stage, Stage::NeedDest));
        if dest == Dest::Scratch {
            self.sink.scratch.clear();
            self.sink.scratch.resize(self.header.data_len, 0);
        }
        self.sink.digest = digest::DataDigest::new();
        self.stage = Stage::Data { dest, got: 0 };
    }

    /// Reads from the socket until one event. `tasks` maps a slot to the task data
    /// that `Dest::Task` writes into.
    pub fn poll(&mut self, sock: &mut Socket, tasks: &mut dyn TaskDataSlots) -> RecvEvent {
        loop {
            match self.stage {
                Stage::NeedDest => return RecvEvent::Header,
                Stage::Header => match self.frame_header() {
                    Some(ev) => return ev,
                    None => match self.fill(sock) {
                        Ok(true) => {}
                        Ok(false) => return RecvEvent::WouldBlock,
                        Err(ev) => return ev,
                    },
                },
                Stage::Data { dest, got } => {
                    let want = self.data_wire_len();
                    if got == want {
                        return self.finish_data();
                    }
                    // Use what is staged first.
                    if self.buffered() > 0 {
                        let n = self.buffered().min(want - got);
                        let chunk = &self.staging[self.start..self.start + n];
                        self.sink
                            .place(&self.header, self.digests, dest, got, chunk, tasks);
                        self.start += n;
                        self.stage = Stage::Data { dest, got: got + n };
                        continue;
                    }
                    // Large payloads go straight into the task's buffers.
                    let data_left = self.header.data_len.saturating_sub(got);
                    if let Dest::Task { slot, offset } = dest {
                        if data_left >= STAGING / 2 {
                            match self.read_direct(
                                sock,
                                slot,
                                offset as usize + got,
                                data_left,
                                tasks,
                            ) {
                                Ok(Some(n)) => {
                                    self.stage = Stage::Data { dest, got: got + n };
                                    continue;
                                }
                                Ok(None) => return RecvEvent::WouldBlock,
                                Err(ev) => return ev,
                            }
                        }
                    }
                    match self.fill(sock) {
                        Ok(true) => {}
                        Ok(false) => return RecvEvent::WouldBlock,
                        Err(ev) => return ev,
                    }
                }
            }
        }
    }

    /// Data bytes on the wire: payload, padding and digest.
    fn data_wire_len(&self) -> usize {
        let d = self.header.data_len;
        if d == 0 {
            return 0;
        }
        pdu::padded_len(d) + if self.digests.data { 4 } else { 0 }
    }

    /// Frames a header from the staging buffer if all of it is there.
    fn frame_header(&mut self) -> Option<RecvEvent> {
        if self.buffered() < BHS_LEN {
            return None;
        }
        let s = self.start;
        let lens =
            pdu::SegmentLengths::of(self.staging[s..s + BHS_LEN].try_into().expect("48 bytes"));
        let hd = if self.digests.header { 4 } else { 0 };
        let total = BHS_LEN + lens.ahs + hd;
        if self.buffered() < total {
            return None;
        }
        self.header
            .bhs
            .copy_from_slice(&self.staging[s..s + BHS_LEN]);
        self.header.ahs_len = lens.ahs;
        self.header.ahs[..lens.ahs]
            .copy_from_slice(&self.staging[s + BHS_LEN..s + BHS_LEN + lens.ahs]);
        self.header.data_len = lens.data;
        if self.digests.header {
            let at = s + BHS_LEN + lens.ahs;
            let got: [u8; 4] = self.staging[at..at + 4].try_into().expect("4 bytes");
            if digest::check_header_digest(&self.header.bhs, self.header.ahs(), &got).is_err() {
                self.start += total;
                return Some(RecvEvent::HeaderDigestError);
            }
        }
        self.start += total;
        if lens.data == 0 {
            // No data: what `scratch` held belongs to an earlier PDU (a data-less
            // NOP-Out must not be answered with the last Text request's keys).
            self.sink.scratch.clear();
            self.stage = Stage::Data {
                dest: Dest::Discard,
                got: 0,
            };
            return Some(self.finish_data());
        }
        self.stage = Stage::NeedDest;
        Some(RecvEvent::Header)
    }

    fn finish_data(&mut self) -> RecvEvent {
        self.stage = Stage::Header;
        if self.digests.data && self.header.data_len > 0 {
            // The digest covers the padding too (it was fed to `digest` in place()).
            if self.sink.digest.check(&self.sink.digest_bytes).is_err() {
                return RecvEvent::DataDigestError;
            }
        }
        RecvEvent::Pdu
    }

    /// Reads up to `len` payload bytes directly into task data at `offset`.
    fn read_direct(
        &mut self,
        sock: &mut Socket,
        slot: usize,
        offset: usize,
        len: usize,
        tasks: &mut dyn TaskDataSlots,
    ) -> Result<Option<usize>, RecvEvent> {
        let Some(td) = tasks.task_data_mut(slot) else {
            // The task is gone: read into staging and discard instead.
            return match self.fill(sock) {
                Ok(true) => Ok(Some(0)),
                Ok(false) => Ok(None),
                Err(ev) => Err(ev),
            };
        };
        let mut iov: arrayvec::ArrayVec<IoSliceMut<'_>, 4> = arrayvec::ArrayVec::new();
        let mut want = len;
        let mut at = offset;
        for seg in td.segments_mut() {
            if want == 0 || iov.is_full() {
                break;
            }
            if at >= seg.len() {
                at -= seg.len();
                continue;
            }
            let n = (seg.len() - at).min(want);
            iov.push(IoSliceMut::new(&mut seg[at..at + n]));
            want -= n;
            at = 0;
        }
        match sock.read_vectored(&mut iov) {
            Ok(Progress::Bytes(n)) => {
                if self.digests.data {
                    let mut left = n;
                    for s in iov.iter() {
                        if left == 0 {
                            break;
                        }
                        let k = s.len().min(left);
                        self.sink.digest.update(&s[..k]);
                        left -= k;
                    }
                }
                Ok(Some(n))
            }
            Ok(Progress::WouldBlock) => Ok(None),
            Ok(Progress::Closed) => Err(RecvEvent::Closed),
            Err(e) => Err(RecvEvent::Error(e)),
        }
    }

    /// Reads more into staging. Ok(false) when the socket has nothing now.
    fn fill(&mut self, sock: &mut Socket) -> Result<bool, RecvEvent> {
        if self.drained {
            // The last read came back short: the socket is empty now, and
            // (level-triggered) readiness will tell when it is not. Saves a
            // read that would only say EAGAIN.
            return Ok(false);
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.staging.len() - self.end < MAX_HEADER {
            self.staging.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let end = self.end;
        let room = self.staging.len() - end;
        match sock.read(&mut self.staging[end..]) {
            Ok(Progress::Bytes(n)) => {
                self.end += n;
                self.drained = n < room;
                Ok(true)
            }
            Ok(Progress::WouldBlock) => Ok(false),
            Ok(Progress::Closed) => Err(RecvEvent::Closed),
            Err(e) => Err(RecvEvent::Error(e)),
        }
    }
}

impl Sink {
    /// Puts `chunk`, the bytes at wire offset `got` of the data segment, where
    /// they belong: payload to `dest`, padding to the digest, digest aside.
    fn place(
        &mut self,
        header: &Header,
        digests: Digests,
        dest: Dest,
        got: usize,
        chunk: &[u8],
        tasks: &mut dyn TaskDataSlots,
    ) {
        let data_len = header.data_len;
        let padded = pdu::padded_len(data_len);
        let mut at = got;
        let mut rest = chunk;
        while !rest.is_empty() {
            if at < data_len {
                let n = (data_len - at).min(rest.len());
                let part = &rest[..n];
                if digests.data {
                    self.digest.update(part);
                }
                match dest {
                    Dest::Scratch => self.scratch[at..at + n].copy_from_slice(part),
                    Dest::Task { slot, offset } => {
                        if let Some(td) = tasks.task_data_mut(slot) {
                            td.copy_from_slice(offset as usize + at, part);
                        }
                    }
                    Dest::Discard => {}
                }
                at += n;
                rest = &rest[n..];
            } else if at < padded {
                let n = (padded - at).min(rest.len());
                if digests.data {
                    self.digest.update(&rest[..n]);
                }
                at += n;
                rest = &rest[n..];
            } else {
                let i = at - padded;
                let n = (4 - i).min(rest.len());
                self.digest_bytes[i..i + n].copy_from_slice(&rest[..n]);
                at += n;
                rest = &rest[n..];
            }
        }
    }
}

/// A PDU's data as queued for sending.
pub(crate) enum OutData {
    None,
    /// Owned bytes (login and text answers, NOP-In ping data, Reject headers).
    Owned(Vec<u8>),
    /// Sense data of a SCSI Response (2-byte length prefix included).
    Sense {
        buf: [u8; 100],
        len: u8,
    },
    /// `len` bytes of a task's data from `offset`.
    Task {
        slot: usize,
        offset: u32,
        len: u32,
    },
}

/// A PDU waiting to be written.
pub(crate) struct OutPdu {
    hdr: [u8; BHS_LEN + 4],
    hdr_len: u8,
    data: OutData,
    ddigest: [u8; 4],
    has_ddigest: bool,
    /// The task slot to release once this PDU is on the wire.
    pub release: Option<usize>,
    /// Close the connection once this PDU is on the wire (logout, failed login).
    pub close_after: bool,
}

/// The sending half of a connection.
pub(crate) struct Sender {
    queue: VecDeque<OutPdu>,
    /// Bytes of the front PDU already written.
    front_done: usize,
    pub digests: Digests,
}

/// What flushing did.
pub(crate) struct Flushed {
    /// Task slots whose last PDU went out.
    pub released: usize,
    /// A PDU asked to close the connection after it.
    pub close: bool,
    /// The socket is full: wait for it to become writable.
    pub blocked: bool,
}

impl Sender {
    pub fn new() -> Sender {
        Sender {
            queue: VecDeque::with_capacity(256),
            front_done: 0,
            digests: Digests::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues a PDU; `tasks` gives the task data for `OutData::Task` (to compute
    /// a data digest).
    pub fn push(
        &mut self,
        bhs: Bhs,
        data: OutData,
        release: Option<usize>,
        task_data: Option<&TaskData>,
    ) -> &mut OutPdu {
        let mut hdr = [0u8; BHS_LEN + 4];
        hdr[..BHS_LEN].copy_from_slice(&bhs);
        let mut hdr_len = BHS_LEN;
        if self.digests.header {
            let d = digest::header_digest(&bhs, &[]);
            hdr[BHS_LEN..BHS_LEN + 4].copy_from_slice(&d);
            hdr_len += 4;
        }
        let mut ddigest = [0u8; 4];
        if self.digests.data {
            let mut dd = digest::DataDigest::new();
            let pad = [0u8; 3];
            let len = match &data {
                OutData::None => 0,
                OutData::Owned(v) => {
                    dd.update(v);
                    v.len()
                }
                OutData::Sense { buf, len } => {
                    dd.update(&buf[..*len as usize]);
                    *len as usize
                }
                OutData::Task { offset, len, .. } => {
                    if let Some(td) = task_data {
                        for_each_range(td, *offset as usize, *len as usize, |c| dd.update(c));
                    }
                    *len as usize
                }
            };
            dd.update(&pad[..pdu::pad_len(len)]);
            ddigest = dd.finish();
        }
        self.queue.push_back(OutPdu {
            hdr,
            hdr_len: hdr_len as u8,
            data,
            ddigest,
            has_ddigest: self.digests.data,
            release,
            close_after: false,
        });
        self.queue.back_mut().expect("just pushed")
    }

    /// Writes as much as the socket takes. `task_data` maps a slot to its data;
    /// `on_release` is called for each slot whose last PDU went out.
    pub fn flush(
        &mut self,
        sock: &mut Socket,
        tasks: &dyn TaskDataSlots,
        on_release: &mut dyn FnMut(usize),
    ) -> std::io::Result<Flushed> {
        let mut out = Flushed {
            released: 0,
            close: false,
            blocked: false,
        };
        let pad = [0u8; 3];
        while !self.queue.is_empty() {
            // Build the iovecs of as many queued PDUs as fit.
            let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            let mut skip = self.front_done;
            'pdus: for p in self.queue.iter() {
                let data_len = match &p.data {
                    OutData::None => 0,
                    OutData::Owned(v) => v.len(),
                    OutData::Sense { len, .. } => *len as usize,
                    OutData::Task { len, .. } => *len as usize,
                };
                let mut parts: arrayvec::ArrayVec<&[u8], MAX_PARTS> = arrayvec::ArrayVec::new();
                parts.push(&p.hdr[..p.hdr_len as usize]);
                match &p.data {
                    OutData::None => {}
                    OutData::Owned(v) => parts.push(v),
                    OutData::Sense { buf, len } => parts.push(&buf[..*len as usize]),
                    OutData::Task { slot, offset, len } => {
                        if let Some(td) = tasks.task_data(*slot) {
                            let mut at = *offset as usize;
                            let mut want = *len as usize;
                            for seg in td.segments() {
                                if want == 0 || parts.is_full() {
                                    break;
                                }
                                if at >= seg.len() {
                                    at -= seg.len();
                                    continue;
                                }
                                let k = (seg.len() - at).min(want);
                                parts.push(&seg[at..at + k]);
                                want -= k;
                                at = 0;
                            }
                        }
                    }
                }
                if data_len > 0 {
                    let pl = pdu::pad_len(data_len);
                    if pl > 0 {
                        parts.push(&pad[..pl]);
                    }
                    // Whether a digest follows was fixed when the PDU was
                    // queued (the final Login Response goes out without one
                    // though digests are on by the time it is written).
                    if p.has_ddigest {
                        parts.push(&p.ddigest);
                    }
                }
                for part in parts {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    if n == MAX_IOV {
                        break 'pdus;
                    }
                    iov[n] = IoSlice::new(&part[skip..]);
                    skip = 0;
                    n += 1;
                }
            }
            let written = match sock.write_vectored(&iov[..n])? {
                Progress::Bytes(w) => w,
                _ => {
                    out.blocked = true;
                    return Ok(out);
                }
            };
            // Retire what was written.
            let mut left = written + self.front_done;
            self.front_done = 0;
            while let Some(p) = self.queue.front() {
                let len = p.wire_len();
                if left < len {
                    self.front_done = left;
                    break;
                }
                left -= len;
                let p = self.queue.pop_front().expect("front exists");
                if let Some(slot) = p.release {
                    on_release(slot);
                    out.released += 1;
                }
                if p.close_after {
                    out.close = true;
                    self.queue.clear();
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Closes the connection once the last queued PDU is written.
    pub fn mark_close(&mut self) {
        if let Some(p) = self.queue.back_mut() {
            p.close_after = true;
        }
    }

    /// Drops everything queued (the connection is closing).
    pub fn clear(&mut self, on_release: &mut dyn FnMut(usize)) {
        for p in self.queue.drain(..) {
            if let Some(slot) = p.release {
                on_release(slot);
            }
        }
        self.front_done = 0;
    }
}

impl OutPdu {
    fn wire_len(&self) -> usize {
        let d = match &self.data {
            OutData::None => 0,
            OutData::Owned(v) => v.len(),
            OutData::Sense { len, .. } => *len as usize,
            OutData::Task { len, .. } => *len as usize,
        };
        let mut n = self.hdr_len as usize;
        if d > 0 {
            n += pdu::padded_len(d);
            if self.has_ddigest {
                n += 4;
            }
        }
        n
    }
}

fn for_each_range(td: &TaskData, mut at: usize, mut len: usize, mut f: impl FnMut(&[u8])) {
    for seg in td.segments() {
        if len == 0 {
            break;
        }
        if at >= seg.len() {
            at -= seg.len();
            continue;
        }
        let k = (seg.len() - at).min(len);
        f(&seg[at..at + k]);
        len -= k;
        at = 0;
    }
}
