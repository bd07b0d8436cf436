//! The real ferrite-tgt driven through the real rpc.py: bdev life cycle, bad
//! input answered with JSON-RPC errors while the target keeps serving, and
//! save_config → --json round trips.

use ferrite_tests::{scratch, Target};
use serde_json::Value;

fn names(t: &Target) -> Vec<String> {
    let v = t.rpc_ok(&["bdev_get_bdevs"]);
    v.as_array()
        .expect("a list")
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts an rpc.py call failed with `code` and a message containing `needle`,
/// and that the target still answers.
fn refused(t: &Target, args: &[&str], code: i64, needle: &str) {
    let out = t.rpc(args);
    assert!(!out.ok(), "{args:?} should fail; got {}", out.stdout);
    assert!(
        out.stderr.contains(&format!("\"code\": {code}"))
            || out.stderr.contains(&format!("{code}")),
        "{args:?}: expected code {code} in {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(needle),
        "{args:?}: expected '{needle}' in {}",
        out.stderr
    );
    t.rpc_ok(&["rpc_get_methods"]);
}

#[test]
fn embedded_default_serves_a_1gib_malloc_bdev() {
    let t = Target::start(&["-s", "1100"]);
    let b = t.rpc_ok(&["bdev_get_bdevs", "-b", "Malloc0"]);
    assert_eq!(b[0]["num_blocks"], 2097152);
    assert_eq!(b[0]["block_size"], 512);
    assert_eq!(b[0]["product_name"], "Malloc disk");
}

#[test]
fn bdevs_are_made_listed_and_deleted_through_rpc_py() {
    let t = Target::start(&["--no-default"]);
    assert_eq!(
        t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "8", "512"]),
        "M0"
    );
    assert_eq!(t.rpc_ok(&["bdev_malloc_create", "16", "4096"]), "Malloc0");
    assert_eq!(t.rpc_ok(&["bdev_null_create", "N0", "64", "4096"]), "N0");
    let all = t.rpc_ok(&["bdev_get_bdevs"]);
    let m0 = all
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "M0")
        .unwrap();
    assert_eq!(m0["num_blocks"], 16384);
    assert_eq!(m0["supported_io_types"]["compare_and_write"], true);
    let n0 = t.rpc_ok(&["bdev_get_bdevs", "-b", "N0"]);
    assert_eq!(n0[0]["num_blocks"], 16384);
    let stat = t.rpc_ok(&["bdev_get_iostat", "-b", "M0"]);
    assert_eq!(stat["bdevs"][0]["num_read_ops"], 0);
    assert!(stat["tick_rate"].as_u64().unwrap() > 0);
    t.rpc_ok(&["bdev_malloc_delete", "M0"]);
    t.rpc_ok(&["bdev_null_delete", "N0"]);
    assert_eq!(names(&t), vec!["Malloc0"]);
}

#[test]
fn bad_rpc_input_gets_errors_and_the_target_keeps_serving() {
    let t = Target::start(&["--no-default"]);
    t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "8", "512"]);
    refused(
        &t,
        &["bdev_malloc_create", "-b", "M0", "8", "512"],
        -17,
        "already exists",
    );
    refused(&t, &["bdev_malloc_delete", "Nope"], -19, "does not exist");
    refused(&t, &["bdev_null_delete", "M0"], -19, "not a null bdev");
    refused(&t, &["call", "no_such_method"], -32601, "no_such_method");
    refused(
        &t,
        &[
            "call",
            "bdev_malloc_create",
            r#"{"name":"x","num_blocks":"ten","block_size":512}"#,
        ],
        -32602,
        "invalid type",
    );
    refused(
        &t,
        &[
            "call",
            "bdev_malloc_create",
            r#"{"name":"x","block_size":512}"#,
        ],
        -32602,
        "num_blocks",
    );
    refused(
        &t,
        &[
            "call",
            "bdev_malloc_create",
            r#"{"name":"x","num_blocks":8,"block_size":512,"colour":1}"#,
        ],
        -32602,
        "colour",
    );
    refused(
        &t,
        &["bdev_malloc_create", "-b", "B", "8", "520"],
        -22,
        "block_size",
    );
    refused(
        &t,
        &["bdev_malloc_create", "-b", "Big", "99999999", "4096"],
        -12,
        "arena",
    );
    refused(&t, &["bdev_get_bdevs", "-b", "Nope"], -19, "does not exist");
    assert_eq!(names(&t), vec!["M0"]);
}

#[test]
fn a_bdev_in_use_by_a_vbdev_cannot_be_deleted() {
    let t = Target::start(&["--no-default"]);
    t.rpc_ok(&["bdev_malloc_create", "-b", "Base", "8", "512"]);
    t.rpc_ok(&["bdev_split_create", "Base", "2"]);
    refused(&t, &["bdev_malloc_delete", "Base"], -16, "in use");
    refused(&t, &["bdev_split_create", "Base", "2"], -16, "claimed");
    t.rpc_ok(&["bdev_split_delete", "Base"]);
    t.rpc_ok(&["bdev_malloc_delete", "Base"]);
    assert!(names(&t).is_empty());
}

fn comparable(v: &Value) -> Vec<(String, Value, Value, Value, Value)> {
    let mut out: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["num_blocks"].clone(),
                b["block_size"].clone(),
                b["uuid"].clone(),
                b["module"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn save_config_round_trips_through_json() {
    let t = Target::start(&["--no-default"]);
    t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "16", "512"]);
    t.rpc_ok(&["bdev_malloc_create", "-b", "M1", "8", "4096"]);
    t.rpc_ok(&["bdev_null_create", "N0", "32", "512"]);
    t.rpc_ok(&["bdev_split_create", "M0", "4"]);
    t.rpc_ok(&[
        "bdev_delay_create",
        "-b",
        "M1",
        "-d",
        "D1",
        "-r",
        "10",
        "-t",
        "20",
        "-w",
        "30",
        "-n",
        "40",
    ]);
    t.rpc_ok(&["bdev_error_create", "N0"]);
    let before = t.rpc_ok(&["bdev_get_bdevs"]);
    let file = scratch("config").with_extension("json");
    let out = t.rpc(&["save_config", "-o", file.to_str().unwrap()]);
    assert!(out.ok(), "{}", out.stderr);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    drop(t);

    let t2 = Target::start(&["--json", file.to_str().unwrap()]);
    let after = t2.rpc_ok(&["bdev_get_bdevs"]);
    assert_eq!(comparable(&before), comparable(&after));
    let delay = after
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "D1")
        .unwrap();
    assert_eq!(
        delay["driver_specific"]["delay"]["avg_read_latency"], 10,
        "{delay}"
    );
    // What the restored target saves is what it was given.
    assert_eq!(t2.rpc_ok(&["save_config"]), saved);
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_bad_config_fails_fast_naming_the_method_and_parameter() {
    let file = scratch("badconfig").with_extension("json");
    std::fs::write(
        &file,
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_malloc_create","params":{"name":"A","num_blocks":16,"block_size":512}},
            {"method":"bdev_malloc_create","params":{"name":"B","num_blocks":16}}]}]}"#,
    )
    .unwrap();
    let sock = scratch("sock");
    let mut t = Target::spawn(&["--json", file.to_str().unwrap()], &sock);
    let st = t.wait_exit(std::time::Duration::from_secs(30));
    assert!(!st.success());
    let log = t.log_text();
    assert!(
        log.contains("bdev_malloc_create") && log.contains("block_size"),
        "{log}"
    );
    assert!(!sock.exists(), "a failed start left its socket behind");

    std::fs::write(&file, "{\"subsystems\": 3}").unwrap();
    let mut t = Target::spawn(&["--json", file.to_str().unwrap()], &sock);
    assert!(!t.wait_exit(std::time::Duration::from_secs(30)).success());
    assert!(t.log_text().contains("subsystems"), "{}", t.log_text());

    let mut t = Target::spawn(&["--json", "/nonexistent/x.json"], &sock);
    assert!(!t.wait_exit(std::time::Duration::from_secs(30)).success());
    assert!(
        t.log_text().contains("/nonexistent/x.json"),
        "{}",
        t.log_text()
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_taken_socket_is_refused_and_the_first_target_keeps_serving() {
    let t = Target::start(&["--no-default"]);
    let mut second = Target::spawn(&["--no-default"], &t.sock);
    assert!(!second
        .wait_exit(std::time::Duration::from_secs(30))
        .success());
    assert!(
        second.log_text().contains("in use"),
        "{}",
        second.log_text()
    );
    t.rpc_ok(&["bdev_malloc_create", "-b", "Still", "8", "512"]);
}

#[test]
fn rpc_py_says_clearly_when_no_target_runs() {
    let out = ferrite_tests::rpc_py(&scratch("nothing"), &["bdev_get_bdevs"]);
    assert!(!out.ok());
    assert!(out.stderr.contains("not running"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
}

#[test]
fn sigterm_and_framework_shutdown_stop_the_target_cleanly() {
    let mut t = Target::start(&["-s", "1100"]);
    t.rpc_ok(&["bdev_split_create", "Malloc0", "2"]);
    assert!(
        t.signal_and_wait(libc::SIGTERM).success(),
        "{}",
        t.log_text()
    );
    assert!(!t.sock.exists());

    let mut t = Target::start(&["--no-default"]);
    t.rpc_ok(&["bdev_null_create", "N", "8", "512"]);
    t.rpc_ok(&["framework_shutdown"]);
    assert!(t.wait_exit(std::time::Duration::from_secs(30)).success());
    assert!(!t.sock.exists());

    let mut t = Target::start(&["--no-default"]);
    assert!(t.signal_and_wait(libc::SIGINT).success());
}
