//! Bad input on the wire, from a raw TCP initiator written here: random bytes,
//! unknown opcodes, oversized data segments, bad digests, logins missing keys,
//! CmdSNs outside the window, initiators vanishing mid-write, and many
//! connect/disconnect cycles. Each case must end in a Reject, a refused login
//! or a closed connection — and the target must go on serving everyone else
//! (checked with libiscsi's iscsi-inq after every case) without leaking.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrite_tests::raw::{get_u32, put_u32, tur, Raw};
use ferrite_tests::Target;

const IQN: &str = "iqn.2026-11.io.ferrite:wire";

/// A target with one 64 MiB LUN on a free port.
fn start() -> (Target, u16) {
    start_with(&["--no-default"], &[])
}

/// A target started with `args`, `setup` RPCs run first (options must come
/// before any portal), then one 64 MiB LUN on a free port.
fn start_with(args: &[&str], setup: &[&[&str]]) -> (Target, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = Target::start(args);
    for rpc in setup {
        t.rpc_ok(rpc);
    }
    t.rpc_ok(&["bdev_malloc_create", "-b", "W0", "64", "512"]);
    t.rpc_ok(&[
        "iscsi_create_portal_group",
        "1",
        &format!("127.0.0.1:{port}"),
    ]);
    t.rpc_ok(&["iscsi_create_initiator_group", "1", "ANY", "127.0.0.1/32"]);
    t.rpc_ok(&[
        "iscsi_create_target_node",
        IQN,
        "wire",
        "W0:0",
        "1:1",
        "32",
        "-d",
    ]);
    (t, port)
}

/// The target still answers a real client.
fn still_serving(port: u16) {
    let out = Command::new("timeout")
        .args([
            "10",
            "iscsi-inq",
            &format!("iscsi://127.0.0.1:{port}/{IQN}/0"),
        ])
        .output()
        .expect("iscsi-inq runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("FERRITE"),
        "the target stopped serving: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the target did with a bad PDU: answered a Reject, or closed.
fn rejected_or_closed(r: &mut Raw) -> &'static str {
    match r.recv() {
        Some(p) if p.opcode() == 0x3f => "reject",
        Some(p) => panic!("expected a Reject, got opcode {:#x}", p.opcode()),
        None => "closed",
    }
}

#[test]
fn malformed_pdus_get_a_reject_or_a_closed_connection() {
    let (_t, port) = start();

    // Random bytes before any login.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..10 {
        let mut r = Raw::connect(port, IQN);
        r.s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut junk = [0u8; 512];
        for b in junk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let _ = r.s.write_all(&junk);
        let _ = r.recv();
    }
    still_serving(port);

    // An unknown opcode in the full feature phase: Reject, connection kept.
    let mut r = Raw::connect(port, IQN);
    r.login("HeaderDigest=None;DataDigest=None;MaxRecvDataSegmentLength=65536;");
    let mut bhs = [0u8; 48];
    bhs[0] = 0x1c;
    bhs[1] = 0x80;
    r.send(&bhs, &[]).unwrap();
    assert_eq!(rejected_or_closed(&mut r), "reject");
    assert!(r.ping(), "the connection survives an unknown opcode");

    // A data segment larger than our MaxRecvDataSegmentLength.
    let mut bhs = [0u8; 48];
    bhs[0] = 0x40;
    bhs[1] = 0x80;
    put_u32(&mut bhs, 16, 1);
    put_u32(&mut bhs, 20, 0xffff_ffff);
    let big = vec![0u8; 1 << 20];
    let _ = r.send(&bhs, &big);
    assert!(!r.ping(), "an oversized PDU must end the connection");
    still_serving(port);

    // A login without InitiatorName: refused with 0x0207.
    let mut r = Raw::connect(port, IQN);
    let (bhs, data) = r.login_pdu(
        0,
        1,
        &format!("TargetName={IQN};SessionType=Normal;AuthMethod=None;"),
    );
    r.send(&bhs, &data).unwrap();
    let p = r.recv().expect("a login response");
    assert_eq!((p.bhs[36], p.bhs[37]), (0x02, 0x07));
    assert!(r.recv().is_none(), "a refused login closes");

    // A login to a target that does not exist: 0x0203.
    let mut r = Raw::connect(port, IQN);
    let (bhs, data) = r.login_pdu(
        0,
        1,
        "InitiatorName=iqn.2026-11.test:raw;TargetName=iqn.2026-11.io.ferrite:nope;AuthMethod=None;",
    );
    r.send(&bhs, &data).unwrap();
    let p = r.recv().expect("a login response");
    assert_eq!((p.bhs[36], p.bhs[37]), (0x02, 0x03));

    // A bad header digest: the connection closes (error recovery level 0).
    let mut r = Raw::connect(port, IQN);
    r.login("HeaderDigest=CRC32C;DataDigest=None;");
    let mut bhs = [0u8; 48];
    bhs[0] = 0x40;
    bhs[1] = 0x80;
    put_u32(&mut bhs, 16, 9);
    put_u32(&mut bhs, 20, 0xffff_ffff);
    let mut wire = bhs.to_vec();
    wire.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    r.s.write_all(&wire).unwrap();
    assert!(
        r.recv().is_none(),
        "a bad header digest closes the connection"
    );
    still_serving(port);
}

#[test]
fn commands_outside_the_cmdsn_window_are_ignored() {
    let (_t, port) = start();
    let mut r = Raw::connect(port, IQN);
    r.login("HeaderDigest=None;DataDigest=None;");
    // TEST UNIT READY with a CmdSN far ahead of the window.
    let mut bhs = [0u8; 48];
    bhs[0] = 0x01;
    bhs[1] = 0x81;
    put_u32(&mut bhs, 16, 42);
    put_u32(&mut bhs, 24, r.cmd_sn.wrapping_add(100_000));
    put_u32(&mut bhs, 28, r.exp_stat_sn);
    r.send(&bhs, &[]).unwrap();
    r.s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        r.recv().is_none(),
        "no answer to a command outside the window"
    );
    r.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(r.ping(), "and the connection lives on");
}

#[test]
fn an_initiator_vanishing_mid_write_leaves_the_target_serving() {
    let (_t, port) = start();
    for round in 0..20 {
        let mut r = Raw::connect(port, IQN);
        r.login("HeaderDigest=None;DataDigest=None;InitialR2T=Yes;ImmediateData=No;");
        // Several writes, each answered with an R2T we never satisfy.
        for i in 0..4 {
            let bhs = r.write10_header(100 + i, 64);
            r.send(&bhs, &[]).unwrap();
        }
        let p = r.recv().expect("an R2T");
        assert_eq!(p.opcode(), 0x31, "round {round}: expected R2T");
        // Half the rounds send part of the data first.
        if round % 2 == 0 {
            let mut d = [0u8; 48];
            d[0] = 0x05;
            put_u32(&mut d, 16, get_u32(&p.bhs, 16));
            put_u32(&mut d, 20, get_u32(&p.bhs, 20));
            let _ = r.send(&d, &[0xaa; 4096]);
        }
        drop(r);
    }
    still_serving(port);
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_thousand_connect_disconnect_cycles_leak_nothing() {
    let (t, port) = start();
    let pid = t.child.id();
    // Warm up, then measure.
    for _ in 0..50 {
        let mut r = Raw::connect(port, IQN);
        r.login("HeaderDigest=None;DataDigest=None;");
    }
    std::thread::sleep(Duration::from_millis(300));
    let (fds0, rss0) = (open_fds(pid), rss_kib(pid));
    let start = Instant::now();
    for i in 0..1000 {
        let mut r = Raw::connect(port, IQN);
        if i % 2 == 0 {
            r.login("HeaderDigest=None;DataDigest=None;");
        }
    }
    // Let the target notice the last closes.
    std::thread::sleep(Duration::from_millis(500));
    let (fds1, rss1) = (open_fds(pid), rss_kib(pid));
    eprintln!(
        "1000 cycles in {:?}: fds {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB",
        start.elapsed()
    );
    assert!(fds1 <= fds0 + 2, "file descriptors leak: {fds0} -> {fds1}");
    assert!(rss1 < rss0 + 8 * 1024, "memory grows: {rss0} -> {rss1} KiB");
    still_serving(port);
}

#[test]
fn a_second_connection_joins_its_session_on_another_reactor() {
    // Two reactors: the acceptor spreads connections, so the second one lands
    // on the other reactor and must move to its session's.
    let (t, port) = start_with(&["--no-default", "-m", "0x3"], &[]);
    let mut a = Raw::connect(port, IQN);
    a.login("HeaderDigest=None;DataDigest=None;MaxConnections=2;");
    assert_ne!(a.tsih, 0);
    assert!(tur(&mut a, 1));
    let mut b = Raw::connect(port, IQN);
    b.tsih = a.tsih;
    b.isid = a.isid;
    b.cid = 1;
    b.cmd_sn = a.cmd_sn;
    b.login("HeaderDigest=None;DataDigest=None;");
    assert_eq!(b.tsih, a.tsih, "joined the same session");
    // Commands on either connection share the session's CmdSN sequence.
    b.cmd_sn = a.cmd_sn;
    assert!(tur(&mut b, 2), "the joined connection serves");
    a.cmd_sn = b.cmd_sn;
    assert!(tur(&mut a, 3), "the leading connection still serves");
    let conns = t.rpc_ok(&["iscsi_get_connections"]);
    let n = conns
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["tsih"] == a.tsih && c["transport"] == "tcp")
        .count();
    assert_eq!(n, 2, "{conns}");
    let cores: std::collections::HashSet<_> = conns
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["tsih"] == a.tsih)
        .map(|c| c["lcore_id"].clone())
        .collect();
    assert_eq!(
        cores.len(),
        1,
        "a session's connections share a reactor: {conns}"
    );
}

#[test]
fn the_target_asks_initiators_to_log_out_before_it_stops() {
    let (mut t, port) = start();
    let mut r = Raw::connect(port, IQN);
    r.login("HeaderDigest=None;DataDigest=None;");
    // SIGTERM: the target sends an Async Message (event 1, "logout requested").
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(t.child.id() as i32, libc::SIGTERM) };
    let mut asked = false;
    while let Some(p) = r.recv() {
        if p.opcode() == 0x32 && p.bhs[36] == 1 {
            asked = true;
            // Log out as asked.
            let mut bhs = [0u8; 48];
            bhs[0] = 0x46;
            bhs[1] = 0x80;
            put_u32(&mut bhs, 16, 0x55);
            put_u32(&mut bhs, 24, r.cmd_sn);
            put_u32(&mut bhs, 28, r.exp_stat_sn);
            let _ = r.send(&bhs, &[]);
        }
        if p.opcode() == 0x26 {
            break;
        }
    }
    assert!(asked, "no Async Message before shutdown");
    assert!(
        t.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        t.log_text()
    );
}

#[test]
fn idle_connections_are_pinged_and_dead_ones_dropped() {
    let (_t, port) = start_with(
        &["--no-default"],
        &[&["iscsi_set_options", "-n", "1", "-o", "2"]],
    );

    // An initiator that answers the target's pings stays connected.
    let mut alive = Raw::connect(port, IQN);
    alive.login("HeaderDigest=None;DataDigest=None;");
    let mut dead = Raw::connect(port, IQN);
    dead.login("HeaderDigest=None;DataDigest=None;");
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(5) {
        let p = alive
            .recv()
            .expect("the answering initiator stays connected");
        if p.opcode() == 0x20 && get_u32(&p.bhs, 20) != 0xffff_ffff {
            pings += 1;
            let mut bhs = [0u8; 48];
            bhs[0] = 0x40; // NOP-Out, immediate
            bhs[1] = 0x80;
            bhs[8..16].copy_from_slice(&p.bhs[8..16]);
            put_u32(&mut bhs, 16, 0xffff_ffff);
            put_u32(&mut bhs, 20, get_u32(&p.bhs, 20));
            put_u32(&mut bhs, 24, alive.cmd_sn);
            put_u32(&mut bhs, 28, alive.exp_stat_sn);
            alive.send(&bhs, &[]).unwrap();
        }
    }
    assert!(pings >= 2, "the target pinged {pings} times in 5 s");
    // The one that never answered has been dropped.
    dead.s
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut dropped = false;
    for _ in 0..10 {
        match dead.recv() {
            Some(_) => continue, // its pings
            None => {
                dropped = true;
                break;
            }
        }
    }
    assert!(dropped, "a silent initiator was not dropped");
    assert!(alive.ping(), "the answering one still works");
}

#[test]
fn a_new_login_with_the_same_isid_reinstates_the_session() {
    let (_t, port) = start();
    let mut old = Raw::connect(port, IQN);
    old.login("HeaderDigest=None;DataDigest=None;");
    assert!(old.ping());
    let mut new = Raw::connect(port, IQN);
    new.isid = old.isid;
    new.login("HeaderDigest=None;DataDigest=None;");
    assert!(new.ping(), "the reinstated session serves");
    old.s
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert!(!old.ping(), "the old session's connection was closed");
}

/// A NOP-Out ping with `data`; returns the data of the NOP-In that answers it.
fn ping_data(r: &mut Raw, itt: u32, data: &[u8]) -> Vec<u8> {
    let mut bhs = [0u8; 48];
    bhs[0] = 0x40; // NOP-Out, immediate
    bhs[1] = 0x80;
    put_u32(&mut bhs, 16, itt);
    put_u32(&mut bhs, 20, 0xffff_ffff);
    put_u32(&mut bhs, 24, r.cmd_sn);
    put_u32(&mut bhs, 28, r.exp_stat_sn);
    r.send(&bhs, data).unwrap();
    loop {
        let p = r.recv().expect("a NOP-In");
        if p.opcode() == 0x20 && get_u32(&p.bhs, 16) == itt {
            return p.data;
        }
    }
}

/// Linux's initiator pings with no data and drops the connection (protocol
/// error) when the NOP-In carries any: the answer must not echo what an
/// earlier PDU (the login's keys, an earlier ping) left in the receive buffer.
#[test]
fn a_nop_out_without_data_is_answered_without_data() {
    let (_t, port) = start();
    let mut r = Raw::connect(port, IQN);
    r.login("HeaderDigest=None;DataDigest=None;");
    assert_eq!(ping_data(&mut r, 0x10, b""), b"", "after the login");
    assert_eq!(ping_data(&mut r, 0x11, b"ping data"), b"ping data");
    assert_eq!(ping_data(&mut r, 0x12, b""), b"", "after a ping with data");
}

/// RFC 7143: an initiator may reuse an ITT once it has that command's
/// response. Every command here reuses the last one's ITT straight away, and
/// what was written under it reads back under it.
#[test]
fn an_itt_is_free_again_once_its_response_is_in() {
    let (_t, port) = start();
    let mut r = Raw::connect(port, IQN);
    r.login("HeaderDigest=None;DataDigest=None;ImmediateData=Yes;InitialR2T=No;");
    const ITT: u32 = 9;
    let response = |r: &mut Raw| -> (u8, Vec<u8>) {
        let mut data = Vec::new();
        loop {
            let p = r.recv().expect("an answer, not a Reject or a close");
            assert_eq!(get_u32(&p.bhs, 16), ITT, "opcode {:#x}", p.opcode());
            match p.opcode() {
                0x25 if p.bhs[1] & 0x01 == 0 => data.extend_from_slice(&p.data),
                0x25 => {
                    data.extend_from_slice(&p.data);
                    return (p.bhs[3], data);
                }
                0x21 => return (p.bhs[3], data),
                op => panic!("unexpected opcode {op:#x}"),
            }
        }
    };
    assert!(tur(&mut r, ITT), "the first TEST UNIT READY");
    for round in 0..50u8 {
        let blocks = 8u16;
        let pattern = vec![round; blocks as usize * 512];
        let bhs = r.write10_header(ITT, blocks);
        r.send(&bhs, &pattern).unwrap();
        assert_eq!(response(&mut r).0, 0, "round {round}: write status");
        let mut bhs = [0u8; 48];
        bhs[0] = 0x01;
        bhs[1] = 0x80 | 0x40 | 0x01; // F, R, simple
        put_u32(&mut bhs, 16, ITT);
        put_u32(&mut bhs, 20, blocks as u32 * 512);
        put_u32(&mut bhs, 24, r.cmd_sn);
        put_u32(&mut bhs, 28, r.exp_stat_sn);
        r.cmd_sn += 1;
        bhs[32] = 0x28;
        bhs[39..41].copy_from_slice(&blocks.to_be_bytes());
        r.send(&bhs, &[]).unwrap();
        let (status, data) = response(&mut r);
        assert_eq!(status, 0, "round {round}: read status");
        assert!(data == pattern, "round {round}: read back what was written");
    }
    still_serving(port);
}
