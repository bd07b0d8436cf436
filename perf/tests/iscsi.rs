//! `ferrite-perf iscsi` against the real `ferrite-tgt` (started here with
//! `--no-default -m 0x1` and configured through the real app/rpc.py): random
//! reads and writes, verify, several sessions, MC/S, CHAP (right and wrong
//! secrets), digests, bad arguments, and a counting allocator proving that the
//! initiator's steady-state I/O allocates nothing.
//!
//! Needs `target/<profile>/ferrite-tgt`: `cargo build -p ferrite-app` first
//! (or set FERRITE_TGT_BIN).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ferrite_perf::iscsi::conn::{ConnSpec, IoConn, IoSession};
use ferrite_perf::iscsi::login::{self, LoginConfig, Window};
use ferrite_perf::iscsi::pdu::Lun;
use ferrite_perf::Workload;
use ferrite_tests::Target;
use serde_json::Value;

const IQN: &str = "iqn.2026-11.io.ferrite:perf-test";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn perf(args: &[&str]) -> Run {
    let out = Command::new("timeout")
        .arg("120")
        .arg(env!("CARGO_BIN_EXE_ferrite-perf"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("ferrite-perf runs");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The initiator's core mask: away from the target's core 0 when there is a
/// core 1.
fn client_mask() -> &'static str {
    if ferrite_reactor::available_cores().contains(&1) {
        "0x2"
    } else {
        "0x1"
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A target serving a 64 MiB malloc LUN 0 (`block_size`) as IQN on a free
/// port; `node_args` go to iscsi_create_target_node (e.g. CHAP flags).
/// Returns the target and the URL.
fn target(block_size: u32, node_args: &[&str], setup: &[&[&str]]) -> (Target, String) {
    let t = Target::start(&["--no-default", "-m", "0x1", "-s", "1200"]);
    let port = free_port();
    for call in setup {
        t.rpc_ok(call);
    }
    t.rpc_ok(&[
        "bdev_malloc_create",
        "-b",
        "P0",
        "64",
        &block_size.to_string(),
    ]);
    t.rpc_ok(&[
        "iscsi_create_portal_group",
        "1",
        &format!("127.0.0.1:{port}"),
    ]);
    t.rpc_ok(&["iscsi_create_initiator_group", "1", "ANY", "127.0.0.1/32"]);
    let mut node = vec!["iscsi_create_target_node", IQN, "perf", "P0:0", "1:1", "64"];
    node.extend_from_slice(node_args);
    t.rpc_ok(&node);
    (t, format!("iscsi://127.0.0.1:{port}/{IQN}/0"))
}

/// Runs `ferrite-perf iscsi -u URL ARGS -m MASK --output json`; returns the
/// run and its report.
fn iscsi_json(url: &str, args: &[&str]) -> (Run, Value) {
    let mut all = vec!["iscsi", "-u", url, "-m", client_mask(), "--output", "json"];
    all.extend_from_slice(args);
    let run = perf(&all);
    let report: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON report ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
            run.code, run.stdout, run.stderr
        )
    });
    (run, report)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

/// Exit 0, I/O done, nothing failed; returns the report.
fn passes(url: &str, args: &[&str], t: &Target) -> Value {
    let (run, r) = iscsi_json(url, args);
    assert_eq!(
        run.code,
        0,
        "{args:?}: stderr: {}\nreport: {r}\ntarget log:\n{}",
        run.stderr,
        t.log_text()
    );
    let total = &r["total"];
    assert!(u(&total["ios"]) > 0, "{total}");
    assert_eq!(u(&total["fails"]), 0, "{r}");
    assert_eq!(u(&total["miscompares"]), 0, "{r}");
    assert_eq!(r["success"], true);
    r
}

#[test]
fn randread_randwrite_and_large_writes_through_r2t() {
    let (t, url) = target(512, &["-d"], &[]);
    let r = passes(
        &url,
        &["-q", "16", "-o", "4k", "-w", "randread", "-t", "1"],
        &t,
    );
    assert_eq!(r["targets"][0]["block_size"], 512);
    assert_eq!(u(&r["targets"][0]["num_blocks"]), 131072);
    let job = &r["jobs"][0];
    assert_eq!(u(&job["reads"]), u(&job["ios"]));
    let r = passes(
        &url,
        &["-q", "16", "-o", "4k", "-w", "randwrite", "-t", "1"],
        &t,
    );
    assert_eq!(u(&r["jobs"][0]["writes"]), u(&r["jobs"][0]["ios"]));
    // 128 KiB writes are more than FirstBurstLength: the rest goes on R2Ts.
    let r = passes(
        &url,
        &["-q", "8", "-o", "128k", "-w", "write", "-t", "1"],
        &t,
    );
    let neg = &r["targets"][0]["negotiated"];
    assert!(u(&neg["first_burst_length"]) < 128 * 1024, "{neg}");
    passes(
        &url,
        &[
            "-q", "8", "-o", "64k", "-w", "randrw", "-M", "70", "-t", "1",
        ],
        &t,
    );
}

#[test]
fn verify_passes_on_512_and_4096_byte_blocks() {
    for bs in [512, 4096] {
        let (t, url) = target(bs, &["-d"], &[]);
        let r = passes(
            &url,
            &["-q", "16", "-o", "8k", "-w", "verify", "-t", "1"],
            &t,
        );
        let job = &r["jobs"][0];
        let (reads, writes) = (u(&job["reads"]), u(&job["writes"]));
        assert!(
            writes > 0 && reads + 16 >= writes && reads <= writes,
            "{job}"
        );
    }
}

#[test]
fn two_sessions_share_the_lun_in_disjoint_verify_ranges() {
    let (t, url) = target(512, &["-d"], &[]);
    let r = passes(
        &url,
        &["-S", "2", "-q", "8", "-o", "16k", "-w", "verify", "-t", "1"],
        &t,
    );
    let jobs = r["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{r}");
    for j in jobs {
        assert!(u(&j["ios"]) > 0, "{j}");
    }
    assert_eq!(r["sessions"], 2);
    let r = passes(
        &url,
        &[
            "-S", "2", "-q", "8", "-o", "4k", "-w", "randread", "-t", "1",
        ],
        &t,
    );
    assert_eq!(r["jobs"].as_array().unwrap().len(), 2);
}

#[test]
fn mcs_two_connections_per_session() {
    let (t, url) = target(512, &["-d"], &[]);
    let r = passes(
        &url,
        &[
            "-C", "2", "-q", "8", "-o", "4k", "-w", "randread", "-t", "2",
        ],
        &t,
    );
    let jobs = r["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{r}");
    for j in jobs {
        assert!(u(&j["ios"]) > 100, "{j}");
    }
    assert_eq!(u(&r["targets"][0]["negotiated"]["max_connections"]), 2);
    passes(
        &url,
        &[
            "-C", "2", "-S", "2", "-q", "4", "-o", "8k", "-w", "verify", "-t", "1",
        ],
        &t,
    );
}

#[test]
fn chap_right_secret_passes_wrong_secret_fails_clearly() {
    let auth: &[&str] = &[
        "iscsi_create_auth_group",
        "1",
        "-c",
        "user:perfuser secret:perfsecret1234",
    ];
    let (t, url) = target(512, &["-r", "-g", "1"], &[auth]);
    passes(
        &url,
        &[
            "-q",
            "8",
            "-o",
            "4k",
            "-w",
            "verify",
            "-t",
            "1",
            "--chap-user",
            "perfuser",
            "--chap-secret",
            "perfsecret1234",
        ],
        &t,
    );
    // The URL form.
    let with_secret = url.replace("iscsi://", "iscsi://perfuser%perfsecret1234@");
    passes(
        &with_secret,
        &["-q", "4", "-o", "4k", "-w", "randread", "-t", "1"],
        &t,
    );

    let wrong = perf(&[
        "iscsi",
        "-u",
        &url,
        "-q",
        "8",
        "-o",
        "4k",
        "-w",
        "randread",
        "-t",
        "1",
        "-m",
        client_mask(),
        "--chap-user",
        "perfuser",
        "--chap-secret",
        "not-the-secret",
    ]);
    assert_eq!(wrong.code, 1, "stderr: {}", wrong.stderr);
    assert!(
        wrong.stderr.contains("authentication failure")
            && wrong.stderr.contains("CHAP authentication failed"),
        "{}",
        wrong.stderr
    );
    assert_eq!(wrong.stderr.lines().count(), 1, "{}", wrong.stderr);
    let none = perf(&[
        "iscsi",
        "-u",
        &url,
        "-q",
        "8",
        "-o",
        "4k",
        "-w",
        "randread",
        "-t",
        "1",
        "-m",
        client_mask(),
    ]);
    assert_eq!(none.code, 1, "stderr: {}", none.stderr);
    assert!(none.stderr.contains("may require CHAP"), "{}", none.stderr);
}

#[test]
fn header_digest() {
    let (t, url) = target(512, &["-d", "-H"], &[]);
    let r = passes(
        &url,
        &[
            "-q",
            "8",
            "-o",
            "8k",
            "-w",
            "verify",
            "-t",
            "1",
            "--header-digest",
        ],
        &t,
    );
    assert_eq!(r["targets"][0]["negotiated"]["header_digest"], true);
    // Without --header-digest the target's requirement still wins.
    let r = passes(
        &url,
        &["-q", "8", "-o", "4k", "-w", "randread", "-t", "1"],
        &t,
    );
    assert_eq!(r["targets"][0]["negotiated"]["header_digest"], true);
}

#[test]
fn data_digest() {
    let (t, url) = target(512, &["-d", "-D"], &[]);
    let r = passes(
        &url,
        &[
            "-q",
            "8",
            "-o",
            "64k",
            "-w",
            "verify",
            "-t",
            "1",
            "--data-digest",
            "--header-digest",
        ],
        &t,
    );
    assert_eq!(r["targets"][0]["negotiated"]["data_digest"], true);
}

#[test]
fn text_output_has_progress_table_and_total() {
    let (_t, url) = target(512, &["-d"], &[]);
    let run = perf(&[
        "iscsi",
        "-u",
        &url,
        "-q",
        "4",
        "-o",
        "4k",
        "-w",
        "randread",
        "-t",
        "2",
        "-m",
        client_mask(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.stdout;
    assert!(
        out.starts_with("Running randread, queue depth 4 per connection"),
        "{out}"
    );
    assert!(
        out.contains("[   1.0 s]") && out.contains("[   2.0 s]"),
        "{out}"
    );
    assert!(out.contains("perf-test/0 s0c0 @ core"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("Total")), "{out}");
    assert!(out.contains("ns of busy time per I/O"), "{out}");
}

#[test]
fn bad_arguments_exit_2() {
    let url = format!("iscsi://127.0.0.1:{}/{IQN}/0", free_port());
    let base = ["-q", "4", "-o", "4k", "-w", "randread", "-t", "1"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (base.to_vec(), "--url"),
        (
            vec![
                "-u",
                "http://x/y/0",
                "-q",
                "4",
                "-o",
                "4k",
                "-w",
                "randread",
                "-t",
                "1",
            ],
            "not an iSCSI URL",
        ),
        (
            vec![
                "-u", &url, "-q", "0", "-o", "4k", "-w", "randread", "-t", "1",
            ],
            "queue depth",
        ),
        (
            vec![
                "-u", &url, "-q", "4", "-o", "1000", "-w", "randread", "-t", "1",
            ],
            "multiple of 512",
        ),
        (
            vec!["-u", &url, "-q", "4", "-o", "4k", "-w", "unmap", "-t", "1"],
            "not one for iSCSI",
        ),
        (
            vec!["-u", &url, "-q", "4", "-o", "4k", "-w", "bogus", "-t", "1"],
            "unknown workload",
        ),
        (
            vec![
                "-u", &url, "-q", "4", "-o", "4k", "-w", "randread", "-t", "0",
            ],
            "run time",
        ),
        (
            vec![
                "-u", &url, "-q", "4", "-o", "4k", "-w", "randread", "-t", "1", "-C", "0",
            ],
            "connections",
        ),
        (
            vec![
                "-u", &url, "-q", "4", "-o", "4k", "-w", "randread", "-t", "1", "-S", "0",
            ],
            "sessions",
        ),
        (
            vec![
                "-u", &url, "-q", "4", "-o", "4k", "-w", "randread", "-t", "1", "-M", "101",
            ],
            "above 100",
        ),
        (
            vec![
                "-u",
                &url,
                "-q",
                "4",
                "-o",
                "4k",
                "-w",
                "randread",
                "-t",
                "1",
                "--chap-user",
                "x",
            ],
            "go together",
        ),
        (
            vec![
                "-u", &url, "-q", "4", "-o", "4k", "-w", "randread", "-t", "1", "-m", "0x0",
            ],
            "core mask",
        ),
        (
            vec![
                "-u", &url, "-u", &url, "-q", "4", "-o", "4k", "-w", "randread", "-t", "1",
            ],
            "named twice",
        ),
        (
            vec![
                "-u", &url, "-q", "4", "-o", "4k", "-w", "randread", "-t", "1", "--bogus",
            ],
            "--bogus",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["iscsi"];
        all.extend_from_slice(&args);
        let run = perf(&all);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(needle),
            "{args:?}: expected '{needle}' in {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
    // Nothing listens there: a connection failure is a failed run (1), not a usage error.
    let run = perf(&[
        "iscsi", "-u", &url, "-q", "4", "-o", "4k", "-w", "randread", "-t", "1",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
}

#[test]
fn io_size_must_be_whole_blocks_of_the_lun() {
    let (_t, url) = target(4096, &["-d"], &[]);
    let run = perf(&[
        "iscsi",
        "-u",
        &url,
        "-q",
        "4",
        "-o",
        "1k",
        "-w",
        "randread",
        "-t",
        "1",
        "-m",
        client_mask(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("block size 4096"), "{}", run.stderr);
}

// ---- no allocation in the steady state ----

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNT_HERE: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    if COUNT_HERE.try_with(|c| c.get()).unwrap_or(false) {
        ALLOCS.fetch_add(1, Relaxed);
    }
}

// SAFETY: forwards to the system allocator; counting touches no heap memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_initiator_io_allocates_nothing() {
    let (t, url) = target(512, &["-d"], &[]);
    let url = ferrite_perf::iscsi::IscsiUrl::parse(&url).unwrap();
    let cfg = LoginConfig {
        initiator_name: ferrite_perf::iscsi::DEFAULT_INITIATOR_NAME.into(),
        target_name: url.target.clone(),
        chap: None,
        header_digest: true,
        data_digest: false,
        connections: 1,
    };
    let mut window = Window {
        cmd_sn: 1,
        exp_cmd_sn: 1,
        max_cmd_sn: 1,
    };
    let isid = [0x80, 1, 2, 3, 0, 0];
    let mut lead = login::login(&url.addr(), &cfg, isid, 0, 0, &mut window, "test".into())
        .unwrap_or_else(|e| panic!("{e}\n{}", t.log_text()));
    let lun = Lun::from_index(0);
    let (bs, blocks) = login::read_capacity(&mut lead.conn, &mut window, lun).unwrap();
    let c = lead.conn;
    let spec = ConnSpec {
        label: "alloc".into(),
        workload: Workload::RandRw,
        depth: 16,
        io_size: 8192,
        read_pct: 50,
        seed: 7,
        block_size: bs as usize,
        range: (0, blocks),
        lun,
    };
    let (cid, exp, limits) = (c.cid, c.exp_stat_sn, c.limits);
    let conn = IoConn::new(spec, c.stream, cid, 0, limits, &lead.negotiated, exp).unwrap();
    let shared = conn.shared();
    let mut session = IoSession::new(window, vec![conn], lead.tsih, 0, 0);
    // Polled by hand on this thread (no reactor), so the count is this thread's.
    session.install();
    session.start();
    let run_until = |session: &mut IoSession, n: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while shared.ios.load(Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "stalled at {}",
                shared.ios.load(Relaxed)
            );
            session.poll();
        }
    };
    run_until(&mut session, 2_000);
    let from = shared.ios.load(Relaxed);
    COUNT_HERE.with(|c| c.set(true));
    run_until(&mut session, from + 20_000);
    COUNT_HERE.with(|c| c.set(false));
    let counted = ALLOCS.load(Relaxed);
    // Control: the counter sees an allocation on this thread.
    COUNT_HERE.with(|c| c.set(true));
    let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(8));
    COUNT_HERE.with(|c| c.set(false));
    drop(v);
    assert_eq!(ALLOCS.load(Relaxed), counted + 1);
    assert_eq!(shared.fails.load(Relaxed), 0);
    assert_eq!(counted, 0, "{counted} allocations over 20000 I/Os");
    session.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shared.drained.load(Relaxed) && Instant::now() < deadline {
        session.poll();
    }
    assert!(shared.drained.load(Relaxed));
}
