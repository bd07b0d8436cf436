//! The iSCSI target model of the real ferrite-tgt driven through the real
//! rpc.py: the embedded default, the life cycle of every object, bad input
//! answered with JSON-RPC errors while the target keeps serving, bdevs in use
//! by target nodes, and save_config → --json round trips.
//!
//! Portals use ports derived from the process id and the test's thread, so that
//! tests running side by side (the transport listens on them) do not collide.

use ferrite_tests::{refused, scratch, Target};
use serde_json::{json, Value};

const NODE: &str = "iqn.2026-11.io.ferrite";

/// A port for portal `n` of this test (each test runs on its own thread).
fn port(n: u16) -> String {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT_TEST: AtomicU16 = AtomicU16::new(0);
    thread_local! {
        static SLOT: u16 = NEXT_TEST.fetch_add(1, Ordering::Relaxed) % 8;
    }
    let slot = SLOT.with(|s| *s);
    (20000 + (std::process::id() % 500) as u16 * 64 + slot * 8 + n).to_string()
}

fn portal(n: u16) -> String {
    format!("127.0.0.1:{}", port(n))
}

/// Two malloc bdevs, auth group 1, portal groups 1 (public) and 2 (private,
/// created with -w), initiator groups 1 and 2, target nodes disk0 (two LUNs,
/// pg 1 and 2) and disk1 (CHAP, digests).
fn build_model(t: &Target) {
    t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "8", "512"]);
    t.rpc_ok(&["bdev_malloc_create", "-b", "M1", "8", "4096"]);
    t.rpc_ok(&["bdev_split_create", "M1", "2"]);
    t.rpc_ok(&[
        "iscsi_create_auth_group",
        "1",
        "-c",
        "user:u1 secret:secret1 muser:mu1 msecret:msecret1,user:u2 secret:secret2",
    ]);
    t.rpc_ok(&[
        "iscsi_auth_group_add_secret",
        "1",
        "-u",
        "u3",
        "-s",
        "secret3",
    ]);
    t.rpc_ok(&["iscsi_create_auth_group", "2"]);
    t.rpc_ok(&["iscsi_set_discovery_auth", "-r", "-g", "1"]);
    t.rpc_ok(&["iscsi_create_portal_group", "1", &portal(0)]);
    t.rpc_ok(&[
        "iscsi_create_portal_group",
        "2",
        &format!("{} [::1]:{}", portal(1), port(1)),
        "-p",
        "-w",
    ]);
    t.rpc_ok(&["iscsi_create_initiator_group", "1", "ANY", "127.0.0.1/32"]);
    t.rpc_ok(&[
        "iscsi_create_initiator_group",
        "2",
        "!iqn.2000-01.com.example:bad iqn.2000-01.com.example:good",
        "10.0.0.0/8 [fd00::]/8",
    ]);
    t.rpc_ok(&[
        "iscsi_initiator_group_add_initiators",
        "2",
        "-m",
        "!10.0.0.66",
    ]);
    t.rpc_ok(&[
        "iscsi_create_target_node",
        "disk0",
        "first disk",
        "M0:0",
        "1:1 2:1",
        "32",
    ]);
    t.rpc_ok(&["iscsi_target_node_add_lun", "disk0", "M1p0"]);
    t.rpc_ok(&["iscsi_target_node_add_lun", "disk0", "M1p1", "-i", "7"]);
    t.rpc_ok(&["iscsi_target_node_add_pg_ig_maps", "disk0", "1:2"]);
    t.rpc_ok(&[
        "iscsi_create_target_node",
        &format!("{NODE}:disk1"),
        "",
        "M0:0",
        "1:2",
        "64",
        "-r",
        "-m",
        "-g",
        "1",
        "-H",
        "-D",
    ]);
}

#[test]
fn embedded_default_exports_malloc0_on_loopback() {
    let t = Target::start(&["-s", "1100"]);
    let nodes = t.rpc_ok(&["iscsi_get_target_nodes"]);
    assert_eq!(
        nodes,
        json!([{
            "name": format!("{NODE}:disk0"),
            "alias_name": "ferrite disk0",
            "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
            "luns": [{"bdev_name": "Malloc0", "lun_id": 0}],
            "queue_depth": 128,
            "disable_chap": true,
            "require_chap": false,
            "mutual_chap": false,
            "chap_group": 0,
            "header_digest": false,
            "data_digest": false,
        }])
    );
    assert_eq!(
        t.rpc_ok(&["iscsi_get_portal_groups"]),
        json!([{"tag": 1, "portals": [{"host": "127.0.0.1", "port": "3260"}], "private": false}])
    );
    assert_eq!(
        t.rpc_ok(&["iscsi_get_initiator_groups"]),
        json!([{"tag": 1, "initiators": ["ANY"], "netmasks": ["127.0.0.1/32"]}])
    );
    let opts = t.rpc_ok(&["iscsi_get_options"]);
    assert_eq!(opts["max_queue_depth"], 128);
    assert_eq!(opts["node_base"], NODE);
    assert_eq!(opts["error_recovery_level"], 0);
    assert_eq!(t.rpc_ok(&["iscsi_get_connections"]), json!([]));

    // Malloc0 is exported: deleting it is refused until the target node goes.
    refused(
        &t,
        &["bdev_malloc_delete", "Malloc0"],
        -16,
        &format!("bdev Malloc0 is LUN 0 of iSCSI target node {NODE}:disk0"),
    );
    t.rpc_ok(&["iscsi_delete_target_node", &format!("{NODE}:disk0")]);
    t.rpc_ok(&["bdev_malloc_delete", "Malloc0"]);
    assert_eq!(t.rpc_ok(&["iscsi_get_target_nodes"]), json!([]));
}

#[test]
fn the_model_is_built_shown_and_taken_apart_through_rpc_py() {
    let t = Target::start(&["--no-default"]);
    build_model(&t);

    let nodes = t.rpc_ok(&["iscsi_get_target_nodes"]);
    assert_eq!(nodes.as_array().unwrap().len(), 2);
    assert_eq!(
        nodes[0],
        json!({
            "name": format!("{NODE}:disk0"),
            "alias_name": "first disk",
            "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}, {"pg_tag": 1, "ig_tag": 2},
                           {"pg_tag": 2, "ig_tag": 1}],
            "luns": [{"bdev_name": "M0", "lun_id": 0}, {"bdev_name": "M1p0", "lun_id": 1},
                     {"bdev_name": "M1p1", "lun_id": 7}],
            "queue_depth": 32,
            "disable_chap": false, "require_chap": false, "mutual_chap": false,
            "chap_group": 0, "header_digest": false, "data_digest": false,
        })
    );
    assert_eq!(nodes[1]["name"], format!("{NODE}:disk1"));
    assert!(nodes[1].get("alias_name").is_none(), "no alias, as SPDK");
    assert_eq!(
        (
            &nodes[1]["require_chap"],
            &nodes[1]["mutual_chap"],
            &nodes[1]["chap_group"]
        ),
        (&json!(true), &json!(true), &json!(1))
    );
    assert_eq!(
        (&nodes[1]["header_digest"], &nodes[1]["data_digest"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(
        t.rpc_ok(&["iscsi_get_portal_groups"]),
        json!([
            {"tag": 1, "portals": [{"host": "127.0.0.1", "port": port(0)}], "private": false},
            {"tag": 2, "portals": [{"host": "127.0.0.1", "port": port(1)},
                                   {"host": "[::1]", "port": port(1)}], "private": true},
        ])
    );
    assert_eq!(
        t.rpc_ok(&["iscsi_get_initiator_groups"])[1],
        json!({"tag": 2,
               "initiators": ["!iqn.2000-01.com.example:bad", "iqn.2000-01.com.example:good"],
               "netmasks": ["10.0.0.0/8", "[fd00::]/8", "!10.0.0.66"]})
    );
    assert_eq!(
        t.rpc_ok(&["iscsi_get_auth_groups"]),
        json!([
            {"tag": 1, "secrets": [
                {"user": "u1", "secret": "secret1", "muser": "mu1", "msecret": "msecret1"},
                {"user": "u2", "secret": "secret2"},
                {"user": "u3", "secret": "secret3"}]},
            {"tag": 2, "secrets": []},
        ])
    );
    assert_eq!(
        t.rpc_ok(&["iscsi_get_discovery_auth"]),
        json!({"disable_chap": false, "require_chap": true, "mutual_chap": false, "chap_group": 1})
    );

    // And apart again, in an order the in-use checks allow.
    t.rpc_ok(&["iscsi_start_portal_group", "2"]);
    t.rpc_ok(&["iscsi_target_node_set_auth", "disk1", "-d"]);
    t.rpc_ok(&["iscsi_target_node_remove_pg_ig_maps", "disk0", "2:1 1:2"]);
    t.rpc_ok(&["iscsi_delete_portal_group", "2"]);
    t.rpc_ok(&["iscsi_delete_target_node", "disk1"]);
    t.rpc_ok(&["iscsi_delete_initiator_group", "2"]);
    t.rpc_ok(&["iscsi_delete_target_node", &format!("{NODE}:disk0")]);
    t.rpc_ok(&["iscsi_delete_portal_group", "1"]);
    t.rpc_ok(&["iscsi_delete_initiator_group", "1"]);
    t.rpc_ok(&["iscsi_set_discovery_auth"]);
    t.rpc_ok(&["iscsi_auth_group_remove_secret", "1", "-u", "u2"]);
    t.rpc_ok(&["iscsi_delete_auth_group", "1"]);
    t.rpc_ok(&["iscsi_delete_auth_group", "2"]);
    for get in [
        "iscsi_get_target_nodes",
        "iscsi_get_portal_groups",
        "iscsi_get_initiator_groups",
        "iscsi_get_auth_groups",
    ] {
        assert_eq!(t.rpc_ok(&[get]), json!([]), "{get}");
    }
    // Nothing exports the bdevs any more.
    t.rpc_ok(&["bdev_split_delete", "M1"]);
    t.rpc_ok(&["bdev_malloc_delete", "M0"]);
    let saved = t.rpc_ok(&["save_config"]);
    let iscsi = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "iscsi")
        .unwrap()
        .clone();
    assert_eq!(iscsi["config"], json!([]), "an empty model saves nothing");
}

#[test]
fn bad_iscsi_input_gets_errors_and_the_target_keeps_serving() {
    let t = Target::start(&["--no-default"]);
    build_model(&t);
    let disk0 = format!("{NODE}:disk0");

    // Options: only before portal groups and target nodes, values SPDK allows.
    refused(
        &t,
        &["iscsi_set_options", "-q", "128"],
        -1,
        "before any portal group",
    );

    // Duplicates.
    refused(
        &t,
        &["iscsi_create_portal_group", "1", &portal(5)],
        -17,
        "portal group 1 already exists",
    );
    refused(
        &t,
        &["iscsi_create_portal_group", "3", &portal(0)],
        -17,
        "already in portal group 1",
    );
    refused(
        &t,
        &["iscsi_create_initiator_group", "1", "ANY", "ANY"],
        -17,
        "initiator group 1 already exists",
    );
    refused(
        &t,
        &["iscsi_create_initiator_group", "3", "iqn.a iqn.a", "ANY"],
        -17,
        "iqn.a is already in the group",
    );
    refused(
        &t,
        &["iscsi_create_auth_group", "1"],
        -17,
        "auth group 1 already exists",
    );
    refused(
        &t,
        &["iscsi_auth_group_add_secret", "1", "-u", "u1", "-s", "x"],
        -17,
        "already has a secret for user u1",
    );
    refused(
        &t,
        &["iscsi_create_target_node", "disk0", "", "M0:0", "1:1", "8"],
        -17,
        "already exists",
    );
    refused(
        &t,
        &[
            "iscsi_create_target_node",
            "d9",
            "",
            "M0:0 M1p0:0",
            "1:1",
            "8",
        ],
        -17,
        "LUN 0 is given twice",
    );
    refused(
        &t,
        &["iscsi_target_node_add_lun", "disk0", "M0", "-i", "7"],
        -17,
        "already has LUN 7",
    );
    refused(
        &t,
        &["iscsi_target_node_add_pg_ig_maps", "disk0", "1:1"],
        -17,
        "1:1 is already mapped",
    );

    // Unknown references.
    refused(
        &t,
        &["iscsi_create_target_node", "d9", "", "M0:0", "9:1", "8"],
        -2,
        "portal group 9 does not exist",
    );
    refused(
        &t,
        &["iscsi_create_target_node", "d9", "", "M0:0", "1:9", "8"],
        -2,
        "initiator group 9 does not exist",
    );
    refused(
        &t,
        &[
            "iscsi_create_target_node",
            "d9",
            "",
            "M0:0",
            "1:1",
            "8",
            "-r",
            "-g",
            "9",
        ],
        -2,
        "auth group 9 does not exist",
    );
    refused(
        &t,
        &["iscsi_create_target_node", "d9", "", "Nope:0", "1:1", "8"],
        -19,
        "bdev Nope does not exist",
    );
    refused(
        &t,
        &["iscsi_target_node_add_lun", "disk0", "Nope"],
        -19,
        "bdev Nope does not exist",
    );
    refused(
        &t,
        &["iscsi_target_node_add_lun", "nope", "M0"],
        -2,
        "target node nope does not exist",
    );
    refused(
        &t,
        &["iscsi_delete_target_node", "nope"],
        -2,
        "target node nope does not exist",
    );
    refused(
        &t,
        &["iscsi_set_discovery_auth", "-g", "9"],
        -2,
        "auth group 9 does not exist",
    );
    refused(
        &t,
        &["iscsi_start_portal_group", "9"],
        -2,
        "portal group 9 does not exist",
    );
    refused(
        &t,
        &["iscsi_auth_group_remove_secret", "1", "-u", "nobody"],
        -2,
        "no secret for user nobody",
    );
    refused(
        &t,
        &["iscsi_target_node_remove_pg_ig_maps", "disk0", "2:2"],
        -2,
        "2:2 is not mapped",
    );

    // Bad values.
    refused(
        &t,
        &["iscsi_create_target_node", "d9", "", "M0:1", "1:1", "8"],
        -22,
        "LUN 0 is required",
    );
    refused(
        &t,
        &[
            "iscsi_create_target_node",
            "d9",
            "",
            "M0:0",
            "1:1",
            "8",
            "-m",
        ],
        -22,
        "mutual_chap needs require_chap",
    );
    refused(
        &t,
        &[
            "iscsi_create_target_node",
            "bad_name",
            "",
            "M0:0",
            "1:1",
            "8",
        ],
        -22,
        "contains '_'",
    );
    refused(
        &t,
        &["iscsi_target_node_add_lun", "disk0", "M0", "-i", "16384"],
        -22,
        "lun_id 16384 is out of range 0..=16383",
    );
    refused(
        &t,
        &[
            "call",
            "iscsi_set_discovery_auth",
            r#"{"disable_chap": true, "require_chap": true}"#,
        ],
        -22,
        "disable_chap cannot be combined with require_chap",
    );
    refused(
        &t,
        &[
            "call",
            "iscsi_target_node_set_auth",
            &format!(r#"{{"name": "{disk0}", "disable_chap": true, "mutual_chap": true}}"#),
        ],
        -22,
        "disable_chap cannot be combined with mutual_chap",
    );
    refused(
        &t,
        &["iscsi_create_auth_group", "3", "-c", "secret:s"],
        -22,
        "secrets[0]: user is missing",
    );
    refused(
        &t,
        &[
            "iscsi_auth_group_add_secret",
            "1",
            "-u",
            "u9",
            "-s",
            "s",
            "-m",
            "mu",
        ],
        -22,
        "muser needs msecret",
    );
    refused(
        &t,
        &["iscsi_create_portal_group", "3", "localhost:3260"],
        -22,
        "not a numeric address",
    );
    refused(
        &t,
        &["iscsi_create_portal_group", "3", "127.0.0.1:70000"],
        -22,
        "not a TCP port",
    );
    refused(
        &t,
        &["iscsi_create_portal_group", "0", &portal(6)],
        -22,
        "tag 0 is out of range",
    );
    // An iSER portal on an address RDMA CM cannot listen on (loopback, or no
    // RDMA device at all on the host) fails, and the group's TCP portal
    // listened first is let go again.
    let both = format!("{} {}@iser", portal(6), portal(7));
    let out = t.rpc(&["iscsi_create_portal_group", "3", &both]);
    assert!(!out.ok(), "an iSER portal was accepted: {}", out.stdout);
    assert!(
        out.stderr.contains("iSER portal 127.0.0.1:"),
        "{}",
        out.stderr
    );
    t.rpc_ok(&["iscsi_create_portal_group", "3", &portal(6)]);
    t.rpc_ok(&["iscsi_delete_portal_group", "3"]);
    refused(
        &t,
        &["iscsi_create_initiator_group", "3", "ANY", "10.0.0.0/33"],
        -22,
        "10.0.0.0/33\\\" has a prefix longer than 32 bits",
    );
    refused(
        &t,
        &["iscsi_create_initiator_group", "3", "ANY", "my.host"],
        -22,
        "my.host\\\" is not an address",
    );
    refused(
        &t,
        &["iscsi_initiator_group_remove_initiators", "1", "-n", "ANY"],
        -22,
        "no initiators left",
    );
    refused(
        &t,
        &[
            "call",
            "iscsi_create_portal_group",
            r#"{"tag": 3, "portals": []}"#,
        ],
        -22,
        "at least one portal",
    );
    refused(
        &t,
        &[
            "call",
            "iscsi_create_portal_group",
            r#"{"tag": 3, "portals": [{"host": "127.0.0.1"}]}"#,
        ],
        -32602,
        "port",
    );
    refused(
        &t,
        &[
            "call",
            "iscsi_create_target_node",
            r#"{"name": "x", "luns": [], "pg_ig_maps": [], "queue_depth": 1, "colour": 1}"#,
        ],
        -32602,
        "colour",
    );

    // In use.
    refused(
        &t,
        &["iscsi_delete_portal_group", "1"],
        -16,
        &format!("in use by target node {disk0}"),
    );
    refused(
        &t,
        &["iscsi_delete_initiator_group", "2"],
        -16,
        "in use by target node",
    );
    refused(
        &t,
        &["iscsi_delete_auth_group", "1"],
        -16,
        "in use by discovery auth",
    );
    refused(
        &t,
        &["bdev_malloc_delete", "M0"],
        -16,
        "bdev M0 is LUN 0 of iSCSI target node",
    );
    refused(
        &t,
        &["bdev_split_delete", "M1"],
        -16,
        &format!("bdev M1p0 is LUN 1 of iSCSI target node {disk0}"),
    );

    // Nothing of that changed anything: the model is as built.
    assert_eq!(
        t.rpc_ok(&["iscsi_get_target_nodes"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        t.rpc_ok(&["iscsi_get_portal_groups"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        t.rpc_ok(&["iscsi_get_initiator_groups"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        t.rpc_ok(&["iscsi_get_auth_groups"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    t.rpc_ok(&["bdev_malloc_create", "-b", "Still", "8", "512"]);
}

#[test]
fn set_options_before_anything_and_its_limits() {
    let t = Target::start(&["--no-default"]);
    refused(
        &t,
        &["iscsi_set_options", "-l", "1"],
        -22,
        "error_recovery_level 1 is not supported",
    );
    refused(
        &t,
        &["iscsi_set_options", "-q", "0"],
        -22,
        "max_queue_depth 0 is out of range 1..=256",
    );
    refused(
        &t,
        &["iscsi_set_options", "-n", "61"],
        -22,
        "nop_in_interval",
    );
    refused(
        &t,
        &["iscsi_set_options", "-b", "not-an-iqn"],
        -22,
        "node_base",
    );
    refused(
        &t,
        &["iscsi_set_options", "-f", "/etc/auth.conf"],
        -22,
        "auth_file is not supported",
    );
    refused(
        &t,
        &["iscsi_set_options", "-g", "1"],
        -2,
        "auth group 1 does not exist",
    );
    t.rpc_ok(&[
        "iscsi_set_options",
        "-b",
        "iqn.2000-01.org.example",
        "-q",
        "32",
        "--no-immediate-data",
    ]);
    let o = t.rpc_ok(&["iscsi_get_options"]);
    assert_eq!(
        (&o["node_base"], &o["max_queue_depth"], &o["immediate_data"]),
        (&json!("iqn.2000-01.org.example"), &json!(32), &json!(false))
    );
    // Queue depths past max_queue_depth are cut to it, as SPDK does.
    t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "8", "512"]);
    t.rpc_ok(&["iscsi_create_portal_group", "1", &portal(2)]);
    t.rpc_ok(&["iscsi_create_initiator_group", "1", "ANY", "ANY"]);
    t.rpc_ok(&["iscsi_create_target_node", "d", "", "M0:0", "1:1", "256"]);
    let n = t.rpc_ok(&["iscsi_get_target_nodes"]);
    assert_eq!(
        (&n[0]["name"], &n[0]["queue_depth"]),
        (&json!("iqn.2000-01.org.example:d"), &json!(32))
    );
    refused(
        &t,
        &["iscsi_set_options", "-q", "64"],
        -1,
        "before any portal group",
    );
}

#[test]
fn save_config_round_trips_the_model_through_json() {
    let t = Target::start(&["--no-default"]);
    t.rpc_ok(&[
        "iscsi_set_options",
        "-b",
        "iqn.2000-01.org.example",
        "-q",
        "128",
        "-a",
        "32",
    ]);
    build_model(&t);
    let gets = |t: &Target| -> Vec<Value> {
        [
            "iscsi_get_options",
            "iscsi_get_discovery_auth",
            "iscsi_get_auth_groups",
            "iscsi_get_portal_groups",
            "iscsi_get_initiator_groups",
            "iscsi_get_target_nodes",
            "bdev_get_bdevs",
        ]
        .iter()
        .map(|m| t.rpc_ok(&[m]))
        .collect()
    };
    let before = gets(&t);
    let file = scratch("iscsi-config").with_extension("json");
    let out = t.rpc(&["save_config", "-o", file.to_str().unwrap()]);
    assert!(out.ok(), "{}", out.stderr);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let iscsi = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "iscsi")
        .expect("an iscsi subsystem");
    let order: Vec<&str> = iscsi["config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "iscsi_set_options",
            "iscsi_create_auth_group",
            "iscsi_create_auth_group",
            "iscsi_set_discovery_auth",
            "iscsi_create_portal_group",
            "iscsi_create_portal_group",
            "iscsi_create_initiator_group",
            "iscsi_create_initiator_group",
            "iscsi_create_target_node",
            "iscsi_create_target_node",
        ]
    );
    // Portal group 2 was made with -w and never started: it is saved so.
    assert_eq!(iscsi["config"][5]["params"]["wait"], true);
    drop(t);

    let t2 = Target::start(&["--json", file.to_str().unwrap()]);
    let after = gets(&t2);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a);
    }
    assert_eq!(t2.rpc_ok(&["save_config"]), saved);
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_bad_iscsi_config_fails_the_start_naming_the_method() {
    let file = scratch("bad-iscsi").with_extension("json");
    std::fs::write(
        &file,
        r#"{"subsystems":[{"subsystem":"iscsi","config":[
            {"method":"iscsi_create_initiator_group","params":{"tag":1,"initiators":["ANY"],"netmasks":["ANY"]}},
            {"method":"iscsi_create_target_node","params":{"name":"d","pg_ig_maps":[{"pg_tag":1,"ig_tag":1}],
             "luns":[{"bdev_name":"Malloc0","lun_id":0}],"queue_depth":8}}]}]}"#,
    )
    .unwrap();
    let sock = scratch("sock");
    let mut t = Target::spawn(&["--json", file.to_str().unwrap()], &sock);
    assert!(!t.wait_exit(std::time::Duration::from_secs(30)).success());
    let log = t.log_text();
    assert!(
        log.contains("iscsi_create_target_node") && log.contains("does not exist"),
        "{log}"
    );
    let _ = std::fs::remove_file(file);
}
