//! A misbehaving iSER initiator against a real ferrite-tgt: raw RDMA CM
//! connections (the RDMA layer's `rdma::connect`) that send what ib_iser never
//! would. Each test checks what the target answers on that connection; that
//! the target and its other sessions live on, and that nothing leaked, is
//! checked by the script that runs them (`test/vm/iser.sh`: a kernel iSER
//! session does fio verify meanwhile, and `rdma_get_stats` comes back to what
//! it was).
//!
//! They need ferrite-tgt serving an iSER portal: `FERRITE_ISER_TARGET`
//! (`IP:PORT`) and `FERRITE_ISER_IQN` (a target node with a LUN 0 of at least
//! 64 MiB, 512-byte blocks, no CHAP). The host has no RDMA, so they are
//! ignored by default.

mod common;

use common::{wait_for, Bed, WAIT};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_reactor as reactor;
use ferrite_reactor::mem::{self, Buffer, MemConfig};
use ferrite_transport::iser::{parse_message, Hello, IserHeader, IserMessage, RemoteBuffer};
use ferrite_transport::rdma::{
    self, CloseReason, Conn, ConnectFailure, Done, Handler, QpConfig, Recv, WcError, Wr,
};

/// The iSER CM private data: no zero-based addresses, and no SEND with
/// invalidate (the arena's key is a plain memory region, which a remote
/// invalidation could only break), as libiscsi sends it.
const ISER_CM_REQ: [u8; 4] = [0xc0, 0, 0, 0];
const BLOCK: u32 = 512;

fn target_addr() -> SocketAddr {
    std::env::var("FERRITE_ISER_TARGET")
        .expect("FERRITE_ISER_TARGET (IP:PORT of an iSER portal)")
        .parse()
        .expect("FERRITE_ISER_TARGET is IP:PORT")
}

fn target_iqn() -> String {
    std::env::var("FERRITE_ISER_IQN").expect("FERRITE_ISER_IQN (the target node's name)")
}

// ---------------------------------------------------------------------------
// One reactor for the initiator side, and running closures on it.
// ---------------------------------------------------------------------------

/// One reactor, on the last core, for the initiator side.
fn bed() -> Bed {
    let cores = reactor::available_cores();
    Bed::start(
        &MemConfig {
            heap_mb: 2,
            small_count: 1024,
            large_count: 64,
            hugepages: false,
        },
        vec![cores[cores.len() - 1]],
        256,
    )
}

// ---------------------------------------------------------------------------
// The initiator: what its connection saw.
// ---------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Log {
    established: Option<Vec<u8>>,
    rejected: Option<(i32, Vec<u8>)>,
    unreachable: Option<String>,
    recvs: Vec<Vec<u8>>,
    errors: Vec<String>,
    disconnecting: Vec<CloseReason>,
    closed: bool,
}

type SharedLog = Arc<Mutex<Log>>;

fn log_of(l: &SharedLog) -> std::sync::MutexGuard<'_, Log> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

struct Initiator {
    log: SharedLog,
    /// Buffers of SENDs in flight, by tag.
    inflight: RefCell<HashMap<u32, Buffer>>,
}

impl Handler for Initiator {
    fn established(&self, _conn: &Conn, private_data: &[u8]) {
        log_of(&self.log).established = Some(private_data.to_vec());
    }

    fn recv(&self, _conn: &Conn, msg: Recv) {
        log_of(&self.log).recvs.push(msg.buf.to_vec());
    }

    fn completed(&self, _conn: &Conn, tag: u32, result: Result<Done, WcError>) {
        self.inflight.borrow_mut().remove(&tag);
        if let Err(e) = result {
            log_of(&self.log).errors.push(e.to_string());
        }
    }

    fn connect_failed(&self, _conn: &Conn, why: ConnectFailure<'_>) {
        let mut log = log_of(&self.log);
        match why {
            ConnectFailure::Rejected {
                status,
                private_data,
            } => log.rejected = Some((status, private_data.to_vec())),
            other => log.unreachable = Some(format!("{other:?}")),
        }
    }

    fn disconnecting(&self, _conn: &Conn, reason: CloseReason) {
        log_of(&self.log).disconnecting.push(reason);
    }

    fn closed(&self, _conn: &Conn) {
        log_of(&self.log).closed = true;
    }
}

thread_local! {
    static CLIENTS: RefCell<Vec<(Conn, Rc<Initiator>)>> = const { RefCell::new(Vec::new()) };
    /// Memory the target may RDMA READ from / WRITE to (kept for the process).
    static REGION: RefCell<Vec<Buffer>> = const { RefCell::new(Vec::new()) };
}

/// One raw iSER connection.
struct Peer {
    index: usize,
    log: SharedLog,
    next_tag: u32,
    /// Messages received and already taken by [`Peer::next`].
    seen: usize,
}

fn connect_with(bed: &Bed, qp: QpConfig, private_data: &'static [u8]) -> Peer {
    let log = SharedLog::default();
    let l2 = log.clone();
    let addr = target_addr();
    let index = bed.run(0, move || {
        let ini = Rc::new(Initiator {
            log: l2,
            inflight: RefCell::new(HashMap::new()),
        });
        let conn = rdma::connect(addr, &qp, private_data, ini.clone()).expect("rdma::connect");
        CLIENTS.with(|c| {
            let mut c = c.borrow_mut();
            c.push((conn, ini));
            c.len() - 1
        })
    });
    Peer {
        index,
        log,
        next_tag: 1,
        seen: 0,
    }
}

/// Connects as ib_iser does and waits for the target's accept.
fn connect(bed: &Bed) -> Peer {
    let peer = connect_with(bed, QpConfig::default(), &ISER_CM_REQ);
    wait_for("the connection to be established", || {
        let l = log_of(&peer.log);
        l.established.is_some() || l.closed
    });
    let l = log_of(&peer.log);
    assert!(
        l.established.is_some(),
        "the target did not accept an iSER connect request: {l:?}"
    );
    drop(l);
    peer
}

impl Peer {
    fn send(&mut self, bed: &Bed, bytes: Vec<u8>) {
        let (i, tag) = (self.index, self.next_tag);
        self.next_tag += 1;
        bed.run(0, move || {
            CLIENTS.with(|c| {
                let c = c.borrow();
                let (conn, ini) = &c[i];
                let mut b = Buffer::alloc(bytes.len()).expect("buffer");
                b.copy_from_slice(&bytes);
                let sge = [conn.sge(&b)];
                conn.post(&[Wr::send(tag, &sge)]).expect("post send");
                ini.inflight.borrow_mut().insert(tag, b);
            })
        });
    }

    /// Waits for the next message received and returns it.
    fn next(&mut self, what: &str) -> Vec<u8> {
        let n = self.seen + 1;
        wait_for(what, || {
            let l = log_of(&self.log);
            l.recvs.len() >= n || l.closed
        });
        let l = log_of(&self.log);
        assert!(l.recvs.len() >= n, "{what}: the connection closed: {l:?}");
        self.seen = n;
        l.recvs[n - 1].clone()
    }

    fn wait_closed(&self, what: &str) {
        wait_for(what, || log_of(&self.log).closed);
    }

    fn disconnect(&self, bed: &Bed) {
        let i = self.index;
        bed.run(0, move || CLIENTS.with(|c| c.borrow()[i].0.disconnect()));
        self.wait_closed("our disconnect to complete");
    }

    /// The target's remote key for the arena and the address of a fresh
    /// region of `len` bytes (large buffers, kept for the process).
    fn region(&self, bed: &Bed, len: usize) -> RemoteBuffer {
        let i = self.index;
        bed.run(0, move || {
            CLIENTS.with(|c| {
                let c = c.borrow();
                let conn = &c[i].0;
                let buf = Buffer::alloc(len).expect("a region buffer");
                let remote = conn.remote(&buf).expect("rkey");
                REGION.with(|r| r.borrow_mut().push(buf));
                RemoteBuffer {
                    stag: remote.rkey,
                    va: remote.addr,
                }
            })
        })
    }
}

// ---------------------------------------------------------------------------
// iSCSI PDUs, built by hand (RFC 7143 §11).
// ---------------------------------------------------------------------------

fn iser(header: IserHeader, bhs: [u8; 48], data: &[u8]) -> Vec<u8> {
    let mut m = header.encode().to_vec();
    m.extend_from_slice(&bhs);
    m.extend_from_slice(data);
    m
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn login_request(isid: [u8; 6], csg: u8, nsg: u8, exp_stat_sn: u32, text: &str) -> Vec<u8> {
    let mut bhs = [0u8; 48];
    bhs[0] = 0x43; // Login Request, immediate
    bhs[1] = 0x80 | (csg << 2) | nsg; // Transit
    let data = text.replace(' ', "\0") + "\0";
    put32(&mut bhs, 4, data.len() as u32);
    bhs[8..14].copy_from_slice(&isid);
    put32(&mut bhs, 16, 1); // ITT
    put32(&mut bhs, 24, 1); // CmdSN
    put32(&mut bhs, 28, exp_stat_sn);
    iser(IserHeader::default(), bhs, data.as_bytes())
}

/// What a full-feature session needs to issue commands.
struct Session {
    cmd_sn: u32,
    exp_stat_sn: u32,
    itt: u32,
}

/// Logs in with ImmediateData=No and InitialR2T=Yes, so every byte of write
/// data comes by RDMA READ. Each login is a new session (its own ISID).
fn login(bed: &Bed, peer: &mut Peer) -> Session {
    static NEXT_ISID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let n = NEXT_ISID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id() as u16;
    let [p0, p1] = pid.to_be_bytes();
    let [n0, n1] = n.to_be_bytes();
    let isid = [0x80, 0x42, p0, p1, n0, n1];
    login_with(bed, peer, isid)
}

fn login_with(bed: &Bed, peer: &mut Peer, isid: [u8; 6]) -> Session {
    let security = format!(
        "InitiatorName=iqn.2026-11.io.ferrite:bad-peer TargetName={} SessionType=Normal \
         AuthMethod=None",
        target_iqn()
    );
    peer.send(bed, login_request(isid, 0, 1, 0, &security));
    let rsp = peer.next("the security-stage login response");
    check_login_response(&rsp, 1);
    let stat_sn = get32(&rsp[28..], 24);
    let operational = "HeaderDigest=None DataDigest=None RDMAExtensions=Yes \
         InitiatorRecvDataSegmentLength=8192 TargetRecvDataSegmentLength=8192 \
         MaxBurstLength=1048576 FirstBurstLength=65536 ImmediateData=No InitialR2T=Yes \
         MaxOutstandingR2T=1 ErrorRecoveryLevel=0 MaxConnections=1 \
         MaxOutstandingUnexpectedPDUs=0";
    peer.send(bed, login_request(isid, 1, 3, stat_sn + 1, operational));
    let rsp = peer.next("the operational-stage login response");
    check_login_response(&rsp, 3);
    let IserMessage::Pdu { bhs, data, .. } = parse_message(&rsp).expect("iSER message") else {
        panic!("not a PDU");
    };
    let text = String::from_utf8_lossy(data);
    assert!(
        text.contains("RDMAExtensions=Yes"),
        "the target takes RDMAExtensions=Yes: {text:?}"
    );
    // The first command carries the ExpCmdSN the target announced.
    let mut s = Session {
        cmd_sn: get32(bhs, 28),
        exp_stat_sn: get32(bhs, 24) + 1,
        itt: 0x100,
    };
    // A new I_T nexus starts with a unit attention (power on or reset): take
    // it with a TEST UNIT READY, so the commands of the test see none.
    for _ in 0..2 {
        let tur = scsi_command(&mut s, None, 0, 0, RemoteBuffer::default());
        peer.send(bed, tur);
        if scsi_response(peer, &mut s, "TEST UNIT READY") == (0, 0) {
            return s;
        }
    }
    panic!("TEST UNIT READY still fails after the unit attention");
}

fn check_login_response(msg: &[u8], nsg: u8) {
    let IserMessage::Pdu { bhs, data, .. } = parse_message(msg).expect("iSER message") else {
        panic!("a login response, not a Hello");
    };
    assert_eq!(bhs[0] & 0x3f, 0x23, "a Login Response: {bhs:?}");
    assert_eq!(
        (bhs[36], bhs[37]),
        (0, 0),
        "login status (class, detail); keys {:?}",
        String::from_utf8_lossy(data)
    );
    assert_eq!(bhs[1] & 0x83, 0x80 | nsg, "transit to stage {nsg}");
}

/// A SCSI WRITE(10) (`write` Some(true)) or READ(10) (Some(false)) of
/// `blocks` at `lba` on LUN 0, its data at `buffer` (the iSER header's write
/// or read STag); None: TEST UNIT READY.
fn scsi_command(
    s: &mut Session,
    write: Option<bool>,
    lba: u32,
    blocks: u16,
    buffer: RemoteBuffer,
) -> Vec<u8> {
    let mut bhs = [0u8; 48];
    bhs[0] = 0x01;
    bhs[1] = 0x80 | 0x01; // F, SIMPLE
    put32(&mut bhs, 16, s.itt);
    s.itt += 1;
    put32(&mut bhs, 24, s.cmd_sn);
    s.cmd_sn += 1;
    put32(&mut bhs, 28, s.exp_stat_sn);
    let mut header = IserHeader::default();
    if let Some(write) = write {
        bhs[1] |= if write { 0x20 } else { 0x40 };
        put32(&mut bhs, 20, u32::from(blocks) * BLOCK);
        bhs[32] = if write { 0x2a } else { 0x28 };
        bhs[34..38].copy_from_slice(&lba.to_be_bytes());
        bhs[39..41].copy_from_slice(&blocks.to_be_bytes());
        if write {
            header.write = Some(buffer);
        } else {
            header.read = Some(buffer);
        }
    }
    iser(header, bhs, &[])
}

/// A bidirectional SCSI command (R and W bits) of `len` bytes each way on
/// LUN 0: the CDB, the write part at `write` (its Expected Data Transfer
/// Length in the BHS), the read part at `read` (its length in a
/// Bidirectional Read Expected Data Transfer Length AHS), both STags in the
/// iSER header (RFC 7143 §11.3.1.1, RFC 7145 §5.1).
fn bidi_command(
    s: &mut Session,
    cdb: &[u8],
    len: u32,
    write: RemoteBuffer,
    read: RemoteBuffer,
) -> Vec<u8> {
    let mut bhs = [0u8; 48];
    bhs[0] = 0x01;
    bhs[1] = 0x80 | 0x40 | 0x20 | 0x01; // F, R, W, SIMPLE
    bhs[4] = 2; // TotalAHSLength: one AHS of 8 bytes
    put32(&mut bhs, 16, s.itt);
    s.itt += 1;
    put32(&mut bhs, 20, len);
    put32(&mut bhs, 24, s.cmd_sn);
    s.cmd_sn += 1;
    put32(&mut bhs, 28, s.exp_stat_sn);
    bhs[32..32 + cdb.len()].copy_from_slice(cdb);
    let header = IserHeader {
        write: Some(write),
        read: Some(read),
    };
    let mut m = header.encode().to_vec();
    m.extend_from_slice(&bhs);
    // AHSLength 5 (the type-specific bytes, reserved one included), AHSType 2.
    m.extend_from_slice(&[0, 5, 2, 0]);
    m.extend_from_slice(&len.to_be_bytes());
    m
}

/// The next SCSI Response's status and response bytes.
fn scsi_response(peer: &mut Peer, s: &mut Session, what: &str) -> (u8, u8) {
    let (status, response, _) = scsi_response_with_sense(peer, s, what);
    (status, response)
}

/// The next SCSI Response's status, response and sense bytes (without the
/// SenseLength field).
fn scsi_response_with_sense(peer: &mut Peer, s: &mut Session, what: &str) -> (u8, u8, Vec<u8>) {
    loop {
        let msg = peer.next(what);
        let IserMessage::Pdu { bhs, data, .. } = parse_message(&msg).expect("iSER message") else {
            panic!("{what}: a Hello?");
        };
        if bhs[0] & 0x3f == 0x21 {
            s.exp_stat_sn = get32(bhs, 24) + 1;
            let sense = match data {
                [hi, lo, rest @ ..] => {
                    let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
                    rest[..n].to_vec()
                }
                _ => Vec::new(),
            };
            return (bhs[3], bhs[2], sense);
        }
        // NOP-In and asynchronous messages may come between.
    }
}

/// Sets every byte of the `back`-th last region (see [`Peer::region`]).
fn fill_region(bed: &Bed, back: usize, byte: u8) {
    bed.run(0, move || {
        REGION.with(|r| {
            let mut r = r.borrow_mut();
            let n = r.len();
            r[n - back].fill(byte);
        })
    });
}

/// Whether every byte of the `back`-th last region is `byte`.
fn region_is(bed: &Bed, back: usize, byte: u8) -> bool {
    bed.run(0, move || {
        REGION.with(|r| {
            let r = r.borrow();
            r[r.len() - back].iter().all(|&b| b == byte)
        })
    })
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

#[test]
#[ignore = "needs ferrite-tgt on an iSER portal (test/vm/iser.sh runs it)"]
fn a_connect_request_allowing_no_rdma_read_is_rejected_and_odd_flags_are_accepted() {
    let bed = bed();
    // Responder resources 0: the target could never fetch write data.
    let no_reads = QpConfig {
        responder_resources: 0,
        ..QpConfig::default()
    };
    let peer = connect_with(&bed, no_reads, &ISER_CM_REQ);
    wait_for("an answer to the connect request", || {
        log_of(&peer.log).closed
    });
    let l = log_of(&peer.log);
    assert!(
        l.rejected.is_some() && l.established.is_none(),
        "a request allowing no RDMA READ is rejected: {l:?}"
    );
    println!("no RDMA READ: rejected {:?}", l.rejected);
    drop(l);

    // Every flag and reserved bit set: neither zero-based addresses nor SEND
    // with invalidate; the target accepts and says it uses neither.
    let peer = connect_with(&bed, QpConfig::default(), &[0xff; 4]);
    wait_for("an answer to the connect request", || {
        let l = log_of(&peer.log);
        l.established.is_some() || l.closed
    });
    let accept = log_of(&peer.log).established.clone().expect("accepted");
    assert!(accept.len() >= 4, "iSER accept private data: {accept:?}");
    assert_eq!(
        accept[0] & 0xc0,
        0xc0,
        "the accept says no ZBVA and no SEND with invalidate: {accept:?}"
    );
    println!("flags 0xff: accepted with {:#04x}", accept[0]);
    peer.disconnect(&bed);
}

#[test]
#[ignore = "needs ferrite-tgt on an iSER portal (test/vm/iser.sh runs it)"]
fn a_hello_gets_a_hello_reply() {
    let bed = bed();
    let mut peer = connect(&bed);
    let hello = Hello {
        max_version: 1,
        min_version: 1,
        ird: 4,
    };
    peer.send(&bed, hello.encode().to_vec());
    let msg = peer.next("the HelloReply");
    let Ok(IserMessage::HelloReply(reply)) = parse_message(&msg) else {
        panic!("a HelloReply, got {msg:?}");
    };
    assert!(!reply.reject, "{reply:?}");
    assert_eq!(reply.current_version, 1, "{reply:?}");
    assert!(
        (1..=4).contains(&reply.ord),
        "ORD within our IRD: {reply:?}"
    );
    let first_ord = reply.ord;
    // A version range without 1: rejected, and the connection stays up for
    // the initiator to give up.
    let hello = Hello {
        max_version: 3,
        min_version: 2,
        ird: 4,
    };
    peer.send(&bed, hello.encode().to_vec());
    let msg = peer.next("the second HelloReply");
    let Ok(IserMessage::HelloReply(reply)) = parse_message(&msg) else {
        panic!("a HelloReply, got {msg:?}");
    };
    assert!(reply.reject, "versions 2-3 rejected: {reply:?}");
    println!("HelloReply: ORD {first_ord}, then a reject for versions 2-3");
    // And the connection still logs in.
    login(&bed, &mut peer);
    peer.disconnect(&bed);
}

#[test]
#[ignore = "needs ferrite-tgt on an iSER portal (test/vm/iser.sh runs it)"]
fn malformed_iser_messages_end_their_connection() {
    let bed = bed();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut nop = [0u8; 48];
    nop[0] = 0x40; // NOP-Out, immediate
    put32(&mut nop, 16, 7);
    put32(&mut nop, 20, 0xffff_ffff);
    let mut unknown = iser(IserHeader::default(), nop, &[]);
    unknown[0] = 0x70;
    cases.push(("opcode 7", unknown));
    cases.push(("a 20-byte message", vec![0x10; 20]));
    let mut long_data = nop;
    put32(&mut long_data, 4, 4000);
    cases.push((
        "a BHS saying 4000 bytes of data, 100 sent",
        iser(IserHeader::default(), long_data, &[0u8; 100]),
    ));
    let mut big = iser(IserHeader::default(), long_data, &[0u8; 8700]);
    put32(&mut big[28..], 4, 8700);
    cases.push(("a SEND longer than the target's receive buffers", big));
    cases.push((
        "a HelloReply sent to the target",
        vec![0x30, 0x11, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0],
    ));
    for (what, msg) in cases {
        let mut peer = connect(&bed);
        peer.send(&bed, msg);
        peer.wait_closed(&format!("the target to end the connection after {what}"));
        let l = log_of(&peer.log);
        // The oversized SEND fails at our end too (the target's receive
        // failed, so the SEND gets a remote operation error); the others end
        // by the target's disconnect alone.
        let ours_failed =
            what.contains("longer") && l.disconnecting.first() == Some(&CloseReason::Error);
        assert!(
            l.disconnecting.first() == Some(&CloseReason::PeerDisconnected) || ours_failed,
            "{what}: the target disconnected: {l:?}"
        );
        println!(
            "{what}: the connection ended ({:?}, {:?})",
            l.disconnecting, l.errors
        );
    }
}

/// The environment variable that makes this binary the vanishing initiator.
const VANISH_ENV: &str = "FERRITE_ISER_PEER_VANISH";

#[test]
#[ignore = "needs ferrite-tgt on an iSER portal (test/vm/iser.sh runs it)"]
fn an_initiator_killed_while_the_target_reads_its_write_data() {
    if std::env::var(VANISH_ENV).is_ok() {
        // The child: log in, queue 32 writes of 1 MiB (all fetched by RDMA
        // READ), say so once the first has completed, and wait to be killed.
        let bed = bed();
        let mut peer = connect(&bed);
        let mut s = login(&bed, &mut peer);
        // The write data: the first MiB of the arena's I/O region, all of it
        // registered for remote access under the one rkey.
        let rkey = peer.region(&bed, 4096).stag;
        let (base, len) = mem::arena().io_region();
        assert!(len >= 1 << 20, "the arena's I/O region holds 1 MiB");
        let data = RemoteBuffer {
            stag: rkey,
            va: base as u64,
        };
        let blocks = ((1u32 << 20) / BLOCK) as u16;
        for k in 0..32u32 {
            let cmd = scsi_command(&mut s, Some(true), k * u32::from(blocks), blocks, data);
            peer.send(&bed, cmd);
        }
        let (status, response) = scsi_response(&mut peer, &mut s, "the first write's response");
        assert_eq!((status, response), (0, 0), "the first write succeeded");
        let answered = log_of(&peer.log).recvs.len() - (peer.seen - 1);
        println!("writing: {answered} of 32 writes answered");
        std::thread::sleep(Duration::from_secs(60));
        panic!("the initiator was not killed");
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "an_initiator_killed_while_the_target_reads_its_write_data",
            "--ignored",
            "--nocapture",
        ])
        .env(VANISH_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("initiator process");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let start = Instant::now();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("the initiator's output");
        if n == 0 {
            let _ = child.kill();
            panic!("the initiator ended before writing: {:?}", child.wait());
        }
        if line.starts_with("writing") {
            print!("initiator {line}");
            break;
        }
        assert!(start.elapsed() < WAIT, "the initiator never wrote");
    }
    child.kill().expect("kill the initiator");
    let _ = child.wait();
    println!("initiator killed with up to 31 writes of 1 MiB queued or being read");

    // The target still serves a new connection: log in, write and read back.
    let bed = bed();
    let mut peer = connect(&bed);
    let mut s = login(&bed, &mut peer);
    let out_buf = peer.region(&bed, 64 * 1024);
    let in_buf = peer.region(&bed, 64 * 1024);
    bed.run(0, move || {
        REGION.with(|r| {
            let mut r = r.borrow_mut();
            let n = r.len();
            for (k, b) in r[n - 2].iter_mut().enumerate() {
                *b = (k * 7 + 3) as u8;
            }
            r[n - 1].fill(0);
        })
    });
    let cmd = scsi_command(&mut s, Some(true), 4096, 128, out_buf);
    peer.send(&bed, cmd);
    assert_eq!(scsi_response(&mut peer, &mut s, "the write"), (0, 0));
    let cmd = scsi_command(&mut s, Some(false), 4096, 128, in_buf);
    peer.send(&bed, cmd);
    assert_eq!(scsi_response(&mut peer, &mut s, "the read"), (0, 0));
    let same = bed.run(0, || {
        REGION.with(|r| {
            let r = r.borrow();
            let n = r.len();
            r[n - 2][..] == r[n - 1][..]
        })
    });
    assert!(
        same,
        "64 KiB written by RDMA READ and read back by RDMA WRITE match"
    );
    println!("a new session wrote and read back 64 KiB");
    peer.disconnect(&bed);
}

#[test]
#[ignore = "needs ferrite-tgt on an iSER portal (test/vm/iser.sh runs it)"]
fn bad_stags_end_their_connection() {
    let bed = bed();
    for write in [true, false] {
        let mut peer = connect(&bed);
        let mut s = login(&bed, &mut peer);
        let good = peer.region(&bed, 4096);
        let bad = RemoteBuffer {
            stag: good.stag ^ 0x5a5a_0000,
            va: good.va,
        };
        let cmd = scsi_command(&mut s, Some(write), 0, 8, bad);
        peer.send(&bed, cmd);
        let what = if write {
            "a write whose write STag is not ours"
        } else {
            "a read whose read STag is not ours"
        };
        peer.wait_closed(&format!("the target to end the connection after {what}"));
        let l = log_of(&peer.log);
        let responses = l.recvs.len() - peer.seen;
        assert_eq!(
            responses, 0,
            "{what}: no SCSI response claims success: {l:?}"
        );
        println!("{what}: connection ended, {:?}", l.disconnecting);
    }
}

/// Bidirectional commands over iSER: no SCSI command of ferrite moves data
/// both ways (XDWRITEREAD is obsolete), so each is answered CHECK CONDITION,
/// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE, with nothing RDMA
/// WRITTEN to the read buffer and nothing written to the medium, and the
/// connection goes on: a real XDWRITEREAD(10), then a READ(10) and a
/// WRITE(10) flagged both ways, then a plain read of the block.
#[test]
#[ignore = "needs ferrite-tgt on an iSER portal (test/vm/iser.sh runs it)"]
fn bidirectional_commands_get_check_condition_and_move_no_data() {
    const LBA: u32 = 8192;
    const LEN: u32 = 4096;
    let bed = bed();
    let mut peer = connect(&bed);
    let mut s = login(&bed, &mut peer);
    let out_buf = peer.region(&bed, LEN as usize);
    let in_buf = peer.region(&bed, LEN as usize);
    // The blocks' content before: 0xa1.
    fill_region(&bed, 2, 0xa1);
    let cmd = scsi_command(&mut s, Some(true), LBA, (LEN / BLOCK) as u16, out_buf);
    peer.send(&bed, cmd);
    assert_eq!(scsi_response(&mut peer, &mut s, "the first write"), (0, 0));
    // What the bidirectional commands offer to write: 0xb2; the read buffer
    // holds 0xee until the target writes into it.
    fill_region(&bed, 2, 0xb2);
    fill_region(&bed, 1, 0xee);
    let blocks = (LEN / BLOCK) as u16;
    let [b0, b1] = blocks.to_be_bytes();
    let [l0, l1, l2, l3] = LBA.to_be_bytes();
    let cases: [(&str, [u8; 10]); 3] = [
        ("XDWRITEREAD(10)", [0x53, 0, l0, l1, l2, l3, 0, b0, b1, 0]),
        (
            "READ(10) flagged both ways",
            [0x28, 0, l0, l1, l2, l3, 0, b0, b1, 0],
        ),
        (
            "WRITE(10) flagged both ways",
            [0x2a, 0, l0, l1, l2, l3, 0, b0, b1, 0],
        ),
    ];
    for (what, cdb) in cases {
        peer.send(&bed, bidi_command(&mut s, &cdb, LEN, out_buf, in_buf));
        let (status, response, sense) = scsi_response_with_sense(&mut peer, &mut s, what);
        assert_eq!((status, response), (0x02, 0), "{what}: CHECK CONDITION");
        assert!(
            sense.len() >= 14,
            "{what}: fixed-format sense: {sense:02x?}"
        );
        assert_eq!(
            (sense[2] & 0x0f, sense[12], sense[13]),
            (0x05, 0x20, 0x00),
            "{what}: ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE: {sense:02x?}"
        );
        assert!(
            region_is(&bed, 1, 0xee),
            "{what}: nothing RDMA WRITTEN to the read buffer"
        );
        println!("{what}: CHECK CONDITION, ILLEGAL REQUEST 20/00, read buffer untouched");
    }
    // The connection goes on, and the blocks still hold what the first write put.
    let cmd = scsi_command(&mut s, Some(false), LBA, blocks, in_buf);
    peer.send(&bed, cmd);
    assert_eq!(scsi_response(&mut peer, &mut s, "the read"), (0, 0));
    assert!(
        region_is(&bed, 1, 0xa1),
        "the blocks hold the first write's data, none of the bidirectional commands'"
    );
    println!("a plain READ(10) after them: GOOD, the blocks unchanged");
    peer.disconnect(&bed);
}
