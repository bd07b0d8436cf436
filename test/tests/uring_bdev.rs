//! The uring bdev in the real `ferrite-tgt` and `ferrite-perf`, on a file in tmpfs and on
//! a file in ext4 over a loop device (O_DIRECT on both), and on the loop device itself:
//!
//! - rpc.py life cycle: create, what `bdev_get_bdevs` says, bad input answered with
//!   JSON-RPC errors while the target keeps serving, rescan after the file grew,
//!   save_config → `--json` round trip;
//! - `ferrite-perf bdev -w verify` at several block sizes, I/O sizes and depths;
//! - exported over iSCSI: qemu-io writes with FUA and with a flush, discards, the target is
//!   killed with SIGKILL and started again from its saved config, and the data reads back
//!   (the discarded range as zeros); qemu-img compare against the image written through it;
//!   a subset of libiscsi's iscsi-test-cu passes against the LUN.
//!
//! Loop devices and mounts need root, as the rest of the test bed does.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{create_portal_group, require_tools, run};
use ferrite_tests::{binary, refused, repo_root, scratch, Target};
use serde_json::{json, Value};

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "loop devices and mounts need root");
}

/// A sparse file of `bytes`, removed on drop.
struct Sparse(PathBuf);

impl Sparse {
    fn new(path: PathBuf, bytes: u64) -> Sparse {
        let f = std::fs::File::create(&path).expect("create file");
        f.set_len(bytes).expect("size file");
        Sparse(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Sparse {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A loop device over an image file, detached on drop.
struct Loop {
    dev: String,
    _image: Sparse,
}

impl Loop {
    fn new(tag: &str, bytes: u64, sector_size: u32) -> Loop {
        require_root();
        let image = Sparse::new(scratch(&format!("{tag}.img")), bytes);
        let dev = sh(
            "losetup",
            &[
                "-f",
                "--show",
                "--sector-size",
                &sector_size.to_string(),
                image.path(),
            ],
        );
        Loop { dev, _image: image }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// ext4 on a loop device, mounted on a scratch directory; unmounted on drop.
struct Ext4 {
    dir: PathBuf,
    _dev: Loop,
}

impl Ext4 {
    fn new(tag: &str) -> Ext4 {
        let dev = Loop::new(tag, 1 << 30, 512);
        sh("mkfs.ext4", &["-q", "-F", &dev.dev]);
        let dir = scratch(&format!("{tag}-mnt"));
        std::fs::create_dir_all(&dir).unwrap();
        sh("mount", &[&dev.dev, dir.to_str().unwrap()]);
        Ext4 { dir, _dev: dev }
    }

    /// A file of `bytes` on this file system, allocated (not sparse) like a disk image.
    fn file(&self, name: &str, bytes: u64) -> PathBuf {
        let p = self.dir.join(name);
        sh(
            "fallocate",
            &["-l", &bytes.to_string(), p.to_str().unwrap()],
        );
        p
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        // A killed target's rings let go of their files a moment after it exits (the
        // kernel tears io_uring instances down in the background): retry a while.
        for _ in 0..100 {
            let quiet = Command::new("umount")
                .arg(&self.dir)
                .stderr(std::process::Stdio::null())
                .status();
            if quiet.is_ok_and(|s| s.success()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A tmpfs file of `bytes`.
fn shm_file(tag: &str, bytes: u64) -> Sparse {
    Sparse::new(
        PathBuf::from(format!("/dev/shm/ferrite-{tag}-{}", std::process::id())),
        bytes,
    )
}

#[test]
fn uring_bdev_through_rpc_py_bad_input_rescan_and_save_config() {
    let f = shm_file("rpc", 8 << 20);
    let odd = shm_file("odd", (8 << 20) + 512);
    let lo = Loop::new("uring-lbs4k", 16 << 20, 4096);
    let t = Target::start(&["--no-default", "-s", "256"]);

    assert_eq!(
        t.rpc_ok(&["bdev_uring_create", f.path(), "U0", "4096"]),
        "U0"
    );
    let b = &t.rpc_ok(&["bdev_get_bdevs", "-b", "U0"])[0];
    assert_eq!(b["module"], "uring");
    assert_eq!(b["num_blocks"], 2048);
    assert_eq!(b["block_size"], 4096);
    let u = &b["driver_specific"]["uring"];
    assert_eq!(u["filename"], f.path());
    assert_eq!(u["o_direct"], true, "{b}");
    assert_eq!(b["supported_io_types"]["unmap"], true);
    assert_eq!(b["supported_io_types"]["write_zeroes"], true);
    assert_eq!(b["supported_io_types"]["compare_and_write"], true);

    // The loop device with 4 KiB logical blocks: its block size by default, and a
    // smaller one refused.
    assert_eq!(t.rpc_ok(&["bdev_uring_create", &lo.dev, "L0"]), "L0");
    let l = &t.rpc_ok(&["bdev_get_bdevs", "-b", "L0"])[0];
    assert_eq!(l["block_size"], 4096);
    assert_eq!(l["num_blocks"], 4096);
    assert_eq!(l["driver_specific"]["uring"]["block_device"], true);
    assert_eq!(l["driver_specific"]["uring"]["o_direct"], true);

    refused(
        &t,
        &["bdev_uring_create", &lo.dev, "L1", "512"],
        -22,
        "logical block size is 4096",
    );
    refused(
        &t,
        &["bdev_uring_create", "/nonexistent/disk.img", "X0"],
        -22,
        "No such file",
    );
    refused(
        &t,
        &["bdev_uring_create", "/dev/shm", "X1"],
        -22,
        "is a directory",
    );
    refused(
        &t,
        &["bdev_uring_create", odd.path(), "X2", "4096"],
        -22,
        "not a multiple of block_size",
    );
    refused(
        &t,
        &["bdev_uring_create", f.path(), "X3", "1536"],
        -22,
        "block_size 1536",
    );
    refused(
        &t,
        &["bdev_uring_create", f.path(), "U0", "4096"],
        -17,
        "already exists",
    );
    refused(&t, &["bdev_uring_rescan", "nope"], -19, "does not exist");
    refused(
        &t,
        &["call", "bdev_uring_create", r#"{"name": "X4"}"#],
        -32602,
        "filename",
    );

    // Grow the file, rescan.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f.0)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    assert_eq!(t.rpc_ok(&["bdev_uring_rescan", "U0"]), 4096);
    assert_eq!(
        t.rpc_ok(&["bdev_get_bdevs", "-b", "U0"])[0]["num_blocks"],
        4096
    );

    // An exported bdev is not deleted under its initiators.
    create_portal_group(&t, 1);
    t.rpc_ok(&["iscsi_create_initiator_group", "1", "ANY", "127.0.0.1/32"]);
    t.rpc_ok(&[
        "iscsi_create_target_node",
        "u0",
        "",
        "U0:0",
        "1:1",
        "32",
        "-d",
    ]);
    refused(
        &t,
        &["bdev_uring_delete", "U0"],
        -16,
        "delete the target first",
    );

    // save_config → --json: the same bdevs come back.
    let cfg = scratch("uring-config.json");
    t.rpc_ok(&["save_config", "-o", cfg.to_str().unwrap()]);
    let saved: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    let calls: Vec<&Value> = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["subsystem"] == "bdev")
        .flat_map(|s| s["config"].as_array().unwrap())
        .filter(|c| c["method"] == "bdev_uring_create")
        .collect();
    assert_eq!(calls.len(), 2, "{saved}");
    let before = t.rpc_ok(&["bdev_get_bdevs"]);
    drop(t);
    let t2 = Target::start(&["--json", cfg.to_str().unwrap(), "-s", "256"]);
    let after = t2.rpc_ok(&["bdev_get_bdevs"]);
    for name in ["U0", "L0"] {
        let pick = |v: &Value| {
            v.as_array()
                .unwrap()
                .iter()
                .find(|b| b["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("{name} missing in {v}"))
        };
        let (a, b) = (pick(&before), pick(&after));
        for k in ["uuid", "num_blocks", "block_size", "driver_specific"] {
            assert_eq!(a[k], b[k], "{name}.{k}");
        }
    }
    t2.rpc_ok(&["iscsi_delete_target_node", "iqn.2026-11.io.ferrite:u0"]);
    assert_eq!(t2.rpc_ok(&["bdev_uring_delete", "U0"]), true);
    assert_eq!(t2.rpc_ok(&["bdev_uring_delete", "L0"]), true);
    refused(&t2, &["bdev_uring_delete", "U0"], -19, "does not exist");
    let _ = std::fs::remove_file(cfg);
}

/// Runs `ferrite-perf bdev -w verify` on a uring bdev of `file` and checks it passed.
fn verify(file: &str, block_size: u32, io_size: &str, depth: &str) {
    verify_on(file, block_size, io_size, depth, false);
}

/// [`verify`], through the reactor's SQPOLL ring when `sqpoll`.
fn verify_on(file: &str, block_size: u32, io_size: &str, depth: &str, sqpoll: bool) {
    let cfg = scratch("uring-perf.json");
    let c = json!({"subsystems": [{"subsystem": "bdev", "config": [{
        "method": "bdev_uring_create",
        "params": {"name": "U0", "filename": file, "block_size": block_size, "sqpoll": sqpoll},
    }]}]});
    std::fs::write(&cfg, serde_json::to_vec(&c).unwrap()).unwrap();
    let child = Command::new("timeout")
        .args(["60"])
        .arg(binary("ferrite-perf"))
        .args([
            "bdev", "-w", "verify", "-q", depth, "-o", io_size, "-t", "1",
        ])
        .args(["-m", "0x1", "--output", "json", "-s", "64", "-c"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ferrite-perf runs");
    // An SQPOLL ring has a kernel thread `iou-sqp-PID` in the process that made it
    // (ferrite-perf, the child of `timeout`).
    let mut sq_thread = false;
    while !sq_thread && child_running(child.id()) {
        sq_thread = thread_names_under(child.id())
            .iter()
            .any(|n| n.starts_with("iou-sqp"));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("ferrite-perf ends");
    let _ = std::fs::remove_file(&cfg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!(
        "verify on {file}, {block_size}-byte blocks, -o {io_size} -q {depth}{}",
        if sqpoll { ", SQPOLL" } else { "" }
    );
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("O_DIRECT is off"),
        "{what}: O_DIRECT should work here:\n{stderr}"
    );
    if sqpoll {
        assert!(sq_thread, "{what}: no iou-sqp kernel thread was seen");
    }
    let r: Value = serde_json::from_str(&stdout).expect("a JSON report");
    let t = &r["total"];
    assert_eq!(t["fails"], 0, "{what}: {t}");
    assert_eq!(t["miscompares"], 0, "{what}: {t}");
    let job = &r["jobs"][0];
    assert!(
        job["reads"].as_u64().unwrap() > 0 && job["writes"].as_u64().unwrap() > 0,
        "{what}: {job}"
    );
    println!("{what}: {} IOPS", t["iops"]);
}

#[test]
fn ferrite_perf_verify_on_tmpfs_ext4_over_loop_and_a_block_device() {
    require_root();
    let shm = shm_file("perf", 64 << 20);
    let ext4 = Ext4::new("uring-perf");
    let file = ext4.file("disk.img", 64 << 20);
    let lo = Loop::new("uring-perf-dev", 64 << 20, 512);
    for (path, label) in [
        (shm.path(), "tmpfs"),
        (file.to_str().unwrap(), "ext4"),
        (lo.dev.as_str(), "loop"),
    ] {
        for (bs, size, depth) in [
            (512, "512", "1"),
            (512, "4k", "32"),
            (4096, "4k", "128"),
            (4096, "128k", "8"),
            (512, "1M", "4"),
        ] {
            println!("{label}:");
            verify(path, bs, size, depth);
        }
    }
}

/// Whether `pid` has not exited yet (a zombie counts as exited).
fn child_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// The names of the threads of `pid` and of its children's threads.
fn thread_names_under(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    let mut pids = vec![pid.to_string()];
    if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(c.split_whitespace().map(str::to_string));
    }
    for p in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(n) = std::fs::read_to_string(t.path().join("comm")) {
                names.push(n.trim().to_string());
            }
        }
    }
    names
}

/// The SQPOLL ring (a kernel thread polls the submission queue): the same verify runs on
/// tmpfs and on ext4 over a loop device (O_DIRECT).
#[test]
fn ferrite_perf_verify_through_an_sqpoll_ring() {
    require_root();
    let shm = shm_file("perf-sqpoll", 64 << 20);
    let ext4 = Ext4::new("uring-sqpoll");
    let file = ext4.file("disk.img", 64 << 20);
    for path in [shm.path(), file.to_str().unwrap()] {
        for (bs, size, depth) in [(512, "4k", "1"), (4096, "4k", "128"), (4096, "128k", "8")] {
            verify_on(path, bs, size, depth, true);
        }
    }
}

/// `qemu-io -f raw -c CMD... URL`; panics unless every command worked.
fn qemu_io(url: &str, cmds: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    for c in cmds {
        args.extend_from_slice(&["-c", c]);
    }
    args.push(url);
    let r = run("qemu-io", &args, &[]);
    r.assert_ok("qemu-io");
    let text = r.text();
    for bad in ["failed", "error", "Error"] {
        assert!(!text.contains(bad), "qemu-io {cmds:?}: {}", r.describe());
    }
    text
}

/// Exports `bdev` as LUN 0 of target node `node` on a free port; returns the URL.
fn export(t: &Target, bdev: &str, node: &str) -> String {
    let port = create_portal_group(t, 1);
    t.rpc_ok(&["iscsi_create_initiator_group", "1", "ANY", "127.0.0.1/32"]);
    let lun = format!("{bdev}:0");
    t.rpc_ok(&[
        "iscsi_create_target_node",
        node,
        "",
        &lun,
        "1:1",
        "64",
        "-d",
    ]);
    format!("iscsi://127.0.0.1:{port}/iqn.2026-11.io.ferrite:{node}/0")
}

#[test]
fn iscsi_lun_on_uring_keeps_fua_and_flushed_data_across_kill_9() {
    require_tools(&["qemu-io", "qemu-img"]);
    require_root();
    let ext4 = Ext4::new("uring-kill");
    let file = ext4.file("lun.img", 64 << 20);
    let t = Target::start(&["--no-default", "-s", "256"]);
    t.rpc_ok(&["bdev_uring_create", file.to_str().unwrap(), "U0", "512"]);
    let url = export(&t, "U0", "kill");
    let cfg = scratch("uring-kill.json");
    t.rpc_ok(&["save_config", "-o", cfg.to_str().unwrap()]);

    qemu_io(
        &url,
        &[
            "write -P 0xab 0 1M",
            "write -P 0xcd 1M 1M",
            "flush",
            "write -f -P 0xef 2M 1M",
            "write -P 0x11 4M 2M",
            "discard 4M 1M",
        ],
    );
    // SIGKILL: no shutdown path runs.
    let mut t = t;
    let st = t.signal_and_wait(libc::SIGKILL);
    assert!(!st.success());

    let t2 = Target::start(&["--json", cfg.to_str().unwrap(), "-s", "256"]);
    // The portal of the saved config: the same URL.
    qemu_io(
        &url,
        &[
            "read -P 0xab 0 1M",
            "read -P 0xcd 1M 1M",
            "read -P 0xef 2M 1M",
            "read -P 0 4M 1M",
            "read -P 0x11 5M 1M",
        ],
    );
    // The LUN says unmapped blocks read as zeros.
    let cap = run("iscsi-readcapacity16", &[&url], &[]);
    cap.assert_ok("iscsi-readcapacity16");
    assert!(cap.text().contains("LBPME:1"), "{}", cap.describe());
    assert!(cap.text().contains("LBPRZ:1"), "{}", cap.describe());

    // An image written through the LUN compares equal to the source.
    let src = scratch("uring-src.img");
    let data: Vec<u8> = (0..(8 << 20)).map(|i: u32| (i / 4096 * 7) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let s = src.to_str().unwrap();
    let r = run(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", s, &url],
        &[],
    );
    r.assert_ok("qemu-img convert to the LUN");
    let r = run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", s, &url],
        &[],
    );
    r.assert_ok("qemu-img compare");
    assert!(
        r.text().contains("Images are identical"),
        "{}",
        r.describe()
    );
    let _ = std::fs::remove_file(&src);
    drop(t2);
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn iscsi_test_cu_subset_passes_on_a_uring_lun() {
    require_tools(&["iscsi-test-cu"]);
    let f = shm_file("cu", 1 << 30);
    let t = Target::start(&["--no-default", "-s", "512"]);
    t.rpc_ok(&["bdev_uring_create", f.path(), "U0", "512"]);
    let url = export(&t, "U0", "cu");
    let out = scratch("uring-test-cu");
    let script = repo_root().join("test/iscsi/run-test-cu.sh");
    let skips = repo_root().join("test/iscsi/expected-skips.tsv");
    let res = Command::new("timeout")
        .args(["-k", "10", "900", "bash"])
        .arg(&script)
        .arg("--expected-skips")
        .arg(&skips)
        .args(["-k", "@(Read*|Write*|Verify*|Unmap|CompareAndWrite|GetLBAStatus|ReadCapacity16|Prefetch*|OrWrite|SyncCache*)"])
        .arg(&url)
        .arg(&out)
        .output()
        .expect("run-test-cu.sh runs");
    let stdout = String::from_utf8_lossy(&res.stdout);
    println!("{stdout}");
    assert!(
        res.status.success(),
        "iscsi-test-cu on the uring LUN failed ({}):\n{stdout}\n{}",
        res.status,
        String::from_utf8_lossy(&res.stderr)
    );
    let rows = std::fs::read_to_string(Path::new(&out).join("results.tsv")).unwrap();
    let ran = rows.lines().skip(1).count();
    assert!(ran >= 60, "only {ran} tests ran:\n{rows}");
    drop(t);
}
