//! ferrite's iSCSI target judged by real clients, through the scripts in `test/iscsi/`:
//! libiscsi's conformance suite (`run-test-cu.sh`: every test of the `ALL` family classified
//! passed / failed / skipped, with the URL given twice so that MultipathIO runs, and any skip
//! not allowed by `expected-skips.tsv` failing) and the other clients (`clients.sh`:
//! iscsi-ls, iscsi-inq, iscsi-readcapacity16, qemu-img, qemu-io).
//!
//! Each test starts its own `ferrite-tgt --no-default` with a portal on a free port of
//! 127.0.0.1 (not 3260, so it never waits for the embedded-default tests) and a 1 GiB malloc
//! LUN with 512-byte blocks. To test a target you started yourself instead, set
//! `FERRITE_ISCSI_URL=iscsi://127.0.0.1:PORT/IQN/LUN` (a scratch LUN: everything here writes
//! to it) and run `cargo test -p ferrite-tests --release --test iscsi_conformance --
//! --nocapture`.
//!
//! `classifier_selftest` needs no target: it checks the harness itself with a fake
//! `iscsi-test-cu`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{create_portal_group, require_tools, run};
use ferrite_tests::{repo_root, scratch, Target};

fn script(name: &str) -> PathBuf {
    repo_root().join("test/iscsi").join(name)
}

/// Runs `bash SCRIPT args...` under `timeout LIMIT`, echoing its output; panics with it on a
/// non-zero exit.
fn run_script(name: &str, args: &[&str], limit_secs: u32) {
    let out = Command::new("timeout")
        .args(["-k", "10", &limit_secs.to_string(), "bash"])
        .arg(script(name))
        .args(args)
        .output()
        .expect("timeout and bash run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert_ne!(
        out.status.code(),
        Some(124),
        "{name} {args:?} still ran after {limit_secs} s and was killed:\n{stdout}\n{stderr}"
    );
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// Exports a 1 GiB malloc bdev with 512-byte blocks (tgtd's geometry, and what Read10.Async
/// and Write10.Async assume) as LUN 0 of one target node on a free port, open to every
/// initiator name on 127.0.0.1 (iscsi-test-cu logs in under two names, iscsi-perf and qemu
/// under their own), and returns its URL.
fn setup_iscsi(t: &Target) -> String {
    let iqn = "iqn.2026-11.io.ferrite:conformance";
    t.rpc_ok(&["bdev_malloc_create", "-b", "Conf0", "1024", "512"]);
    let port = create_portal_group(t, 1);
    t.rpc_ok(&["iscsi_create_initiator_group", "1", "ANY", "127.0.0.1/32"]);
    t.rpc_ok(&[
        "iscsi_create_target_node",
        iqn,
        "conformance",
        "Conf0:0",
        "1:1",
        "64",
        "-d",
    ]);
    format!("iscsi://127.0.0.1:{port}/{iqn}/0")
}

/// The URL to test: `$FERRITE_ISCSI_URL`, or a ferrite-tgt started here (kept alive by the
/// returned `Target`).
fn target_url() -> (Option<Target>, String) {
    if let Ok(url) = std::env::var("FERRITE_ISCSI_URL") {
        return (None, url);
    }
    let t = Target::start(&["--no-default", "-s", "1200"]);
    let url = setup_iscsi(&t);
    (Some(t), url)
}

/// One row of run-test-cu.sh's results.tsv.
struct Row {
    test: String,
    outcome: String,
    reason: String,
}

fn read_results(dir: &Path) -> Vec<Row> {
    let path = dir.join("results.tsv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.splitn(4, '\t').collect();
            assert!(f.len() >= 3, "bad row in {}: {line:?}", path.display());
            Row {
                test: format!("{}.{}", f[0], f[1]),
                outcome: f[2].to_string(),
                reason: f.get(3).unwrap_or(&"").to_string(),
            }
        })
        .collect()
}

/// Turns the write protection (MODE SELECT, control mode page SWP) of the LUN on or off.
fn set_swp(url: &str, on: bool) {
    let state = if on { "on" } else { "off" };
    let r = run("iscsi-swp", &["--swp", state, url], &[]);
    r.assert_ok(&format!("iscsi-swp --swp {state}"));
    let r = run("iscsi-swp", &[url], &[]);
    r.assert_ok("iscsi-swp (read SWP)");
    let want = if on { "SWP:1" } else { "SWP:0" };
    assert!(
        r.stdout.contains(want),
        "after --swp {state} expected {want}; {}",
        r.describe()
    );
}

/// Sets SWP off again when a ReadOnly run ends, also when it panics.
struct SwpOff<'a>(&'a str);

impl Drop for SwpOff<'_> {
    fn drop(&mut self) {
        let _ = run("iscsi-swp", &["--swp", "off", self.0], &[]);
    }
}

#[test]
fn classifier_selftest() {
    run_script("selftest.sh", &[], 300);
}

/// The whole ALL family: no failure, and a skip only where expected-skips.tsv allows it.
/// Then the one allowed skip that a LUN setting can lift: ReadOnly.ReadOnlySBC runs against
/// the same LUN write-protected (SWP on) and must pass.
#[test]
fn iscsi_test_cu_all_with_expected_skips() {
    require_tools(&["iscsi-test-cu", "iscsi-swp"]);
    let (_target, url) = target_url();
    let out = scratch("iscsi-test-cu");
    let skips = script("expected-skips.tsv");
    // Against ferrite a whole run takes well under a minute; 15 minutes is a hang.
    run_script(
        "run-test-cu.sh",
        &[
            "--expected-skips",
            skips.to_str().unwrap(),
            &url,
            out.to_str().unwrap(),
        ],
        900,
    );
    let rows = read_results(&out);
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.outcome != "passed" && r.outcome != "skipped")
        .map(|r| format!("{}: {} {}", r.test, r.outcome, r.reason))
        .collect();
    assert!(failed.is_empty(), "failed tests:\n{}", failed.join("\n"));
    // A run that ran nothing must not pass: libiscsi 1.19 lists 230 tests in ALL.
    assert!(
        rows.len() >= 200,
        "only {} tests classified: see {}",
        rows.len(),
        out.display()
    );
    let skipped = rows.iter().filter(|r| r.outcome == "skipped").count();
    println!(
        "iscsi-test-cu ALL: {} passed, 0 failed, {skipped} skipped (all allowed)",
        rows.len() - skipped
    );

    let ro_out = scratch("iscsi-test-cu-readonly");
    set_swp(&url, true);
    {
        let _off = SwpOff(&url);
        run_script(
            "run-test-cu.sh",
            &["-k", "ReadOnly", &url, ro_out.to_str().unwrap()],
            300,
        );
    }
    set_swp(&url, false);
    let ro = read_results(&ro_out);
    assert!(
        !ro.is_empty() && ro.iter().all(|r| r.outcome == "passed"),
        "ReadOnly on a write-protected LUN: expected every test to pass, got:\n{}",
        ro.iter()
            .map(|r| format!("{}: {} {}", r.test, r.outcome, r.reason))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&ro_out);
}

#[test]
fn real_clients_smoke() {
    require_tools(&["iscsi-ls", "iscsi-inq", "iscsi-readcapacity16"]);
    let (_target, url) = target_url();
    run_script("clients.sh", &[&url], 600);
}
