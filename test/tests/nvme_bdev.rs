//! The nvme bdev's RPCs in the real `ferrite-tgt`, on this host, which has no NVMe:
//! every path that is not an NVMe namespace's generic char device is refused with a
//! JSON-RPC error that says what the path is, and the target keeps serving; the
//! passthrough RPC refuses bad parameters and bdevs that are not nvme bdevs.
//!
//! Everything that needs a namespace (I/O, identify, iSCSI export, hot removal) runs in
//! the VM test bed: `test/vm/nvme.sh`.

use std::process::Command;

use ferrite_tests::{refused, scratch, Target};

/// An admin Identify Controller command (opcode 6, CNS 1 in CDW10), URL-safe base64.
fn identify_controller_b64() -> String {
    let mut sqe = [0u8; 64];
    sqe[0] = 0x06;
    sqe[40] = 0x01;
    let out = Command::new("python3")
        .args([
            "-c",
            "import base64,sys; print(base64.urlsafe_b64encode(bytes.fromhex(sys.argv[1])).decode())",
            &sqe.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        ])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn paths_that_are_not_nvme_namespaces_are_refused() {
    let t = Target::start(&["--no-default", "-s", "256"]);
    let file = scratch("nvme-regular.img");
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    let file = file.to_str().unwrap();

    refused(
        &t,
        &["bdev_nvme_create", "/nonexistent/ng9n1", "N0"],
        -22,
        "No such file",
    );
    refused(
        &t,
        &["bdev_nvme_create", file, "N0"],
        -22,
        "is not a character device",
    );
    refused(
        &t,
        &["bdev_nvme_create", "/dev/null", "N0"],
        -22,
        "not an NVMe generic char device",
    );
    refused(
        &t,
        &["bdev_nvme_create", "/dev/shm", "N0"],
        -22,
        "is not a character device",
    );
    // A block device node (the check needs no medium behind it).
    let dev = first_block_device().expect("a block device node in /dev (loop devices)");
    refused(
        &t,
        &["bdev_nvme_create", &dev, "N0"],
        -22,
        "is a block device",
    );
    refused(
        &t,
        &["call", "bdev_nvme_create", r#"{"name": "N0"}"#],
        -32602,
        "filename",
    );
    refused(
        &t,
        &[
            "call",
            "bdev_nvme_create",
            r#"{"name": "N0", "filename": "/dev/ng0n1", "bogus": 1}"#,
        ],
        -32602,
        "bogus",
    );
    refused(&t, &["bdev_nvme_delete", "N0"], -19, "does not exist");

    // Nothing was registered by any of that.
    assert_eq!(t.rpc_ok(&["bdev_get_bdevs"]), serde_json::json!([]));
}

#[test]
fn send_cmd_checks_its_parameters_and_the_bdev() {
    let t = Target::start(&["--no-default", "-s", "256"]);
    t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "8", "512"]);
    let id = identify_controller_b64();
    assert_eq!(id.len(), 88, "64 bytes in base64: {id}");
    let base = [
        "bdev_nvme_send_cmd",
        "-t",
        "admin",
        "-r",
        "c2h",
        "-D",
        "4096",
    ];
    let with = |name: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        v.extend(["-n".to_string(), name.to_string()]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>, code: i64, needle: &str| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&t, &a, code, needle);
    };
    run(with("Nope", &["-c", &id]), -19, "does not exist");
    run(with("M0", &["-c", &id]), -19, "not a nvme bdev");
    run(with("M0", &["-c", "BgA="]), -22, "an NVMe command is 64");
    run(with("M0", &["-c", "!!!"]), -22, "not URL-safe base64");
    run(
        with("M0", &["-c", &id, "-m", "AAAA"]),
        -22,
        "metadata is not supported",
    );
    refused(
        &t,
        &[
            "call",
            "bdev_nvme_send_cmd",
            &format!(
                r#"{{"name": "M0", "cmd_type": "vendor", "data_direction": "c2h", "cmdbuf": "{id}"}}"#
            ),
        ],
        -22,
        "neither admin nor io",
    );
    refused(
        &t,
        &[
            "call",
            "bdev_nvme_send_cmd",
            &format!(
                r#"{{"name": "M0", "cmd_type": "io", "data_direction": "both", "cmdbuf": "{id}"}}"#
            ),
        ],
        -22,
        "neither c2h nor h2c",
    );
}

/// Some block device node in /dev.
fn first_block_device() -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    std::fs::read_dir("/dev")
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_ok_and(|t| t.is_block_device()))
        .map(|e| e.path().display().to_string())
}
