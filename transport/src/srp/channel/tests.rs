//! The channel against a fake data mover (initiator memory as byte vectors
//! by rkey, transfers done at once and completed when the test says) and a
//! fake SCSI layer (tasks held until the test finishes them).

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::srp::iu::{opcode, rsp_flag, BuildBuf, CmdBuilder, CredRsp, RspView, TLogout, TskMgmt};

#[derive(Debug)]
enum Pending {
    Table(u16, bool),
    Data(u16, bool),
    Task(u16, Task),
    Tmf(u16, Tmf, u64),
}

#[derive(Default)]
struct Fake {
    sent: Vec<Vec<u8>>,
    pending: Vec<Pending>,
    /// Initiator memory: rkey -> (base address, bytes).
    mem: HashMap<u32, (u64, Vec<u8>)>,
    disconnected: bool,
    /// What [`ChannelIo::channel_ended`] was told, once it was.
    ended: Option<Vec<(u64, u64)>>,
}

impl Fake {
    /// The initiator memory `d` names, if it was registered (an RDMA
    /// transfer to anything else fails, as a bad rkey does).
    fn span(&mut self, d: &Desc) -> Option<&mut [u8]> {
        let (base, bytes) = self.mem.get_mut(&d.key)?;
        let at = d.va.checked_sub(*base)? as usize;
        bytes.get_mut(at..at.checked_add(d.len as usize)?)
    }

    /// Registers `bytes` at `va` under `key`.
    fn register(&mut self, key: u32, va: u64, bytes: Vec<u8>) {
        self.mem.insert(key, (va, bytes));
    }

    fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent)
    }

    fn take_task(&mut self) -> (u16, Task) {
        let i = self
            .pending
            .iter()
            .position(|p| matches!(p, Pending::Task(..)))
            .expect("a task at the SCSI layer");
        match self.pending.remove(i) {
            Pending::Task(s, t) => (s, t),
            _ => unreachable!(),
        }
    }

    fn take(&mut self, f: impl Fn(&Pending) -> bool) -> Pending {
        let i = self.pending.iter().position(f).expect("pending effect");
        self.pending.remove(i)
    }
}

impl ChannelIo for Fake {
    fn send(&mut self, iu: &[u8]) {
        self.sent.push(iu.to_vec());
    }

    fn fetch_table(&mut self, slot: u16, table: Desc, into: &mut Buffer) {
        let ok = match self.span(&table).map(|b| b.to_vec()) {
            Some(bytes) => {
                into.set_len(bytes.len());
                into[..bytes.len()].copy_from_slice(&bytes);
                true
            }
            None => false,
        };
        self.pending.push(Pending::Table(slot, ok));
    }

    fn read(&mut self, slot: u16, remote: &[Desc], local: &mut TaskData) {
        let mut at = 0;
        let mut ok = true;
        for d in remote {
            match self.span(d).map(|b| b.to_vec()) {
                Some(bytes) => local.copy_from_slice(at, &bytes),
                None => ok = false,
            }
            at += d.len as usize;
        }
        assert_eq!(at, local.len(), "descriptors cover the task data");
        self.pending.push(Pending::Data(slot, ok));
    }

    fn write(&mut self, slot: u16, local: &mut TaskData, len: usize, remote: &[Desc]) {
        let mut at = 0;
        let mut ok = true;
        for d in remote {
            if at == len {
                break;
            }
            let n = (d.len as usize).min(len - at);
            let mut tmp = vec![0u8; n];
            local.copy_to_slice(at, &mut tmp);
            match self.span(d) {
                Some(b) => b[..n].copy_from_slice(&tmp),
                None => ok = false,
            }
            at += n;
        }
        self.pending.push(Pending::Data(slot, ok));
    }

    fn execute(&mut self, slot: u16, task: Task) {
        self.pending.push(Pending::Task(slot, task));
    }

    fn task_management(&mut self, slot: u16, tmf: Tmf, lun: u64) {
        self.pending.push(Pending::Tmf(slot, tmf, lun));
    }

    fn disconnect(&mut self) {
        self.disconnected = true;
    }

    fn channel_ended(&mut self, at_scsi: &[(u64, u64)]) {
        assert!(self.ended.is_none(), "the channel ended twice");
        self.ended = Some(at_scsi.to_vec());
    }
}

fn config(depth: u16) -> ChannelConfig {
    ChannelConfig {
        queue_depth: depth,
        imm_data_offset: Some(68),
        ..ChannelConfig::default()
    }
}

fn cmd(tag: u64, cdb: &[u8], out: BuildBuf, inn: BuildBuf) -> Vec<u8> {
    let mut b = vec![0u8; 9000];
    let n = CmdBuilder {
        tag,
        lun: [0, 1, 0, 0, 0, 0, 0, 0],
        cdb,
        data_out: out,
        data_in: inn,
        imm_data_offset: 68,
        ..Default::default()
    }
    .encode(&mut b);
    b.truncate(n);
    b
}

const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
const WRITE10: [u8; 10] = [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0];

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn rsp(b: &[u8]) -> RspView<'_> {
    RspView::parse(b).expect("an SRP_RSP")
}

#[test]
fn read_moves_data_by_rdma_write_then_responds() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    io.register(7, 0x10000, vec![0; 4096]);
    let d = Desc {
        va: 0x10000,
        key: 7,
        len: 4096,
    };
    ch.apply(
        Event::Recv(&cmd(11, &READ10, BuildBuf::None, BuildBuf::Direct(d))),
        &mut io,
    );
    assert!(io.sent.is_empty());
    let (slot, mut task) = io.take_task();
    assert_eq!(task.lun, 1);
    assert_eq!(task.tag, 11);
    assert_eq!(task.dir, DataDir::Read);
    assert_eq!(task.expected_len, 4096);
    assert_eq!(task.cdb(), &{
        let mut c = [0u8; 16];
        c[..10].copy_from_slice(&READ10);
        c
    });
    let data = pattern(4096, 1);
    assert!(task.data.set(&data));
    task.cmd_len = 4096;
    ch.apply(Event::TaskDone { slot, task }, &mut io);
    // The data is written before the response goes.
    assert!(io.sent.is_empty());
    assert_eq!(io.mem[&7].1, data);
    let Pending::Data(s, _) = io.take(|p| matches!(p, Pending::Data(..))) else {
        unreachable!()
    };
    ch.apply(Event::DataDone { slot: s, ok: true }, &mut io);
    let sent = io.take_sent();
    assert_eq!(sent.len(), 1);
    let r = rsp(&sent[0]);
    assert_eq!(r.tag, 11);
    assert_eq!(r.status, status::GOOD);
    assert_eq!(r.flags, 0);
    assert_eq!(r.req_lim_delta, 1);
    assert_eq!(ch.busy_slots(), 0);
    assert_eq!(ch.stats().bytes_read, 4096);
}

#[test]
fn short_read_reports_the_underflow() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    io.register(7, 0, vec![0; 8192]);
    let d = Desc {
        va: 0,
        key: 7,
        len: 8192,
    };
    ch.apply(
        Event::Recv(&cmd(1, &READ10, BuildBuf::None, BuildBuf::Direct(d))),
        &mut io,
    );
    let (slot, mut task) = io.take_task();
    task.data.set(&[0xab; 512]);
    task.cmd_len = 512;
    ch.apply(Event::TaskDone { slot, task }, &mut io);
    ch.apply(Event::DataDone { slot, ok: true }, &mut io);
    let sent = io.take_sent();
    let r = rsp(&sent[0]);
    assert_eq!(r.flags, rsp_flag::DIUNDER);
    assert_eq!(r.data_in_res, 8192 - 512);
    assert_eq!(&io.mem[&7].1[..512], &[0xab; 512]);
}

#[test]
fn write_with_immediate_data_executes_at_once() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    let data = pattern(4096, 9);
    ch.apply(
        Event::Recv(&cmd(
            2,
            &WRITE10,
            BuildBuf::Immediate(&data),
            BuildBuf::None,
        )),
        &mut io,
    );
    let (slot, mut task) = io.take_task();
    assert_eq!(task.dir, DataDir::Write);
    assert_eq!(task.data.len(), 4096);
    let mut got = vec![0u8; 4096];
    task.data.copy_to_slice(0, &mut got);
    assert_eq!(got, data);
    task.cmd_len = 4096;
    ch.apply(Event::TaskDone { slot, task }, &mut io);
    let r = io.take_sent();
    assert_eq!(rsp(&r[0]).status, status::GOOD);
    assert_eq!(rsp(&r[0]).flags, 0);
}

#[test]
fn immediate_data_without_the_login_offset_is_refused() {
    let mut ch = Channel::new(ChannelConfig {
        imm_data_offset: None,
        ..config(8)
    });
    let mut io = Fake::default();
    ch.apply(
        Event::Recv(&cmd(
            3,
            &WRITE10,
            BuildBuf::Immediate(&[1; 512]),
            BuildBuf::None,
        )),
        &mut io,
    );
    let r = io.take_sent();
    let v = rsp(&r[0]);
    assert_eq!(v.status, status::CHECK_CONDITION);
    assert_eq!(v.req_lim_delta, 1);
    let sense = Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_INFORMATION_UNIT);
    assert_eq!(v.sense, sense.as_bytes());
    assert!(io.pending.is_empty());
    assert_eq!(ch.busy_slots(), 0);
}

#[test]
fn write_by_rdma_read_from_direct_and_indirect_descriptors() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    let data = pattern(12288, 3);
    io.register(5, 0x1000, data.clone());
    // Direct.
    let d = Desc {
        va: 0x1000,
        key: 5,
        len: 4096,
    };
    ch.apply(
        Event::Recv(&cmd(4, &WRITE10, BuildBuf::Direct(d), BuildBuf::None)),
        &mut io,
    );
    assert!(io.pending.iter().all(|p| matches!(p, Pending::Data(..))));
    let Pending::Data(slot, _) = io.take(|_| true) else {
        unreachable!()
    };
    ch.apply(Event::DataDone { slot, ok: true }, &mut io);
    let (slot, task) = io.take_task();
    let mut got = vec![0u8; 4096];
    task.data.copy_to_slice(0, &mut got);
    assert_eq!(got, data[..4096]);
    ch.apply(Event::TaskDone { slot, task }, &mut io);
    io.take_sent();

    // Indirect, all in the IU, out of order in memory.
    let descs = [
        Desc {
            va: 0x1000 + 8192,
            key: 5,
            len: 4096,
        },
        Desc {
            va: 0x1000,
            key: 5,
            len: 8192,
        },
    ];
    let table = Desc {
        va: 0,
        key: 99,
        len: 32,
    };
    ch.apply(
        Event::Recv(&cmd(
            5,
            &WRITE10,
            BuildBuf::Indirect(table, 12288, &descs),
            BuildBuf::None,
        )),
        &mut io,
    );
    let Pending::Data(slot, _) = io.take(|_| true) else {
        unreachable!()
    };
    ch.apply(Event::DataDone { slot, ok: true }, &mut io);
    let (slot, task) = io.take_task();
    let mut got = vec![0u8; 12288];
    task.data.copy_to_slice(0, &mut got);
    assert_eq!(&got[..4096], &data[8192..]);
    assert_eq!(&got[4096..], &data[..8192]);
    ch.apply(Event::TaskDone { slot, task }, &mut io);
    assert_eq!(rsp(&io.take_sent()[0]).status, status::GOOD);
}

#[test]
fn partial_indirect_table_is_fetched_by_rdma_read() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    // Initiator data: 4 pieces of 1 KiB; the table lists all 4, the IU the first 1.
    let data = pattern(4096, 17);
    io.register(5, 0x8000, data.clone());
    let descs: Vec<Desc> = (0..4)
        .map(|k| Desc {
            va: 0x8000 + (3 - k) * 1024,
            key: 5,
            len: 1024,
        })
        .collect();
    let mut table_bytes = vec![0u8; 64];
    for (k, d) in descs.iter().enumerate() {
        d.encode_into(&mut table_bytes[k * 16..]);
    }
    io.register(6, 0x100, table_bytes);
    let table = Desc {
        va: 0x100,
        key: 6,
        len: 64,
    };
    ch.apply(
        Event::Recv(&cmd(
            6,
            &WRITE10,
            BuildBuf::Indirect(table, 4096, &descs[..1]),
            BuildBuf::None,
        )),
        &mut io,
    );
    let Pending::Table(slot, _) = io.take(|_| true) else {
        panic!("the table is fetched first")
    };
    ch.apply(Event::TableFetched { slot, ok: true }, &mut io);
    let Pending::Data(slot, _) = io.take(|_| true) else {
        unreachable!()
    };
    ch.apply(Event::DataDone { slot, ok: true }, &mut io);
    let (_, task) = io.take_task();
    let mut got = vec![0u8; 4096];
    task.data.copy_to_slice(0, &mut got);
    for k in 0..4 {
        assert_eq!(
            &got[k * 1024..(k + 1) * 1024],
            &data[(3 - k) * 1024..(4 - k) * 1024]
        );
    }

    // A table whose lengths do not add up to the total: CHECK CONDITION.
    io.register(
        6,
        0x100,
        [Desc {
            va: 0x8000,
            key: 5,
            len: 100,
        }; 4]
            .iter()
            .flat_map(|d| {
                let mut b = [0u8; 16];
                d.encode_into(&mut b);
                b
            })
            .collect(),
    );
    ch.apply(
        Event::Recv(&cmd(
            7,
            &WRITE10,
            BuildBuf::Indirect(table, 4096, &descs[..1]),
            BuildBuf::None,
        )),
        &mut io,
    );
    let Pending::Table(slot, _) = io.take(|_| true) else {
        unreachable!()
    };
    ch.apply(Event::TableFetched { slot, ok: true }, &mut io);
    let r = io.take_sent();
    assert_eq!(rsp(&r[0]).tag, 7);
    assert_eq!(rsp(&r[0]).status, status::CHECK_CONDITION);
}

#[test]
fn malformed_commands_get_check_condition_and_keep_the_channel() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    let mut bad = cmd(
        8,
        &READ10,
        BuildBuf::None,
        BuildBuf::Direct(Desc::default()),
    );
    bad[5] = 0x03; // immediate data-in
    ch.apply(Event::Recv(&bad), &mut io);
    let mut short = cmd(
        9,
        &READ10,
        BuildBuf::None,
        BuildBuf::Direct(Desc::default()),
    );
    short.truncate(60);
    ch.apply(Event::Recv(&short), &mut io);
    // Bidirectional.
    let d = Desc {
        va: 0,
        key: 1,
        len: 512,
    };
    ch.apply(
        Event::Recv(&cmd(10, &WRITE10, BuildBuf::Direct(d), BuildBuf::Direct(d))),
        &mut io,
    );
    // Indirect total that does not match its descriptors.
    ch.apply(
        Event::Recv(&cmd(
            11,
            &WRITE10,
            BuildBuf::Indirect(
                Desc {
                    va: 0,
                    key: 1,
                    len: 16,
                },
                999,
                &[d],
            ),
            BuildBuf::None,
        )),
        &mut io,
    );
    let sent = io.take_sent();
    assert_eq!(sent.len(), 4);
    for (r, tag) in sent.iter().zip([8, 9, 10, 11]) {
        let v = rsp(r);
        assert_eq!(v.tag, tag);
        assert_eq!(v.status, status::CHECK_CONDITION);
        assert_eq!(v.req_lim_delta, 1);
    }
    assert!(!ch.is_closed());
    assert_eq!(ch.busy_slots(), 0);
    assert_eq!(ch.initiator_credits(), 8);
}

#[test]
fn unknown_or_target_only_ius_end_the_channel_with_t_logout() {
    for iu in [
        vec![0x77u8; 64],
        TLogout {
            reason: LogoutReason::NoReason,
            tag: 1,
        }
        .encode()
        .to_vec(),
        vec![opcode::TSK_MGMT; 20],
    ] {
        let mut ch = Channel::new(config(8));
        let mut io = Fake::default();
        ch.apply(Event::Recv(&iu), &mut io);
        let sent = io.take_sent();
        let (reason, _) = TLogout::parse(&sent[0]).unwrap();
        let want = if iu.len() == 20 { 8 } else { 2 };
        assert_eq!(reason, want);
        assert!(io.disconnected);
        assert!(ch.is_closed());
        // Nothing more is taken.
        ch.apply(
            Event::Recv(&cmd(1, &READ10, BuildBuf::None, BuildBuf::None)),
            &mut io,
        );
        assert!(io.pending.is_empty() && io.sent.is_empty());
    }
}

#[test]
fn credits_bound_the_outstanding_commands() {
    let mut ch = Channel::new(config(4));
    let mut io = Fake::default();
    for tag in 0..4 {
        ch.apply(
            Event::Recv(&cmd(tag, &[0; 6], BuildBuf::None, BuildBuf::None)),
            &mut io,
        );
    }
    assert_eq!(ch.initiator_credits(), 0);
    // An initiator that overruns gets BUSY, and its credit back.
    ch.apply(
        Event::Recv(&cmd(4, &[0; 6], BuildBuf::None, BuildBuf::None)),
        &mut io,
    );
    let sent = io.take_sent();
    assert_eq!(rsp(&sent[0]).status, status::BUSY);
    assert_eq!(rsp(&sent[0]).req_lim_delta, 1);
    let mut returned = 0;
    while io.pending.iter().any(|p| matches!(p, Pending::Task(..))) {
        let (slot, task) = io.take_task();
        ch.apply(Event::TaskDone { slot, task }, &mut io);
        returned += io
            .take_sent()
            .iter()
            .map(|r| rsp(r).req_lim_delta)
            .sum::<u32>();
    }
    assert_eq!(returned, 4);
    assert_eq!(ch.initiator_credits(), 4);
}

fn tmf(tag: u64, function: TmFunction, task_tag: u64) -> Vec<u8> {
    TskMgmt {
        tag,
        lun: [0, 1, 0, 0, 0, 0, 0, 0],
        function,
        task_tag,
    }
    .encode()
    .to_vec()
}

#[test]
fn abort_task_during_its_rdma_read_waits_for_it_and_sends_no_command_response() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    io.register(5, 0, vec![1; 4096]);
    let d = Desc {
        va: 0,
        key: 5,
        len: 4096,
    };
    ch.apply(
        Event::Recv(&cmd(20, &WRITE10, BuildBuf::Direct(d), BuildBuf::None)),
        &mut io,
    );
    ch.apply(
        Event::Recv(&tmf(0x8000, TmFunction::AbortTask, 20)),
        &mut io,
    );
    // The READ is still under way: no answer yet.
    assert!(io.sent.is_empty());
    let Pending::Data(slot, _) = io.take(|p| matches!(p, Pending::Data(..))) else {
        unreachable!()
    };
    ch.apply(Event::DataDone { slot, ok: true }, &mut io);
    assert!(io.pending.is_empty(), "the aborted write is not executed");
    let sent = io.take_sent();
    assert_eq!(sent.len(), 1);
    let v = rsp(&sent[0]);
    assert_eq!(v.tag, 0x8000);
    assert_eq!(v.flags, rsp_flag::RSPVALID);
    assert_eq!(v.response_data, &[0, 0, 0, rsp_code::NO_FAILURE]);
    // Both requests' credits come back with it.
    assert_eq!(v.req_lim_delta, 2);
    assert_eq!(ch.initiator_credits(), 8);
}

#[test]
fn lun_reset_goes_to_the_scsi_layer_and_aborted_tasks_return_credits() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    ch.apply(
        Event::Recv(&cmd(30, &[0; 6], BuildBuf::None, BuildBuf::None)),
        &mut io,
    );
    ch.apply(Event::Recv(&tmf(0x8001, TmFunction::LunReset, 0)), &mut io);
    let Pending::Tmf(tslot, f, lun) = io.take(|p| matches!(p, Pending::Tmf(..))) else {
        unreachable!()
    };
    assert_eq!((f, lun), (Tmf::LunReset, 1));
    // The SCSI layer hands the aborted task back first, then finishes.
    let (slot, mut task) = io.take_task();
    task.aborted = true;
    ch.apply(Event::TaskDone { slot, task }, &mut io);
    assert!(io.sent.is_empty(), "no response for an aborted task");
    ch.apply(
        Event::TmfDone {
            slot: tslot,
            response: TmfResponse::Complete,
        },
        &mut io,
    );
    let sent = io.take_sent();
    let v = rsp(&sent[0]);
    assert_eq!(v.tag, 0x8001);
    assert_eq!(v.response_data[3], rsp_code::NO_FAILURE);
    assert_eq!(v.req_lim_delta, 2);

    // Aborted after the function's answer: the credit comes in SRP_CRED_REQ.
    ch.apply(
        Event::Recv(&cmd(31, &[0; 6], BuildBuf::None, BuildBuf::None)),
        &mut io,
    );
    ch.apply(
        Event::Recv(&tmf(0x8002, TmFunction::AbortTask, 31)),
        &mut io,
    );
    let Pending::Tmf(tslot, f, _) = io.take(|p| matches!(p, Pending::Tmf(..))) else {
        unreachable!()
    };
    assert_eq!(f, Tmf::AbortTask { tag: 31 });
    ch.apply(
        Event::TmfDone {
            slot: tslot,
            response: TmfResponse::Complete,
        },
        &mut io,
    );
    assert_eq!(rsp(&io.take_sent()[0]).req_lim_delta, 1);
    let (slot, mut task) = io.take_task();
    task.aborted = true;
    ch.apply(Event::TaskDone { slot, task }, &mut io);
    let sent = io.take_sent();
    let c = CredReq::parse(&sent[0]).unwrap();
    assert_eq!(c.req_lim_delta, 1);
    assert_eq!(ch.initiator_credits(), 8);
    ch.apply(Event::Recv(&CredRsp { tag: c.tag }.encode()), &mut io);
    assert!(io.sent.is_empty());
}

#[test]
fn unsupported_and_clear_aca_functions() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    ch.apply(Event::Recv(&tmf(1, TmFunction::Other(0x20), 0)), &mut io);
    ch.apply(Event::Recv(&tmf(2, TmFunction::ClearAca, 0)), &mut io);
    ch.apply(Event::Recv(&tmf(3, TmFunction::LunReset, 0)), &mut io);
    let Pending::Tmf(slot, ..) = io.take(|_| true) else {
        unreachable!()
    };
    ch.apply(
        Event::TmfDone {
            slot,
            response: TmfResponse::LunNotFound,
        },
        &mut io,
    );
    let codes: Vec<u8> = io
        .take_sent()
        .iter()
        .map(|r| rsp(r).response_data[3])
        .collect();
    assert_eq!(
        codes,
        [
            rsp_code::TMF_NOT_SUPPORTED,
            rsp_code::NO_FAILURE,
            rsp_code::INCORRECT_LUN
        ]
    );
}

#[test]
fn i_logout_ends_the_channel_and_drops_tasks_coming_back() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    ch.apply(
        Event::Recv(&cmd(40, &[0; 6], BuildBuf::None, BuildBuf::None)),
        &mut io,
    );
    ch.apply(Event::Recv(&ILogout { tag: 41 }.encode()), &mut io);
    assert!(io.disconnected);
    assert!(ch.is_closed() && !ch.is_finished());
    // The task still at the SCSI layer is handed over to be aborted there.
    assert_eq!(io.ended.as_deref(), Some(&[(1, 40)][..]));
    let (slot, task) = io.take_task();
    ch.apply(Event::TaskDone { slot, task }, &mut io);
    assert!(io.sent.is_empty());
    assert!(ch.is_finished());
}

#[test]
fn failed_transfer_or_disconnect_ends_the_channel() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    io.register(5, 0, vec![0; 512]);
    let d = Desc {
        va: 0,
        key: 5,
        len: 512,
    };
    ch.apply(
        Event::Recv(&cmd(50, &WRITE10, BuildBuf::Direct(d), BuildBuf::None)),
        &mut io,
    );
    ch.apply(
        Event::Recv(&cmd(51, &[0; 6], BuildBuf::None, BuildBuf::None)),
        &mut io,
    );
    let Pending::Data(slot, _) = io.take(|p| matches!(p, Pending::Data(..))) else {
        unreachable!()
    };
    ch.apply(Event::DataDone { slot, ok: false }, &mut io);
    assert!(io.disconnected && ch.is_closed());
    let (slot, task) = io.take_task();
    ch.apply(Event::TaskDone { slot, task }, &mut io);
    assert!(ch.is_finished());
    assert!(io.sent.is_empty());

    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    ch.apply(Event::Disconnected, &mut io);
    assert!(ch.is_finished() && !io.disconnected);
}

#[test]
fn shutdown_sends_t_logout() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    ch.apply(Event::Shutdown, &mut io);
    let sent = io.take_sent();
    assert_eq!(TLogout::parse(&sent[0]).unwrap(), (0, 0));
    assert!(io.disconnected && ch.is_finished());
    ch.apply(Event::Shutdown, &mut io);
    assert!(io.sent.is_empty());
}

/// What the model initiator does next.
#[derive(Clone, Debug)]
enum Step {
    Read(u16),
    Write(u16),
    Imm(u16),
    NoData,
    Abort(u8),
    Reset,
    /// Completes the pending effect at this index (modulo), successfully.
    Complete(u8),
    Garbage(Vec<u8>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u16..16).prop_map(Step::Read),
        (1u16..16).prop_map(Step::Write),
        (1u16..16).prop_map(Step::Imm),
        Just(Step::NoData),
        any::<u8>().prop_map(Step::Abort),
        Just(Step::Reset),
        any::<u8>().prop_map(Step::Complete),
        any::<u8>().prop_map(Step::Complete),
        any::<u8>().prop_map(Step::Complete),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|mut v| {
            // Mostly well-typed garbage: a command or function opcode.
            if let Some(b) = v.first_mut() {
                *b = if *b & 1 == 0 {
                    opcode::CMD
                } else {
                    opcode::TSK_MGMT
                };
            }
            Step::Garbage(v)
        }),
    ]
}

proptest! {
    /// Whatever an initiator that respects its credits sends, in any order of
    /// completions: the channel never answers a tag twice, never lets the
    /// initiator's credits go negative, and once everything completes every
    /// credit is back.
    #[test]
    fn credits_always_come_back(steps in proptest::collection::vec(step(), 1..60)) {
        let depth = 6u16;
        let mut ch = Channel::new(config(depth));
        let mut io = Fake::default();
        io.register(1, 0, vec![0x5a; 16 * 512]);
        let mut credits = depth as i64;
        let mut tag = 0u64;
        let mut outstanding: Vec<u64> = Vec::new();
        let account = |io: &mut Fake, credits: &mut i64, outstanding: &mut Vec<u64>| {
            for iu in io.take_sent() {
                match iu[0] {
                    opcode::RSP => {
                        let r = rsp(&iu);
                        *credits += r.req_lim_delta as i64;
                        // TMF and command answers name an outstanding request
                        // once; CHECK CONDITIONs of garbage may name any tag.
                        if let Some(i) = outstanding.iter().position(|t| *t == r.tag) {
                            outstanding.remove(i);
                        }
                    }
                    opcode::CRED_REQ => *credits += CredReq::parse(&iu).unwrap().req_lim_delta as i64,
                    _ => {}
                }
            }
        };
        for s in steps {
            let needs_credit = !matches!(s, Step::Complete(_));
            if needs_credit && credits <= 0 {
                continue;
            }
            tag += 1;
            let d = |n: u16| Desc { va: 0, key: 1, len: n as u32 * 512 };
            let iu = match s {
                Step::Read(n) => cmd(tag, &READ10, BuildBuf::None, BuildBuf::Direct(d(n))),
                Step::Write(n) => cmd(tag, &WRITE10, BuildBuf::Direct(d(n)), BuildBuf::None),
                Step::Imm(n) => cmd(tag, &WRITE10, BuildBuf::Immediate(&vec![7; n as usize * 512]), BuildBuf::None),
                Step::NoData => cmd(tag, &[0; 6], BuildBuf::None, BuildBuf::None),
                Step::Abort(k) => tmf(tag, TmFunction::AbortTask, outstanding.get(k as usize % outstanding.len().max(1)).copied().unwrap_or(0)),
                Step::Reset => tmf(tag, TmFunction::LunReset, 0),
                Step::Garbage(v) => v,
                Step::Complete(k) => {
                    if io.pending.is_empty() {
                        continue;
                    }
                    let p = io.pending.remove(k as usize % io.pending.len());
                    let ev = match p {
                        Pending::Table(slot, ok) => Event::TableFetched { slot, ok },
                        Pending::Data(slot, ok) => Event::DataDone { slot, ok },
                        Pending::Task(slot, mut task) => {
                            if task.dir == DataDir::Read {
                                task.data.set(&vec![3; task.expected_len as usize]);
                            }
                            task.cmd_len = task.expected_len;
                            Event::TaskDone { slot, task }
                        }
                        Pending::Tmf(slot, ..) => Event::TmfDone { slot, response: TmfResponse::Complete },
                    };
                    ch.apply(ev, &mut io);
                    account(&mut io, &mut credits, &mut outstanding);
                    prop_assert!(credits >= 0);
                    continue;
                }
            };
            credits -= 1;
            if iu.first() == Some(&opcode::CMD) || iu.first() == Some(&opcode::TSK_MGMT) {
                outstanding.push(tag);
            }
            ch.apply(Event::Recv(&iu), &mut io);
            account(&mut io, &mut credits, &mut outstanding);
            prop_assert!(credits >= 0);
            if ch.is_closed() {
                // Garbage of an unknown shape ended it; nothing more to check.
                return Ok(());
            }
        }
        // Drain.
        while let Some(p) = io.pending.pop() {
            let ev = match p {
                Pending::Table(slot, ok) => Event::TableFetched { slot, ok },
                Pending::Data(slot, ok) => Event::DataDone { slot, ok },
                Pending::Task(slot, task) => Event::TaskDone { slot, task },
                Pending::Tmf(slot, ..) => Event::TmfDone { slot, response: TmfResponse::Complete },
            };
            ch.apply(ev, &mut io);
            account(&mut io, &mut credits, &mut outstanding);
        }
        // Answer any SRP_CRED_REQ so that later ones may go, then settle.
        for _ in 0..4 {
            if let Some(t) = ch.cred_req {
                ch.apply(Event::Recv(&CredRsp { tag: t }.encode()), &mut io);
                account(&mut io, &mut credits, &mut outstanding);
            }
        }
        prop_assert_eq!(ch.busy_slots(), 0);
        prop_assert_eq!(credits, depth as i64);
    }
}

#[test]
fn abort_task_of_a_tag_this_channel_does_not_hold_goes_to_the_scsi_layer() {
    // Another channel of the same nexus may hold it, on another reactor.
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    ch.apply(
        Event::Recv(&tmf(0x8003, TmFunction::AbortTask, 77)),
        &mut io,
    );
    let Pending::Tmf(tslot, f, lun) = io.take(|p| matches!(p, Pending::Tmf(..))) else {
        unreachable!()
    };
    assert_eq!((f, lun), (Tmf::AbortTask { tag: 77 }, 1));
    ch.apply(
        Event::TmfDone {
            slot: tslot,
            response: TmfResponse::Complete,
        },
        &mut io,
    );
    let sent = io.take_sent();
    let v = rsp(&sent[0]);
    assert_eq!((v.tag, v.response_data[3]), (0x8003, rsp_code::NO_FAILURE));
}

#[test]
fn a_dropped_channel_hands_its_tasks_at_the_scsi_layer_over_to_be_aborted() {
    let mut ch = Channel::new(config(8));
    let mut io = Fake::default();
    for tag in [50, 51] {
        ch.apply(
            Event::Recv(&cmd(tag, &[0; 6], BuildBuf::None, BuildBuf::None)),
            &mut io,
        );
    }
    ch.apply(Event::Disconnected, &mut io);
    let mut ended = io.ended.clone().expect("channel_ended");
    ended.sort();
    assert_eq!(ended, [(1, 50), (1, 51)]);
    for _ in 0..2 {
        let (slot, mut task) = io.take_task();
        task.aborted = true;
        ch.apply(Event::TaskDone { slot, task }, &mut io);
    }
    assert!(io.sent.is_empty(), "nothing is sent on a dropped channel");
    assert!(ch.is_finished());
}
