//! Steady-state iSCSI I/O allocates nothing on the heap: a target runs in this
//! process, a raw initiator (which itself allocates nothing once logged in)
//! drives reads, immediate-data writes and R2T-solicited writes over loopback,
//! and a counting allocator sees every allocation of every thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrite_app::target::{run, TargetOptions};
use ferrite_reactor::mem::MemConfig;
use ferrite_reactor::RuntimeConfig;
use ferrite_tests::raw::{get_u32, put_u32, Raw};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            let n = ALLOCS.fetch_add(1, Ordering::Relaxed);
            if n < 3 && std::env::var_os("FERRITE_ALLOC_TRACE").is_some() {
                // Off the counter while we look (the backtrace allocates).
                COUNTING.store(false, Ordering::Relaxed);
                eprintln!(
                    "allocation {n}:\n{}",
                    std::backtrace::Backtrace::force_capture()
                );
                COUNTING.store(true, Ordering::Relaxed);
            }
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const IQN: &str = "iqn.2026-11.io.ferrite:noalloc";

/// Reads the answer to command `itt` into `buf` (Data-In data) and returns its
/// status, reading PDUs with fixed buffers only.
fn finish(r: &mut Raw, itt: u32, buf: &mut [u8], r2t_data: &[u8]) -> u8 {
    let mut bhs = [0u8; 48];
    loop {
        r.s.read_exact(&mut bhs).unwrap();
        let len = u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]) as usize;
        let padded = (len + 3) & !3;
        match bhs[0] & 0x3f {
            0x25 => {
                let off = get_u32(&bhs, 40) as usize;
                r.s.read_exact(&mut buf[off..off + padded]).unwrap();
                if bhs[1] & 0x01 != 0 {
                    r.exp_stat_sn = get_u32(&bhs, 24) + 1;
                    return bhs[3];
                }
            }
            0x21 => {
                let mut sense = [0u8; 128];
                r.s.read_exact(&mut sense[..padded]).unwrap();
                r.exp_stat_sn = get_u32(&bhs, 24) + 1;
                assert_eq!(get_u32(&bhs, 16), itt);
                return bhs[3];
            }
            0x31 => {
                // R2T: send the asked-for range as one Data-Out.
                let ttt = get_u32(&bhs, 20);
                let off = get_u32(&bhs, 40) as usize;
                let want = get_u32(&bhs, 44) as usize;
                let mut d = [0u8; 48];
                d[0] = 0x05;
                d[1] = 0x80;
                d[5..8].copy_from_slice(&(want as u32).to_be_bytes()[1..]);
                put_u32(&mut d, 16, itt);
                put_u32(&mut d, 20, ttt);
                put_u32(&mut d, 28, r.exp_stat_sn);
                put_u32(&mut d, 40, off as u32);
                r.s.write_all(&d).unwrap();
                r.s.write_all(&r2t_data[off..off + want]).unwrap();
            }
            op => panic!("unexpected opcode {op:#x}"),
        }
    }
}

/// A READ(10) or WRITE(10) of `blocks` 512-byte blocks at `lba`, with `imm`
/// bytes of immediate data.
fn command(r: &mut Raw, itt: u32, write: bool, lba: u32, blocks: u16, imm: &[u8]) {
    let mut bhs = [0u8; 48];
    bhs[0] = 0x01;
    bhs[1] = 0x80 | if write { 0x20 } else { 0x40 } | 0x01;
    bhs[5..8].copy_from_slice(&(imm.len() as u32).to_be_bytes()[1..]);
    put_u32(&mut bhs, 16, itt);
    put_u32(&mut bhs, 20, blocks as u32 * 512);
    put_u32(&mut bhs, 24, r.cmd_sn);
    put_u32(&mut bhs, 28, r.exp_stat_sn);
    r.cmd_sn += 1;
    bhs[32] = if write { 0x2a } else { 0x28 };
    bhs[34..38].copy_from_slice(&lba.to_be_bytes());
    bhs[39..41].copy_from_slice(&blocks.to_be_bytes());
    r.s.write_all(&bhs).unwrap();
    r.s.write_all(imm).unwrap();
}

fn rpc(sock: &std::path::Path, method: &str) {
    let mut s = UnixStream::connect(sock).unwrap();
    let req = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"{method}\"}}");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf);
}

#[test]
fn steady_state_iscsi_io_allocates_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sock = ferrite_tests::scratch("noalloc-sock");
    let config = serde_json::json!({"subsystems": [
        {"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {"name": "NA0", "num_blocks": 65536, "block_size": 512}}]},
        {"subsystem": "iscsi", "config": [
            {"method": "iscsi_create_portal_group", "params": {"tag": 1, "portals": [{"host": "127.0.0.1", "port": port.to_string()}]}},
            {"method": "iscsi_create_initiator_group", "params": {"tag": 1, "initiators": ["ANY"], "netmasks": ["127.0.0.1/32"]}},
            {"method": "iscsi_create_target_node", "params": {"name": IQN, "alias_name": "na",
                "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}], "luns": [{"bdev_name": "NA0", "lun_id": 0}],
                "queue_depth": 32, "disable_chap": true}}]}
    ]});
    let options = TargetOptions {
        runtime: RuntimeConfig {
            cores: vec![ferrite_reactor::available_cores()[0]],
            ..RuntimeConfig::default()
        },
        mem: MemConfig {
            heap_mb: 64,
            small_count: 1024,
            large_count: 64,
            hugepages: false,
        },
        rpc_socket: sock.clone(),
        config: Some(config),
    };
    let target = std::thread::spawn(move || run(options));
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(&sock).is_err() {
        assert!(
            Instant::now() < deadline,
            "the in-process target did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut r = Raw::connect(port, IQN);
    r.login("HeaderDigest=None;DataDigest=None;ImmediateData=Yes;InitialR2T=Yes;MaxRecvDataSegmentLength=262144;");
    let mut buf = vec![0u8; 128 * 1024];
    let data = vec![0x5au8; 128 * 1024];
    let mut itt = 1u32;
    let mut round = |r: &mut Raw, buf: &mut [u8]| {
        // A 4 KiB read, a 4 KiB write with immediate data, a 64 KiB write
        // solicited by R2T (beyond FirstBurstLength).
        let _ = finish_after(r, &mut itt, buf, &data);
    };
    fn finish_after(r: &mut Raw, itt: &mut u32, buf: &mut [u8], data: &[u8]) -> u8 {
        let mut worst = 0;
        for (write, blocks, imm) in [(false, 8u16, 0usize), (true, 8, 4096), (true, 128, 0)] {
            *itt += 1;
            let lba = (*itt % 1000) * 8;
            command(r, *itt, write, lba, blocks, &data[..imm]);
            worst = worst.max(finish(r, *itt, buf, data));
        }
        worst
    }
    // Warm up: unit attention of the new nexus, pools, queues and slabs.
    for _ in 0..300 {
        round(&mut r, &mut buf);
    }
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..2000 {
        round(&mut r, &mut buf);
    }
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.load(Ordering::SeqCst);
    drop(r);
    rpc(&sock, "framework_shutdown");
    let _ = target.join();
    assert_eq!(
        allocs, 0,
        "{allocs} heap allocations over 6000 steady-state iSCSI commands"
    );
}
