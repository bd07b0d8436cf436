//! ferrite's iSCSI target judged by real clients, through the scripts in `test/iscsi/`:
//! libiscsi's conformance suite (`run-test-cu.sh`, every test classified passed / failed /
//! skipped, unexplained skips failing against `expected-skips.tsv`) and the other clients
//! (`clients.sh`: iscsi-ls, iscsi-inq, iscsi-readcapacity16, qemu-img, qemu-io).
//!
//! The tests that need ferrite's iSCSI target are `#[ignore]`d until it exists. To run them
//! against a target you started yourself, set `FERRITE_ISCSI_URL=iscsi://127.0.0.1:PORT/IQN/LUN`
//! and `cargo test -p ferrite-tests --test iscsi_conformance -- --ignored --nocapture`;
//! without it they start `ferrite-tgt --no-default` and configure a LUN through
//! `setup_iscsi` below (rpc.py's iscsi_* commands: check them when the ignores come off).
//!
//! `classifier_selftest` needs no target: it checks the harness itself with a fake
//! `iscsi-test-cu` and runs always.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use ferrite_tests::{repo_root, scratch, Target};

fn script(name: &str) -> PathBuf {
    repo_root().join("test/iscsi").join(name)
}

/// Runs `bash SCRIPT args...`, echoing its output; panics with it on a non-zero exit.
fn run_script(name: &str, args: &[&str]) {
    let out = Command::new("bash")
        .arg(script(name))
        .args(args)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Exports a 1 GiB malloc bdev with 512-byte blocks (tgtd's geometry, and what
/// Read10.Async and Write10.Async assume) as LUN 0 of one target node on `port`, open to
/// every initiator name (iscsi-test-cu logs in under two, iscsi-perf and qemu under their
/// own), and returns its URL. Uses rpc.py's SPDK-style iscsi_* commands as the iSCSI work
/// in progress defines them (see test/tests/iscsi_rpc.rs).
fn setup_iscsi(t: &Target, port: u16) -> String {
    let iqn = "iqn.2026-11.io.ferrite:conformance";
    t.rpc_ok(&["bdev_malloc_create", "-b", "Conf0", "1024", "512"]);
    t.rpc_ok(&[
        "iscsi_create_portal_group",
        "1",
        &format!("127.0.0.1:{port}"),
    ]);
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
    let url = setup_iscsi(&t, free_port());
    (Some(t), url)
}

#[test]
fn classifier_selftest() {
    run_script("selftest.sh", &[]);
}

#[test]
#[ignore = "needs ferrite's iSCSI target (transport/src/iscsi); un-ignore when it serves"]
fn iscsi_test_cu_all_with_expected_skips() {
    let (_target, url) = target_url();
    let out = scratch("iscsi-test-cu");
    let skips = script("expected-skips.tsv");
    run_script(
        "run-test-cu.sh",
        &[
            "--expected-skips",
            skips.to_str().unwrap(),
            &url,
            out.to_str().unwrap(),
        ],
    );
}

#[test]
#[ignore = "needs ferrite's iSCSI target (transport/src/iscsi); un-ignore when it serves"]
fn real_clients_smoke() {
    let (_target, url) = target_url();
    run_script("clients.sh", &[&url]);
}
