//! SRP input Linux's ib_srp never sends, from an initiator of our own over
//! RDMA CM, against a running ferrite-tgt: a read whose data descriptor names
//! memory the initiator never registered (a wrong rkey). The target's RDMA
//! WRITE fails with a remote access error; that channel must end and nothing
//! else: a second channel of the same I_T nexus keeps working.
//!
//! It needs an RDMA device and a ferrite-tgt serving an SRP target with LUN 0
//! of at least 4 KiB: `FERRITE_SRP_TARGET=ID_EXT:IOC_GUID@ADDR:PORT`.
//! `test/vm/srp.sh` runs it in the VM against its target; on the host (no
//! RDMA) it is ignored.

mod common;

use common::{wait_for, Bed};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use ferrite_reactor as reactor;
use ferrite_reactor::mem::{Buffer, MemConfig};
use ferrite_transport::rdma::{
    self, CloseReason, Conn, ConnectFailure, Done, Handler, Recv, WcError, Wr,
};
use ferrite_transport::srp::iu::{
    BuildBuf, CmdBuilder, Desc, LoginReq, LoginRsp, PortId, RspView, IMMED_REQUESTED,
};

#[derive(Default, Debug)]
struct Log {
    login_rsp: Option<Vec<u8>>,
    rejected: bool,
    recvs: Vec<Vec<u8>>,
    down: Option<CloseReason>,
    closed: bool,
}

type Shared = Arc<Mutex<Log>>;

fn lock(l: &Shared) -> std::sync::MutexGuard<'_, Log> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

struct Client(Shared);

impl Handler for Client {
    fn established(&self, _c: &Conn, private_data: &[u8]) {
        lock(&self.0).login_rsp = Some(private_data.to_vec());
    }

    fn recv(&self, _c: &Conn, msg: Recv) {
        let buf = msg.into_single().expect("an SRP IU fits one receive");
        lock(&self.0).recvs.push(buf.to_vec());
    }

    fn completed(&self, _c: &Conn, _tag: u32, _result: Result<Done, WcError>) {}

    fn connect_failed(&self, _c: &Conn, why: ConnectFailure<'_>) {
        if matches!(why, ConnectFailure::Rejected { .. }) {
            lock(&self.0).rejected = true;
        }
    }

    fn disconnecting(&self, _c: &Conn, reason: CloseReason) {
        lock(&self.0).down = Some(reason);
    }

    fn closed(&self, _c: &Conn) {
        lock(&self.0).closed = true;
    }
}

thread_local! {
    /// The client reactor's connections and the buffers of what it posted.
    static CONNS: RefCell<Vec<Conn>> = const { RefCell::new(Vec::new()) };
    static KEEP: RefCell<Vec<Buffer>> = const { RefCell::new(Vec::new()) };
}

/// One reactor, on the first core, for the initiator side.
fn bed() -> Bed {
    Bed::start(
        &MemConfig {
            heap_mb: 2,
            small_count: 2048,
            large_count: 16,
            hugepages: true,
        },
        vec![reactor::available_cores()[0]],
        64,
    )
}

struct Target {
    id_ext: u64,
    ioc_guid: u64,
    addr: SocketAddr,
}

fn target() -> Target {
    let spec =
        std::env::var("FERRITE_SRP_TARGET").expect("FERRITE_SRP_TARGET=ID_EXT:IOC_GUID@ADDR:PORT");
    let (ids, addr) = spec.split_once('@').expect("ID_EXT:IOC_GUID@ADDR:PORT");
    let (id_ext, ioc_guid) = ids.split_once(':').expect("ID_EXT:IOC_GUID");
    Target {
        id_ext: u64::from_str_radix(id_ext, 16).expect("id_ext in hex"),
        ioc_guid: u64::from_str_radix(ioc_guid, 16).expect("ioc_guid in hex"),
        addr: addr.parse().expect("ADDR:PORT"),
    }
}

/// Logs a channel in (`multi`: MULTICHAN_MULTI); returns its index on the
/// reactor and its log once the target accepted.
fn login(bed: &Bed, t: &Target, multi: bool) -> (usize, Shared) {
    let log = Shared::default();
    let req = LoginReq {
        tag: 1,
        req_it_iu_len: 8260,
        req_buf_fmt: 0x6,
        req_flags: IMMED_REQUESTED | u8::from(multi),
        imm_data_offset: 68,
        initiator_port_id: PortId::new(0x5eed, 0x00c0_ffee_0000_0001),
        target_port_id: PortId::new(t.id_ext, t.ioc_guid),
    };
    let (addr, l2) = (t.addr, log.clone());
    let index = bed.run(0, move || {
        let handler = Rc::new(Client(l2));
        let conn = rdma::connect(
            addr,
            &rdma::QpConfig::default(),
            &req.encode_rdma_cm(),
            handler,
        )
        .expect("connect");
        CONNS.with(|c| {
            c.borrow_mut().push(conn);
            c.borrow().len() - 1
        })
    });
    wait_for("the login", || {
        let l = lock(&log);
        l.login_rsp.is_some() || l.rejected || l.closed
    });
    let rsp = lock(&log).login_rsp.clone().expect("login accepted");
    LoginRsp::parse(&rsp).expect("an SRP_LOGIN_RSP");
    (index, log)
}

/// Sends a READ(10) of 8 blocks (4 KiB) into `remote` (None: into a buffer
/// this initiator registered) on channel `index`.
fn read_4k(bed: &Bed, index: usize, tag: u64, bad_rkey: bool) {
    bed.run(0, move || {
        let conn = CONNS.with(|c| c.borrow()[index].clone());
        let data = Buffer::alloc(4096).expect("data buffer");
        let mut remote = conn.remote(&data).expect("rkey");
        if bad_rkey {
            // A key this initiator never got from the device.
            remote.rkey ^= 0x00ab_cd00;
        }
        let cdb = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
        let cmd = CmdBuilder {
            tag,
            cdb: &cdb,
            data_in: BuildBuf::Direct(Desc {
                va: remote.addr,
                key: remote.rkey,
                len: 4096,
            }),
            ..CmdBuilder::default()
        };
        let mut iu = Buffer::alloc(256).expect("IU buffer");
        let n = cmd.encode(&mut iu[..]);
        iu.set_len(n);
        conn.post(&[Wr::send(1, &[conn.sge(&iu)])])
            .expect("post SRP_CMD");
        KEEP.with(|k| {
            k.borrow_mut().push(iu);
            k.borrow_mut().push(data);
        });
    });
}

fn response(log: &Shared, tag: u64) -> Option<u8> {
    lock(log).recvs.iter().find_map(|iu| {
        RspView::parse(iu)
            .ok()
            .filter(|r| r.tag == tag)
            .map(|r| r.status)
    })
}

#[test]
#[ignore = "needs an RDMA device and a ferrite-tgt SRP target (test/vm/srp.sh)"]
fn bad_rkey_ends_only_its_channel() {
    let t = target();
    let bed = bed();
    let (a, log_a) = login(&bed, &t, false);
    let (b, log_b) = login(&bed, &t, true);

    // The nexus's first command meets its POWER ON unit attention (CHECK
    // CONDITION); after that both channels read GOOD.
    read_4k(&bed, a, 0x10, false);
    wait_for("the first read", || response(&log_a, 0x10).is_some());
    let first = response(&log_a, 0x10);
    assert!(matches!(first, Some(0) | Some(2)), "first read: {first:?}");
    read_4k(&bed, a, 0x12, false);
    read_4k(&bed, b, 0x20, false);
    wait_for("reads on both channels", || {
        response(&log_a, 0x12).is_some() && response(&log_b, 0x20).is_some()
    });
    assert_eq!(response(&log_a, 0x12), Some(0), "GOOD on channel A");
    assert_eq!(response(&log_b, 0x20), Some(0), "GOOD on channel B");

    // Channel A names memory it never registered: the target's RDMA WRITE
    // fails and channel A goes down, without an answer to that command.
    read_4k(&bed, a, 0x11, true);
    wait_for("channel A going down", || lock(&log_a).down.is_some());
    assert_eq!(response(&log_a, 0x11), None, "no SRP_RSP for the bad read");

    // Channel B of the same nexus still works.
    read_4k(&bed, b, 0x21, false);
    wait_for("a read on channel B", || response(&log_b, 0x21).is_some());
    assert_eq!(
        response(&log_b, 0x21),
        Some(0),
        "GOOD on channel B after A ended"
    );
    assert!(lock(&log_b).down.is_none(), "channel B stayed up");

    bed.run(0, || {
        CONNS.with(|c| c.borrow().iter().for_each(Conn::disconnect))
    });
    wait_for("both channels closed", || {
        lock(&log_a).closed && lock(&log_b).closed
    });
}
