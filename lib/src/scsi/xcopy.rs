//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.4, 6.18): the copy
//! manager copies blocks between logical units without the data crossing the
//! fabric.
//!
//! Supported: identification descriptor CSCD descriptors (E4h) naming block
//! devices by NAA designator — any LUN of any device of this target, found in a
//! process-wide registry ([`naa_designator`] is the one function that makes the
//! designator, for VPD page 83h too) — and block-to-block segment descriptors
//! (02h). The copy goes through the bdevs in chunks of up to 1 MiB, read then
//! write, on the reactor the command arrived on. Copy status is held per I_T
//! nexus for list ID usage 00b, for RECEIVE COPY RESULTS (COPY STATUS).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Weak};

use ferrite_bdev::{Bdev, IoCallback, IoChannel, IoData, IoRequest, IoStatus};
use ferrite_reactor::Poll;
use slab::Slab;

use super::cdb::{be16, be32, be64};
use super::dev::{Lun, LunView, ScsiPort};
use super::exec::{Ctx, Done};
use super::opcode;
use super::opcodes::{Command, Handler};
use super::sense::{asc, key, Sense};
use super::task::Task;
use super::tid::PortId;
use super::tmf;

/// The commands of this module, for the dispatcher's tables.
pub(crate) const COMMANDS: &[Command] = &[
    Command {
        opcode: opcode::EXTENDED_COPY,
        service_action: Some(0x00),
        name: "EXTENDED COPY(LID1)",
        usage: &[
            0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
        flags: 0,
        handler: Handler::Later(extended_copy),
        offered: None,
    },
    Command {
        opcode: opcode::RECEIVE_COPY_RESULTS,
        service_action: Some(0x00),
        name: "RECEIVE COPY RESULTS(COPY STATUS)",
        usage: &[
            0x84, 0x00, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
        flags: 0,
        handler: Handler::Now(receive_copy_results),
        offered: None,
    },
    Command {
        opcode: opcode::RECEIVE_COPY_RESULTS,
        service_action: Some(0x03),
        name: "RECEIVE COPY RESULTS(OPERATING PARAMETERS)",
        usage: &[
            0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
        flags: 0,
        handler: Handler::Now(receive_copy_results),
        offered: None,
    },
];

/// Most CSCD (target) descriptors in one command.
pub const MAX_TARGET_DESCRIPTORS: u16 = 16;
/// Most segment descriptors in one command.
pub const MAX_SEGMENT_DESCRIPTORS: u16 = 64;
/// Most bytes of target and segment descriptors together.
pub const MAX_DESCRIPTOR_LIST_LENGTH: u32 = 4096;
/// The descriptor type codes implemented.
const IMPLEMENTED: [u8; 2] = [0x02, 0xe4];
/// Bytes moved per bdev read and write.
const CHUNK_BYTES: u64 = 1 << 20;
/// Held copy results kept per LUN.
const MAX_HELD: usize = 64;

/// Sense key COPY ABORTED.
const COPY_ABORTED: u8 = 0x0a;
const TOO_MANY_TARGET_DESCRIPTORS: u16 = 0x2606;
const UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE: u16 = 0x2607;
const TOO_MANY_SEGMENT_DESCRIPTORS: u16 = 0x2608;
const UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE: u16 = 0x2609;
const OPERATION_IN_PROGRESS: u16 = 0x0016;

/// The NAA designator (IEEE registered extended, 16 bytes) of a LUN over
/// `bdev`: the bdev's UUID with the NAA field set to 6h. VPD page 83h reports
/// it; EXTENDED COPY finds LUNs by it.
pub fn naa_designator(bdev: &Bdev) -> [u8; 16] {
    let mut d = *bdev.uuid().as_bytes();
    d[0] = 0x60 | (d[0] & 0x0f);
    d
}

static REGISTRY: Mutex<Vec<Weak<Lun>>> = Mutex::new(Vec::new());

/// Makes `lun` reachable as a copy target (called when a LUN is created).
pub(crate) fn register_lun(lun: &Arc<Lun>) {
    let mut g = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    g.retain(|w| w.strong_count() > 0);
    g.push(Arc::downgrade(lun));
}

/// The exported LUN whose NAA designator is `naa`.
pub fn find_lun(naa: &[u8]) -> Option<Arc<Lun>> {
    let g = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    g.iter()
        .filter_map(Weak::upgrade)
        .find(|l| !l.is_removed() && naa_designator(l.bdev())[..] == *naa)
}

/// The live LUNs that export `bdev` (on any target or port).
pub(crate) fn luns_of_bdev(bdev: &str) -> Vec<Arc<Lun>> {
    let g = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    g.iter()
        .filter_map(Weak::upgrade)
        .filter(|l| !l.is_removed() && l.bdev().name() == bdev)
        .collect()
}

/// Copy results held per I_T nexus.
#[derive(Debug, Default)]
pub(crate) struct CopyResults {
    held: VecDeque<Held>,
}

#[derive(Debug, Clone)]
struct Held {
    port: PortId,
    rtp: u16,
    list_id: u8,
    /// Held for RECEIVE COPY RESULTS (list ID usage 00b).
    hold: bool,
    /// COPY MANAGER STATUS: 00h done, 01h done with errors, 10h in progress.
    status: u8,
    segments: u16,
    bytes: u64,
}

impl CopyResults {
    fn find(&self, port: &PortId, rtp: u16, list_id: u8) -> Option<usize> {
        self.held
            .iter()
            .position(|h| &h.port == port && h.rtp == rtp && h.list_id == list_id)
    }

    /// Forgets what nexus (`port`, `rtp`) held (I_T nexus loss).
    pub(crate) fn forget(&mut self, port: &PortId, rtp: u16) {
        self.held.retain(|h| !(&h.port == port && h.rtp == rtp));
    }
}

/// One segment: `blocks` blocks from target `src` at `src_lba` to target `dst`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    src: usize,
    dst: usize,
    src_lba: u64,
    dst_lba: u64,
    blocks: u64,
}

struct Plan {
    targets: Vec<Arc<Lun>>,
    segments: Vec<Segment>,
    /// List ID and whether its results are held; `None` for usage 11b.
    list: Option<(u8, bool)>,
}

fn ill(code: u16) -> Sense {
    Sense::new(key::ILLEGAL_REQUEST, code)
}

fn bad_param(byte: usize) -> Sense {
    ill(asc::INVALID_FIELD_IN_PARAMETER_LIST).with_field_pointer(false, byte as u16, None)
}

fn aborted(code: u16) -> Sense {
    Sense::new(COPY_ABORTED, code)
}

/// Parses and checks the parameter list; `Ok(None)` when there is nothing to do.
fn parse(task: &Task) -> Result<Option<Plan>, Sense> {
    if task.cdb[1] & 0x1f != 0 {
        // Only LID1 (service action 00h).
        return Err(ill(asc::INVALID_FIELD_IN_CDB).with_field_pointer(true, 1, Some(4)));
    }
    let param_len = be32(&task.cdb[10..]) as usize;
    if param_len == 0 {
        return Ok(None);
    }
    if param_len < 16 || task.data.len() < param_len {
        return Err(ill(asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    let mut p = vec![0u8; param_len];
    task.data.copy_to_slice(0, &mut p);
    let list_id = p[0];
    let usage = (p[1] >> 3) & 0x03;
    let tdl = be16(&p[2..]) as usize;
    let sdl = be32(&p[8..]) as usize;
    let inline = be32(&p[12..]) as usize;
    if 16 + tdl + sdl + inline > param_len {
        return Err(ill(asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    if tdl + sdl > MAX_DESCRIPTOR_LIST_LENGTH as usize {
        return Err(ill(asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    if inline != 0 {
        return Err(bad_param(12));
    }
    match usage {
        0b01 => return Err(bad_param(1)),
        0b11 if list_id != 0 => return Err(bad_param(0)),
        _ => {}
    }
    if !tdl.is_multiple_of(32) {
        return Err(bad_param(2));
    }
    if tdl / 32 > MAX_TARGET_DESCRIPTORS as usize {
        return Err(ill(TOO_MANY_TARGET_DESCRIPTORS));
    }
    // CSCD descriptors: the ones not found stay `None` until a segment uses them.
    let mut targets: Vec<Option<Arc<Lun>>> = Vec::new();
    for at in (16..16 + tdl).step_by(32) {
        let d = &p[at..at + 32];
        if d[0] != 0xe4 {
            return Err(ill(UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE));
        }
        if d[1] & 0x1f != 0 {
            // Only block devices.
            return Err(ill(UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE));
        }
        // The LU ID TYPE and NUL fields are ignored (SPC-4).
        let code_set = d[4] & 0x0f;
        let assoc = (d[5] >> 4) & 0x03;
        let dtype = d[5] & 0x0f;
        let dlen = d[7] as usize;
        if dlen > 20 {
            return Err(bad_param(at + 7));
        }
        let lun = if code_set == 1 && assoc == 0 && dtype == 3 {
            find_lun(&d[8..8 + dlen])
        } else {
            None
        };
        if let Some(l) = &lun {
            let bs = u32::from_be_bytes([0, d[29], d[30], d[31]]);
            if bs != l.bdev().block_size() {
                return Err(bad_param(at + 29));
            }
        }
        targets.push(lun);
    }
    // Segment descriptors.
    let mut segments = Vec::new();
    let end = 16 + tdl + sdl;
    let mut at = 16 + tdl;
    while at < end {
        if at + 4 > end {
            return Err(ill(asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        let d = &p[at..end];
        let dlen = be16(&d[2..]) as usize;
        if d[0] != 0x02 {
            return Err(ill(UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE));
        }
        if dlen != 0x18 {
            return Err(bad_param(at + 2));
        }
        if 4 + dlen > d.len() {
            return Err(ill(asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        segments.push((
            at,
            Segment {
                src: be16(&d[4..]) as usize,
                dst: be16(&d[6..]) as usize,
                blocks: be16(&d[10..]) as u64,
                src_lba: be64(&d[12..]),
                dst_lba: be64(&d[20..]),
            },
        ));
        if segments.len() > MAX_SEGMENT_DESCRIPTORS as usize {
            return Err(ill(TOO_MANY_SEGMENT_DESCRIPTORS));
        }
        at += 4 + dlen;
    }
    // Every segment's targets must be there and hold its blocks.
    let mut used: Vec<Arc<Lun>> = Vec::new();
    let index_of = |i: usize, used: &mut Vec<Arc<Lun>>| -> Result<usize, Sense> {
        let Some(Some(l)) = targets.get(i) else {
            return Err(aborted(asc::COPY_TARGET_DEVICE_NOT_REACHABLE));
        };
        Ok(match used.iter().position(|u| Arc::ptr_eq(u, l)) {
            Some(k) => k,
            None => {
                used.push(l.clone());
                used.len() - 1
            }
        })
    };
    let mut segs = Vec::with_capacity(segments.len());
    for (at, s) in segments {
        let src = index_of(s.src, &mut used)?;
        let dst = index_of(s.dst, &mut used)?;
        let (a, b) = (used[src].bdev(), used[dst].bdev());
        if a.block_size() != b.block_size() {
            return Err(bad_param(at + 4));
        }
        let fits = |lba: u64, n: u64, cap: u64| lba.checked_add(n).is_some_and(|e| e <= cap);
        if !fits(s.src_lba, s.blocks, a.num_blocks()) || !fits(s.dst_lba, s.blocks, b.num_blocks())
        {
            return Err(aborted(asc::NO_ADDITIONAL_SENSE));
        }
        segs.push(Segment { src, dst, ..s });
    }
    Ok(Some(Plan {
        targets: used,
        segments: segs,
        list: if usage == 0b11 {
            None
        } else {
            Some((list_id, usage == 0b00))
        },
    }))
}

/// A copy under way.
struct Copy {
    task: Task,
    done_to: Done,
    view: Rc<LunView>,
    targets: Vec<IoChannel>,
    segments: Vec<Segment>,
    seg: usize,
    /// Blocks of the current segment already copied.
    done: u64,
    /// Blocks in the chunk in flight.
    chunk: u64,
    bytes: u64,
    list: Option<(u8, bool)>,
}

thread_local! {
    static COPIES: RefCell<Slab<Copy>> = const { RefCell::new(Slab::new()) };
    static WAITING: RefCell<VecDeque<usize>> = const { RefCell::new(VecDeque::new()) };
    static RETRY_POLLER: Cell<bool> = const { Cell::new(false) };
    static IO_DONE: Rc<dyn IoCallback> = Rc::new(XcopyIo);
}

/// EXTENDED COPY (LID1). Finishes the task itself once the copy is done.
pub(crate) fn extended_copy(ctx: &mut Ctx<'_>, mut task: Task, done: Done) {
    let view = ctx.view.clone();
    let plan = match parse(&task) {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            task.good();
            return done.finish(task);
        }
        Err(s) => {
            task.check(s);
            return done.finish(task);
        }
    };
    // Copy targets written to must not be write protected.
    if plan.segments.iter().any(|s| plan.targets[s.dst].mode.swp()) {
        task.write_protected();
        return done.finish(task);
    }
    // A list ID in use by this nexus is an error; record this one.
    if let Some((id, hold)) = plan.list {
        let nx = &view.nx;
        let mut g = view.lun.state.lock();
        let held = &mut g.copies.held;
        if let Some(i) = held
            .iter()
            .position(|h| h.port == nx.port && h.rtp == nx.rtp() && h.list_id == id)
        {
            if held[i].status == 0x10 {
                drop(g);
                task.check(ill(OPERATION_IN_PROGRESS));
                return done.finish(task);
            }
            held.remove(i);
        }
        if held.len() >= MAX_HELD {
            held.pop_front();
        }
        held.push_back(Held {
            port: nx.port.clone(),
            rtp: nx.rtp(),
            list_id: id,
            hold,
            status: 0x10,
            segments: 0,
            bytes: 0,
        });
    }
    task.data.clear();
    let targets = plan.targets.iter().map(|l| l.desc.channel()).collect();
    let key = COPIES.with(|c| {
        c.borrow_mut().insert(Copy {
            task,
            done_to: done,
            view,
            targets,
            segments: plan.segments,
            seg: 0,
            done: 0,
            chunk: 0,
            bytes: 0,
            list: plan.list,
        })
    });
    step(key);
}

/// Starts the next chunk of copy `key`, or ends it.
fn step(key: usize) {
    enum Next {
        Done(Option<Sense>),
        Read(IoChannel, IoRequest),
        NoBuffers,
    }
    let next = COPIES.with(|c| {
        let mut c = c.borrow_mut();
        let cp = &mut c[key];
        if tmf::is_aborted(&cp.task) {
            return Next::Done(Some(aborted(asc::NO_ADDITIONAL_SENSE)));
        }
        while cp.seg < cp.segments.len() && cp.done == cp.segments[cp.seg].blocks {
            cp.seg += 1;
            cp.done = 0;
        }
        let Some(s) = cp.segments.get(cp.seg).copied() else {
            return Next::Done(None);
        };
        let ch = &cp.targets[s.src];
        let bs = ch.bdev().block_size() as u64;
        let n = (s.blocks - cp.done).min((CHUNK_BYTES / bs).max(1));
        let Some(data) = IoData::alloc((n * bs) as usize) else {
            return Next::NoBuffers;
        };
        cp.chunk = n;
        Next::Read(ch.clone(), IoRequest::read(s.src_lba + cp.done, n, data))
    });
    match next {
        Next::Done(err) => end(key, err),
        Next::NoBuffers => wait_for_buffers(key),
        Next::Read(ch, req) => {
            let cb = IO_DONE.with(Rc::clone);
            if let Err((e, req)) = ch.submit(req, &cb, (key as u64) << 1) {
                io_done(key, false, Err(e), req);
            }
        }
    }
}

fn wait_for_buffers(key: usize) {
    WAITING.with(|w| w.borrow_mut().push_back(key));
    if !RETRY_POLLER.with(|p| p.replace(true)) {
        ferrite_reactor::register_poller("scsi_xcopy_retry", || {
            let n = WAITING.with(|w| w.borrow().len());
            for _ in 0..n {
                let Some(k) = WAITING.with(|w| w.borrow_mut().pop_front()) else {
                    break;
                };
                step(k);
            }
            Poll::from_work(n > 0)
        });
    }
}

struct XcopyIo;

impl IoCallback for XcopyIo {
    fn io_done(&self, tag: u64, status: IoStatus, req: IoRequest) {
        io_done((tag >> 1) as usize, tag & 1 == 1, status, req);
    }
}

/// A chunk's read (`wrote` false) or write finished.
fn io_done(key: usize, wrote: bool, status: IoStatus, req: IoRequest) {
    if let Err(e) = status {
        let code = match e {
            ferrite_bdev::IoError::OutOfRange => asc::NO_ADDITIONAL_SENSE,
            ferrite_bdev::IoError::Device(_) if wrote => asc::WRITE_ERROR,
            ferrite_bdev::IoError::Device(_) => asc::UNRECOVERED_READ_ERROR,
            _ => asc::COPY_TARGET_DEVICE_NOT_REACHABLE,
        };
        return end(key, Some(aborted(code)));
    }
    if wrote {
        COPIES.with(|c| {
            let mut c = c.borrow_mut();
            let cp = &mut c[key];
            cp.done += cp.chunk;
            cp.bytes += req.data.len() as u64;
        });
        drop(req);
        return step(key);
    }
    let (ch, w) = COPIES.with(|c| {
        let c = c.borrow();
        let cp = &c[key];
        let s = cp.segments[cp.seg];
        (
            cp.targets[s.dst].clone(),
            IoRequest::write(s.dst_lba + cp.done, cp.chunk, req.data, false),
        )
    });
    let cb = IO_DONE.with(Rc::clone);
    if let Err((e, w)) = ch.submit(w, &cb, ((key as u64) << 1) | 1) {
        io_done(key, true, Err(e), w);
    }
}

/// Ends copy `key` with `err` (or GOOD).
fn end(key: usize, err: Option<Sense>) {
    let cp = COPIES.with(|c| c.borrow_mut().remove(key));
    let mut task = cp.task;
    if let Some((id, hold)) = cp.list {
        let nx = &cp.view.nx;
        let mut g = cp.view.lun.state.lock();
        if let Some(i) = g.copies.find(&nx.port, nx.rtp(), id) {
            if hold {
                let h = &mut g.copies.held[i];
                h.status = if err.is_some() { 0x01 } else { 0x00 };
                h.segments = cp.seg.min(u16::MAX as usize) as u16;
                h.bytes = cp.bytes;
            } else {
                g.copies.held.remove(i);
            }
        }
    }
    match err {
        None => task.good(),
        Some(s) => task.check(s),
    }
    cp.done_to.finish(task);
}

/// RECEIVE COPY RESULTS: COPY STATUS and OPERATING PARAMETERS.
pub(crate) fn receive_copy_results(ctx: &mut Ctx<'_>, task: &mut Task) {
    let view = &ctx.view;
    let service = task.cdb[1] & 0x1f;
    let list_id = task.cdb[2];
    let alloc = be32(&task.cdb[10..]) as usize;
    match service {
        0x00 => {
            let nx = &view.nx;
            let mut g = view.lun.state.lock();
            let found = g
                .copies
                .find(&nx.port, nx.rtp(), list_id)
                .filter(|&i| g.copies.held[i].hold);
            let Some(i) = found else {
                drop(g);
                task.invalid_field(2, None);
                return;
            };
            let h = g.copies.held[i].clone();
            if h.status != 0x10 {
                // Reported once done; then forgotten.
                g.copies.held.remove(i);
            }
            drop(g);
            let mut r = [0u8; 12];
            r[0..4].copy_from_slice(&8u32.to_be_bytes());
            r[4] = h.status;
            r[5..7].copy_from_slice(&h.segments.to_be_bytes());
            let (units, count) = if h.bytes <= u32::MAX as u64 {
                (0x00, h.bytes) // bytes
            } else {
                (0x01, h.bytes >> 10) // kibibytes
            };
            r[7] = units;
            r[8..12].copy_from_slice(&(count.min(u32::MAX as u64) as u32).to_be_bytes());
            task.reply(&r, alloc);
        }
        0x03 => {
            let bs = view.lun.bdev().block_size();
            let mut r = vec![0u8; 44 + IMPLEMENTED.len()];
            let n = r.len() as u32 - 4;
            r[0..4].copy_from_slice(&n.to_be_bytes());
            r[4] = 0x01; // SNLID: list ID usage 11b is supported
            r[8..10].copy_from_slice(&MAX_TARGET_DESCRIPTORS.to_be_bytes());
            r[10..12].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
            r[12..16].copy_from_slice(&MAX_DESCRIPTOR_LIST_LENGTH.to_be_bytes());
            r[16..20].copy_from_slice(&(0xffff * bs).to_be_bytes()); // MAXIMUM SEGMENT LENGTH
                                                                     // MAXIMUM INLINE DATA LENGTH 0, HELD DATA LIMIT 0, stream size 0.
            r[34..36].copy_from_slice(&1u16.to_be_bytes()); // TOTAL CONCURRENT COPIES
            r[36] = 1; // MAXIMUM CONCURRENT COPIES
            r[37] = bs.trailing_zeros() as u8; // DATA SEGMENT GRANULARITY (log2)
            r[43] = IMPLEMENTED.len() as u8;
            r[44..].copy_from_slice(&IMPLEMENTED);
            task.reply(&r, alloc);
        }
        _ => task.invalid_field(1, Some(4)),
    }
}

/// VPD page 8Fh (Third-party Copy) for INQUIRY, its body after the 4-byte
/// header: Supported Commands, Parameter Data and Supported Descriptors
/// descriptors. Returns the body's length (a `vpd::VpdPage` builder).
pub(crate) fn third_party_copy_page(_: &ScsiPort, _: &LunView, out: &mut [u8]) -> usize {
    let mut r = Vec::with_capacity(64);
    // Supported Commands (0001h): EXTENDED COPY LID1; RECEIVE COPY RESULTS
    // COPY STATUS and OPERATING PARAMETERS.
    let cmds = [
        opcode::EXTENDED_COPY,
        1,
        0x00,
        opcode::RECEIVE_COPY_RESULTS,
        2,
        0x00,
        0x03,
    ];
    let body = (1 + cmds.len()).next_multiple_of(4);
    r.extend_from_slice(&[0x00, 0x01]);
    r.extend_from_slice(&(body as u16).to_be_bytes());
    r.push(cmds.len() as u8);
    r.extend_from_slice(&cmds);
    r.resize(r.len() + body - 1 - cmds.len(), 0);
    // Parameter Data (0004h).
    let mut d = [0u8; 32];
    d[0..2].copy_from_slice(&0x0004u16.to_be_bytes());
    d[2..4].copy_from_slice(&0x001cu16.to_be_bytes());
    d[6..8].copy_from_slice(&MAX_TARGET_DESCRIPTORS.to_be_bytes());
    d[8..10].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
    d[10..14].copy_from_slice(&MAX_DESCRIPTOR_LIST_LENGTH.to_be_bytes());
    r.extend_from_slice(&d);
    // Supported Descriptors (0008h).
    let body = (1 + IMPLEMENTED.len()).next_multiple_of(4);
    r.extend_from_slice(&[0x00, 0x08]);
    r.extend_from_slice(&(body as u16).to_be_bytes());
    r.push(IMPLEMENTED.len() as u8);
    r.extend_from_slice(&IMPLEMENTED);
    r.resize(r.len() + body - 1 - IMPLEMENTED.len(), 0);
    let n = r.len().min(out.len());
    out[..n].copy_from_slice(&r[..n]);
    n
}
