//! The I/O path against a scripted target on a socket pair: the CmdSN window
//! (never past MaxCmdSN), NOP-In pings answered, Data-In in pieces and with
//! phase collapse, CHECK CONDITION with sense, R2T with unsolicited and
//! immediate data, digests both ways, and a connection that drops.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ferrite_transport::iscsi::digest::{data_digest, header_digest};
use ferrite_transport::iscsi::pdu::{
    DataIn, InitiatorPdu, Lun, NopIn, R2t, Residual, ScsiResponse, StatusSeq, RESERVED_TAG,
};

use super::conn::{ConnSpec, IoConn, IoSession};
use super::login::{ConnLimits, Negotiated, Window};
use super::pdu::{self, Bhs, BHS_LEN};
use crate::workload::Workload;

/// The scripted target's end of the connection (blocking, with digests when asked).
struct Peer {
    s: TcpStream,
    digests: bool,
}

impl Peer {
    fn read_pdu(&mut self) -> (Bhs, Vec<u8>) {
        let mut bhs = [0u8; BHS_LEN];
        self.s.read_exact(&mut bhs).expect("a BHS");
        if self.digests {
            let mut d = [0u8; 4];
            self.s.read_exact(&mut d).unwrap();
            assert_eq!(d, header_digest(&bhs, &[]), "header digest");
        }
        let len = pdu::data_len(&bhs);
        let mut data = vec![0u8; pdu::padded_len(len)];
        self.s.read_exact(&mut data).unwrap();
        if len > 0 && self.digests {
            let mut d = [0u8; 4];
            self.s.read_exact(&mut d).unwrap();
            assert_eq!(d, data_digest([&data[..len]]), "data digest");
        }
        data.truncate(len);
        (bhs, data)
    }

    fn send(&mut self, bhs: Bhs, data: &[u8]) {
        let mut out = bhs.to_vec();
        if self.digests {
            out.extend_from_slice(&header_digest(&bhs, &[]));
        }
        if !data.is_empty() {
            out.extend_from_slice(data);
            out.resize(out.len() + pdu::pad_len(data.len()), 0);
            if self.digests {
                out.extend_from_slice(&data_digest([data]));
            }
        }
        self.s.write_all(&out).unwrap();
    }

    /// Nothing arrives for a while.
    fn quiet(&mut self) {
        self.s
            .set_read_timeout(Some(Duration::from_millis(150)))
            .unwrap();
        let mut b = [0u8; 1];
        let got = self.s.read(&mut b);
        assert!(got.is_err(), "expected silence, got {got:?}");
        self.s
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
}

fn command(bhs: &Bhs) -> ferrite_transport::iscsi::pdu::ScsiCommand {
    match InitiatorPdu::decode(bhs).expect("a PDU the target decodes") {
        InitiatorPdu::ScsiCommand(c) => c,
        other => panic!("expected a SCSI command, got {other:?}"),
    }
}

fn seq(stat_sn: u32, exp: u32, max: u32) -> StatusSeq {
    StatusSeq {
        stat_sn,
        exp_cmd_sn: exp,
        max_cmd_sn: max,
    }
}

/// A connected pair: (our stream, the peer).
fn pair(digests: bool) -> (TcpStream, Peer) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (theirs, _) = l.accept().unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (ours, Peer { s: theirs, digests })
}

fn spec(workload: Workload, depth: usize, io_size: usize) -> ConnSpec {
    ConnSpec {
        label: "fake".into(),
        workload,
        depth,
        io_size,
        read_pct: 0,
        seed: 42,
        block_size: 512,
        range: (0, 1024),
        lun: Lun::from_index(0),
    }
}

/// Polls the session until its connection fails (the script's end) or 10 s.
fn drive(session: &mut IoSession) {
    session.install();
    session.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while session.conns[0].dead.is_none() {
        assert!(Instant::now() < deadline, "the script did not finish");
        session.poll();
    }
}

fn reads_script(digests: bool) {
    let (ours, mut peer) = pair(digests);
    let limits = ConnLimits {
        header_digest: digests,
        data_digest: digests,
        target_mrdsl: 8192,
    };
    let conn = IoConn::new(
        spec(Workload::RandRead, 3, 8192),
        ours,
        0,
        0,
        limits,
        &Negotiated::default(),
        5,
    )
    .unwrap();
    let window = Window {
        cmd_sn: 10,
        exp_cmd_sn: 10,
        max_cmd_sn: 10,
    };
    let shared = conn.shared();
    let mut session = IoSession::new(window, vec![conn], 1, 0, 0);

    let target = std::thread::spawn(move || {
        // The window holds one command.
        let (b, data) = peer.read_pdu();
        let c = command(&b);
        assert!(c.read && !c.write && c.final_bit && data.is_empty());
        assert_eq!(
            (c.cmd_sn, c.exp_stat_sn, c.expected_data_len),
            (10, 5, 8192)
        );
        assert_eq!(c.cdb[0], 0x88);
        assert_eq!(u32::from_be_bytes(c.cdb[10..14].try_into().unwrap()), 16);
        peer.quiet();
        // A ping: answered at once, data echoed, StatSN not consumed.
        let ping = NopIn {
            lun: Lun::from_index(0),
            itt: RESERVED_TAG,
            ttt: 0x1234,
            seq: seq(5, 10, 10),
            data_len: 4,
        };
        peer.send(ping.encode(), b"ping");
        let (b, data) = peer.read_pdu();
        match InitiatorPdu::decode(&b).unwrap() {
            InitiatorPdu::NopOut(n) => {
                assert!(n.immediate);
                assert_eq!((n.itt, n.ttt, n.exp_stat_sn), (RESERVED_TAG, 0x1234, 5));
            }
            other => panic!("expected a NOP-Out, got {other:?}"),
        }
        assert_eq!(data, b"ping");
        // The read's data in two pieces; the window stays closed...
        for (i, fill) in [(0u32, 0xaau8), (1, 0xbb)] {
            let d = DataIn {
                final_bit: i == 1,
                itt: c.itt,
                seq: seq(0, 11, 10),
                data_sn: i,
                buffer_offset: i * 4096,
                data_len: 4096,
                ..DataIn::default()
            };
            peer.send(d.encode(), &[fill; 4096]);
        }
        // ...then the status opens it for two more.
        let r = ScsiResponse {
            itt: c.itt,
            seq: seq(5, 11, 12),
            ..ScsiResponse::default()
        };
        peer.send(r.encode(), &[]);
        let (b1, _) = peer.read_pdu();
        let (b2, _) = peer.read_pdu();
        let (c1, c2) = (command(&b1), command(&b2));
        assert_eq!((c1.cmd_sn, c2.cmd_sn), (11, 12));
        assert_eq!((c1.exp_stat_sn, c2.exp_stat_sn), (6, 6));
        peer.quiet();
        // Phase collapse: data and status in one Data-In.
        let d = DataIn {
            final_bit: true,
            status: Some(0),
            itt: c1.itt,
            seq: seq(6, 12, 12),
            data_len: 8192,
            ..DataIn::default()
        };
        peer.send(d.encode(), &[0xcc; 8192]);
        // A medium error, with fixed-format sense.
        let mut sense = vec![0u8, 18, 0x70, 0, 0x03];
        sense.resize(20, 0);
        sense[2 + 12] = 0x11;
        let r = ScsiResponse {
            itt: c2.itt,
            status: pdu::STATUS_CHECK_CONDITION,
            seq: seq(7, 13, 13),
            data_len: sense.len() as u32,
            ..ScsiResponse::default()
        };
        peer.send(r.encode(), &sense);
        // One more may go (13); the third slot waits for the window.
        let (b, _) = peer.read_pdu();
        let c = command(&b);
        assert_eq!((c.cmd_sn, c.exp_stat_sn), (13, 8));
        peer.quiet();
        // A short read: GOOD with an underflow.
        let r = ScsiResponse {
            itt: c.itt,
            residual: Residual::Underflow(8192),
            seq: seq(8, 14, 13),
            ..ScsiResponse::default()
        };
        peer.send(r.encode(), &[]);
        // And the target goes away with three slots waiting for the window.
        drop(peer);
    });
    drive(&mut session);
    target.join().expect("the script ran");
    assert_eq!(shared.ios.load(Relaxed), 4);
    let conn = session.conns.pop().unwrap();
    let (res, _) = conn.finish();
    assert_eq!(res.job.ios, 4, "{:?}", res.errors);
    assert_eq!(res.job.reads, 4);
    assert_eq!(res.pings, 1);
    // CHECK CONDITION, the short read, and the three slots lost with the connection.
    assert_eq!(res.job.fails, 5, "{:?}", res.errors);
    assert!(
        res.errors[0].contains("CHECK CONDITION") && res.errors[0].contains("sense key 0x3"),
        "{:?}",
        res.errors
    );
    assert!(res.errors[1].contains("underflow"), "{:?}", res.errors);
    let dead = res.dead.unwrap();
    assert!(dead.contains("closed") && dead.contains("3 I/O"), "{dead}");
    assert_eq!(res.job.outstanding, 0);
}

#[test]
fn reads_window_nop_and_status() {
    reads_script(false);
}

#[test]
fn reads_with_digests() {
    reads_script(true);
}

#[test]
fn writes_with_immediate_unsolicited_and_r2t_data() {
    for digests in [false, true] {
        let (ours, mut peer) = pair(digests);
        let limits = ConnLimits {
            header_digest: digests,
            data_digest: digests,
            target_mrdsl: 2048,
        };
        let neg = Negotiated {
            initial_r2t: false,
            immediate_data: true,
            first_burst_length: 4096,
            ..Negotiated::default()
        };
        let conn = IoConn::new(
            spec(Workload::RandWrite, 1, 8192),
            ours,
            0,
            0,
            limits,
            &neg,
            1,
        )
        .unwrap();
        let window = Window {
            cmd_sn: 1,
            exp_cmd_sn: 1,
            max_cmd_sn: 64,
        };
        let mut session = IoSession::new(window, vec![conn], 1, 0, 0);
        let target = std::thread::spawn(move || {
            let mut got = vec![0u8; 8192];
            // Immediate data (one target MaxRecvDataSegmentLength) and the
            // unsolicited rest of the first burst.
            let (b, data) = peer.read_pdu();
            let c = command(&b);
            assert!(c.write && !c.read && !c.final_bit);
            assert_eq!((c.expected_data_len, data.len()), (8192, 2048));
            assert_eq!(c.cdb[0], 0x8a);
            got[..2048].copy_from_slice(&data);
            let (b, data) = peer.read_pdu();
            match InitiatorPdu::decode(&b).unwrap() {
                InitiatorPdu::DataOut(d) => {
                    assert_eq!(
                        (d.final_bit, d.itt, d.ttt, d.data_sn, d.buffer_offset),
                        (true, c.itt, RESERVED_TAG, 0, 2048)
                    );
                }
                other => panic!("expected a Data-Out, got {other:?}"),
            }
            got[2048..4096].copy_from_slice(&data);
            peer.quiet();
            // The rest on an R2T, in two PDUs.
            let r2t = R2t {
                lun: Lun::from_index(0),
                itt: c.itt,
                ttt: 0x77,
                seq: seq(1, 2, 64),
                r2t_sn: 0,
                buffer_offset: 4096,
                desired_len: 4096,
            };
            peer.send(r2t.encode(), &[]);
            for i in 0..2u32 {
                let (b, data) = peer.read_pdu();
                match InitiatorPdu::decode(&b).unwrap() {
                    InitiatorPdu::DataOut(d) => {
                        assert_eq!(
                            (d.final_bit, d.ttt, d.data_sn, d.buffer_offset),
                            (i == 1, 0x77, i, 4096 + 2048 * i)
                        );
                    }
                    other => panic!("expected a Data-Out, got {other:?}"),
                }
                got[4096 + 2048 * i as usize..][..2048].copy_from_slice(&data);
            }
            let r = ScsiResponse {
                itt: c.itt,
                seq: seq(1, 2, 64),
                ..ScsiResponse::default()
            };
            peer.send(r.encode(), &[]);
            // The next write comes at once.
            let (b, _) = peer.read_pdu();
            assert_eq!(command(&b).cmd_sn, 2);
            got
        });
        drive(&mut session);
        let got = target.join().expect("the script ran");
        let mut want = vec![0u8; 8192];
        crate::pattern::fill_slice(&mut want, 512, 0, 0, 42);
        assert!(
            got == want,
            "the target received other data than the slot's"
        );
        let (res, _) = session.conns.pop().unwrap().finish();
        assert_eq!((res.job.ios, res.job.writes), (1, 1), "{:?}", res.errors);
        assert_eq!(res.job.fails, 1, "the write in flight when the target left");
    }
}
