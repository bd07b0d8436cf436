use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::iscsi::pdu::opcode;
use crate::iser::Hello;

/// A work request as the recorder saw it, with the bytes it would move.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Posted {
    Write {
        stag: u32,
        va: u64,
        bytes: Vec<u8>,
    },
    Send {
        tag: u32,
        bytes: Vec<u8>,
        invalidate: Option<u32>,
    },
    Read {
        tag: u32,
        stag: u32,
        va: u64,
        /// (offset into the task data, length) of each scatter entry.
        len: usize,
    },
}

#[derive(Default)]
struct Record {
    chains: Vec<Vec<Posted>>,
    disconnected: bool,
    fail_next: bool,
}

struct Recorder(Rc<RefCell<Record>>);

fn bytes_of(segs: &[Segment<'_>]) -> Vec<u8> {
    segs.iter()
        .flat_map(|s| s.buf[s.offset..s.offset + s.len].to_vec())
        .collect()
}

impl Verbs for Recorder {
    fn post(&self, chain: &[Work<'_>]) -> io::Result<()> {
        let mut r = self.0.borrow_mut();
        if std::mem::take(&mut r.fail_next) {
            return Err(io::Error::other("send queue full"));
        }
        let posted = chain
            .iter()
            .map(|w| match w {
                Work::Write { to, from } => Posted::Write {
                    stag: to.stag,
                    va: to.va,
                    bytes: bytes_of(from),
                },
                Work::Send {
                    tag,
                    msg,
                    invalidate,
                } => Posted::Send {
                    tag: *tag,
                    bytes: bytes_of(std::slice::from_ref(msg)),
                    invalidate: *invalidate,
                },
                Work::Read { tag, from, into } => Posted::Read {
                    tag: *tag,
                    stag: from.stag,
                    va: from.va,
                    len: into.iter().map(|s| s.len).sum(),
                },
            })
            .collect();
        r.chains.push(posted);
        Ok(())
    }

    fn disconnect(&self) {
        self.0.borrow_mut().disconnected = true;
    }
}

struct Tasks(Vec<Option<TaskData>>);

impl TaskDataSlots for Tasks {
    fn task_data(&self, slot: usize) -> Option<&TaskData> {
        self.0.get(slot)?.as_ref()
    }
    fn task_data_mut(&mut self, slot: usize) -> Option<&mut TaskData> {
        self.0.get_mut(slot)?.as_mut()
    }
}

fn task(len: usize, fill: impl Fn(usize) -> u8) -> TaskData {
    let mut td = TaskData::with_capacity(len);
    assert!(td.alloc(len));
    let bytes: Vec<u8> = (0..len).map(fill).collect();
    td.copy_from_slice(0, &bytes);
    td
}

fn link(max_reads: u8, max_wrs: u32, inv: bool) -> (IserLink, Rc<RefCell<Record>>) {
    let rec = Rc::new(RefCell::new(Record::default()));
    let l = IserLink::new(
        Box::new(Recorder(rec.clone())),
        max_reads,
        max_wrs,
        MAX_SGES,
        inv,
    );
    (l, rec)
}

fn command_bhs(write: bool, edtl: u32, data_len: u32) -> Bhs {
    let mut b = [0u8; BHS_LEN];
    b[0] = opcode::SCSI_COMMAND;
    b[1] = 0x80 | if write { 0x20 } else { 0x40 } | 0x01;
    b[5..8].copy_from_slice(&data_len.to_be_bytes()[1..]);
    b[16..20].copy_from_slice(&0x10u32.to_be_bytes());
    b[20..24].copy_from_slice(&edtl.to_be_bytes());
    b
}

fn message(iser: &IserHeader, bhs: &Bhs, data: &[u8]) -> Buffer {
    let len = ISER_HEADER_LEN + BHS_LEN + data.len();
    let mut buf = Buffer::alloc(len).unwrap();
    buf[..ISER_HEADER_LEN].copy_from_slice(&iser.encode());
    buf[ISER_HEADER_LEN..ISER_HEADER_LEN + BHS_LEN].copy_from_slice(bhs);
    buf[ISER_HEADER_LEN + BHS_LEN..].copy_from_slice(data);
    buf
}

fn flush(l: &mut IserLink, tasks: &Tasks) -> (Flushed, Vec<usize>) {
    let mut released = Vec::new();
    let f = l.flush(tasks, &mut |s| released.push(s)).unwrap();
    (f, released)
}

#[test]
fn a_write_command_brings_its_immediate_data_and_its_write_buffer() {
    let (mut l, _) = link(4, 64, false);
    let mut tasks = Tasks(vec![Some(task(16384, |_| 0))]);
    let iser = IserHeader {
        write: Some(RemoteBuffer {
            stag: 0x77,
            va: 0x10_0000 + 512,
        }),
        read: None,
    };
    l.recv(message(&iser, &command_bhs(true, 16384, 512), &[0x5a; 512]));
    assert!(matches!(l.poll(&mut tasks), RecvEvent::Header));
    assert_eq!(l.header().data_len, 512);
    assert_eq!(l.header().bhs, command_bhs(true, 16384, 512));
    assert_eq!(l.iser_header(), iser);
    l.set_dest(Dest::Task { slot: 0, offset: 0 });
    assert!(matches!(l.poll(&mut tasks), RecvEvent::Pdu));
    let td = tasks.0[0].as_ref().unwrap();
    let mut got = vec![0u8; 513];
    td.copy_to_slice(0, &mut got);
    assert!(got[..512].iter().all(|&b| b == 0x5a) && got[512] == 0);
    assert!(matches!(l.poll(&mut tasks), RecvEvent::WouldBlock));
    assert_eq!(l.buffered(), 0);
}

#[test]
fn text_data_goes_to_scratch_and_bare_pdus_come_whole() {
    let (mut l, _) = link(4, 64, false);
    let mut tasks = Tasks(vec![]);
    let mut nop = [0u8; BHS_LEN];
    nop[0] = opcode::NOP_OUT | 0x40;
    l.recv(message(&IserHeader::default(), &nop, &[]));
    let mut text = [0u8; BHS_LEN];
    text[0] = opcode::TEXT_REQUEST;
    text[7] = 18;
    l.recv(message(
        &IserHeader::default(),
        &text,
        b"SendTargets=All\0\0\0",
    ));
    assert_eq!(l.buffered(), 2);
    assert!(matches!(l.poll(&mut tasks), RecvEvent::Pdu));
    assert_eq!(l.header().bhs[0], opcode::NOP_OUT | 0x40);
    assert!(matches!(l.poll(&mut tasks), RecvEvent::Header));
    l.set_dest(Dest::Scratch);
    assert!(matches!(l.poll(&mut tasks), RecvEvent::Pdu));
    assert_eq!(l.scratch(), b"SendTargets=All\0\0\0");
    // A data-less PDU after it has no data either.
    l.recv(message(&IserHeader::default(), &nop, &[]));
    assert!(matches!(l.poll(&mut tasks), RecvEvent::Pdu));
    assert!(l.scratch().is_empty());
}

#[test]
fn read_data_is_written_then_the_response_sent_in_one_chain() {
    // 300 KiB spans several arena buffers.
    let len = 300 * 1024;
    let tasks = Tasks(vec![None, Some(task(len, |i| (i % 251) as u8))]);
    let to = RemoteBuffer {
        stag: 0x1234,
        va: 0x7f00_0000_0000,
    };
    let mut resp = [0u8; BHS_LEN];
    resp[0] = opcode::SCSI_RESPONSE;
    for inv in [true, false] {
        let (mut l, rec) = link(4, 64, inv);
        let write = DataWrite {
            slot: 1,
            len: len as u32,
            to,
        };
        l.push_response(resp, OutData::None, 1, Some(write), Some(0x1234));
        let (f, released) = flush(&mut l, &tasks);
        assert!(!f.blocked && released.is_empty());
        let chains = rec.borrow().chains.clone();
        assert_eq!(chains.len(), 1, "one post for the whole chain");
        let chain = &chains[0];
        // The WRITEs cover the data in order, to consecutive addresses.
        let mut written = Vec::new();
        for p in &chain[..chain.len() - 1] {
            let Posted::Write { stag, va, bytes } = p else {
                panic!("{p:?}");
            };
            assert_eq!(*stag, 0x1234);
            assert_eq!(*va, to.va + written.len() as u64);
            written.extend_from_slice(bytes);
        }
        let want: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        assert!(written == want, "the written bytes are the task's");
        let Posted::Send {
            tag,
            bytes,
            invalidate,
        } = &chain[chain.len() - 1]
        else {
            panic!("the chain ends with the SEND");
        };
        assert_eq!(&bytes[..ISER_HEADER_LEN], &IserHeader::TARGET.encode());
        assert_eq!(&bytes[ISER_HEADER_LEN..], &resp);
        assert_eq!(*invalidate, inv.then_some(0x1234));
        // The task's buffers are released when the SEND completes, not before.
        assert!(!l.is_empty());
        l.completed(*tag, Completion::Ok);
        let (_, released) = flush(&mut l, &tasks);
        assert_eq!(released, vec![1]);
        assert!(l.is_empty());
    }
}

#[test]
fn rdma_reads_keep_to_the_qp_limit_and_report_what_landed() {
    let (mut l, rec) = link(2, 64, false);
    let len = 3 * MAX_READ + 4096;
    let mut tasks = Tasks(vec![Some(task(len as usize + 512, |_| 0))]);
    let from = RemoteBuffer {
        stag: 5,
        va: 0x9000,
    };
    l.fetch(0, 512, len, from);
    let mut nop_in = [0u8; BHS_LEN];
    nop_in[0] = opcode::NOP_IN;
    l.push(nop_in, OutData::None, None);
    let (f, _) = flush(&mut l, &tasks);
    assert!(!f.blocked);
    // Two READs (the limit), and the NOP-In did not wait behind the others.
    let reads: Vec<Posted> = rec.borrow().chains.iter().flatten().cloned().collect();
    assert_eq!(reads.len(), 3, "{reads:?}");
    let tag_of = |p: &Posted| match p {
        Posted::Read { tag, .. } => *tag,
        Posted::Send { tag, .. } => *tag,
        _ => panic!(),
    };
    assert!(
        matches!(reads[0], Posted::Read { stag: 5, va: 0x9000, len, .. } if len == MAX_READ as usize)
    );
    assert!(matches!(reads[1], Posted::Read { va, .. } if va == 0x9000 + u64::from(MAX_READ)));
    assert!(matches!(reads[2], Posted::Send { .. }));
    // The first lands: it is reported, and the third READ goes.
    l.completed(tag_of(&reads[0]), Completion::Ok);
    assert!(matches!(
        l.poll(&mut tasks),
        RecvEvent::Fetched { slot: 0, len } if len == MAX_READ
    ));
    flush(&mut l, &tasks);
    let posted: Vec<Posted> = rec.borrow().chains.iter().flatten().cloned().collect();
    assert_eq!(posted.len(), 4);
    assert!(matches!(posted[3], Posted::Read { va, .. } if va == 0x9000 + 2 * u64::from(MAX_READ)));
    // Then the rest, the last piece short.
    l.completed(tag_of(&posted[1]), Completion::Ok);
    l.completed(tag_of(&posted[3]), Completion::Ok);
    flush(&mut l, &tasks);
    let posted: Vec<Posted> = rec.borrow().chains.iter().flatten().cloned().collect();
    assert!(matches!(posted[4], Posted::Read { len: 4096, .. }));
    let mut total = 0;
    l.completed(tag_of(&posted[4]), Completion::Ok);
    while let RecvEvent::Fetched { len, .. } = l.poll(&mut tasks) {
        total += len;
    }
    assert_eq!(total, len - MAX_READ);
}

#[test]
fn a_full_send_queue_holds_pdus_back_in_order() {
    let (mut l, rec) = link(4, 2, false);
    let tasks = Tasks(vec![]);
    for n in 0..3u8 {
        let mut b = [0u8; BHS_LEN];
        b[0] = opcode::NOP_IN;
        b[47] = n;
        l.push(b, OutData::Owned(vec![n; 3]), None);
    }
    let (f, _) = flush(&mut l, &tasks);
    assert!(f.blocked);
    assert_eq!(rec.borrow().chains.len(), 2);
    let first = match &rec.borrow().chains[0][0] {
        Posted::Send { tag, bytes, .. } => {
            assert_eq!(bytes.len(), ISER_HEADER_LEN + BHS_LEN + 3);
            assert_eq!(&bytes[ISER_HEADER_LEN + BHS_LEN..], &[0, 0, 0]);
            *tag
        }
        p => panic!("{p:?}"),
    };
    l.completed(first, Completion::Ok);
    let (f, _) = flush(&mut l, &tasks);
    assert!(!f.blocked);
    let r = rec.borrow();
    let Posted::Send { bytes, .. } = &r.chains[2][0] else {
        panic!();
    };
    assert_eq!(bytes[ISER_HEADER_LEN + 47], 2);
}

#[test]
fn hello_is_answered_and_bad_messages_end_the_connection() {
    let (mut l, rec) = link(8, 64, false);
    let mut tasks = Tasks(vec![]);
    let hello = Hello {
        max_version: 1,
        min_version: 1,
        ird: 16,
    };
    let mut buf = Buffer::alloc(HELLO_LEN).unwrap();
    buf.copy_from_slice(&hello.encode());
    l.recv(buf);
    assert!(matches!(l.poll(&mut tasks), RecvEvent::WouldBlock));
    flush(&mut l, &tasks);
    match &rec.borrow().chains[0][0] {
        Posted::Send { bytes, .. } => assert_eq!(&bytes[..4], &[0x30, 0x11, 0, 8]),
        p => panic!("{p:?}"),
    }
    // A PDU cut short.
    let mut bad = message(
        &IserHeader::default(),
        &command_bhs(true, 4096, 100),
        &[0; 100],
    );
    bad.set_len(ISER_HEADER_LEN + BHS_LEN + 10);
    l.recv(bad);
    match l.poll(&mut tasks) {
        RecvEvent::Error(e) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("cut short"), "{e}");
        }
        _ => panic!("a truncated PDU was taken"),
    }
}

#[test]
fn failures_and_shutdown() {
    let (mut l, rec) = link(4, 64, false);
    let mut tasks = Tasks(vec![Some(task(4096, |_| 1)), Some(task(4096, |_| 2))]);
    let mut resp = [0u8; BHS_LEN];
    resp[0] = opcode::SCSI_RESPONSE;
    // A post the device refuses fails the flush.
    rec.borrow_mut().fail_next = true;
    l.push_response(resp, OutData::None, 0, None, None);
    assert!(l.flush(&tasks, &mut |_| {}).is_err());
    // One response in flight, one queued: shutdown releases both slots.
    l.push_response(resp, OutData::None, 0, None, None);
    flush(&mut l, &tasks);
    l.push_response(resp, OutData::None, 1, None, None);
    let mut released = Vec::new();
    l.shutdown(&mut |s| released.push(s));
    released.sort();
    assert_eq!(released, vec![0, 1]);
    assert!(rec.borrow().disconnected);
    // A failed completion ends the connection on the next poll.
    let (mut l, _) = link(4, 64, false);
    l.fetch(0, 0, 4096, RemoteBuffer { stag: 1, va: 0 });
    flush(&mut l, &tasks);
    l.completed(0, Completion::Failed);
    assert!(matches!(l.poll(&mut tasks), RecvEvent::Error(_)));
    assert!(l.flush(&tasks, &mut |_| {}).is_err());
}

#[test]
fn small_scatter_lists_and_long_chains_are_split() {
    // One scatter entry per work request: 20 buffers of data take 20 WRITEs,
    // more than one post holds; the SEND comes last, after all of them.
    let len = 20 * 128 * 1024;
    let tasks = Tasks(vec![Some(task(len, |i| (i / 4096) as u8))]);
    let rec = Rc::new(RefCell::new(Record::default()));
    let mut l = IserLink::new(Box::new(Recorder(rec.clone())), 8, 64, 1, false);
    let mut resp = [0u8; BHS_LEN];
    resp[0] = opcode::SCSI_RESPONSE;
    let to = RemoteBuffer { stag: 3, va: 0 };
    let write = DataWrite {
        slot: 0,
        len: len as u32,
        to,
    };
    l.push_response(resp, OutData::None, 0, Some(write), None);
    flush(&mut l, &tasks);
    let chains = rec.borrow().chains.clone();
    assert_eq!(chains.len(), 2);
    assert!(chains.iter().all(|c| c.len() <= MAX_CHAIN));
    let all: Vec<&Posted> = chains.iter().flatten().collect();
    assert_eq!(all.len(), 21);
    let mut written = 0u64;
    for p in &all[..20] {
        let Posted::Write { va, bytes, .. } = p else {
            panic!("{p:?}");
        };
        assert_eq!(*va, written);
        written += bytes.len() as u64;
    }
    assert_eq!(written, len as u64);
    let Posted::Send { tag, .. } = all[20] else {
        panic!("the SEND is last");
    };
    // Its completion gives back all 21 send-queue entries.
    l.completed(*tag, Completion::Ok);
    assert_eq!(l.wrs_out, 0);

    // A READ whose buffers do not fit one scatter list goes in pieces.
    let rec = Rc::new(RefCell::new(Record::default()));
    let mut l = IserLink::new(Box::new(Recorder(rec.clone())), 8, 64, 2, false);
    let mut tasks = Tasks(vec![Some(task(MAX_READ as usize, |_| 0))]);
    l.fetch(0, 0, MAX_READ, RemoteBuffer { stag: 9, va: 0x100 });
    flush(&mut l, &tasks);
    let reads: Vec<Posted> = rec.borrow().chains.iter().flatten().cloned().collect();
    assert_eq!(reads.len(), 4, "{reads:?}");
    for (k, p) in reads.iter().enumerate() {
        assert!(
            matches!(p, Posted::Read { va, len, .. } if *va == 0x100 + k as u64 * 262_144 && *len == 262_144),
            "{p:?}"
        );
        let Posted::Read { tag, .. } = p else {
            unreachable!()
        };
        l.completed(*tag, Completion::Ok);
    }
    let mut total = 0;
    while let RecvEvent::Fetched { len, .. } = l.poll(&mut tasks) {
        total += len;
    }
    assert_eq!(total, MAX_READ);
}
