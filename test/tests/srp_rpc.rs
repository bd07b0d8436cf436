//! The SRP target model in the real ferrite-tgt through the real rpc.py:
//! create, list, add a LUN, delete; errors naming the bad parameter; a bdev
//! an SRP target exports cannot be deleted; save_config → --json round trip.
//!
//! The host has no RDMA device, so every target is created *inactive*: the
//! RPC succeeds (configurations replay anywhere), `srp_get_targets` says
//! `"active": false` with the reason, and the target logs a warning naming it.

use ferrite_tests::{refused, scratch, Target};
use serde_json::{json, Value};

const ID_EXT: &str = "5254000000000001";
const IOC_GUID: &str = "5254000000000002";

fn rdma_present() -> bool {
    std::fs::read_dir("/sys/class/infiniband").is_ok_and(|mut d| d.next().is_some())
}

#[test]
fn srp_targets_through_rpc_py_and_save_config() {
    let t = Target::start(&["--no-default"]);
    t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "8", "512"]);
    t.rpc_ok(&["bdev_malloc_create", "-b", "M1", "8", "4096"]);
    assert_eq!(
        t.rpc_ok(&[
            "srp_create_target",
            "srp0",
            ID_EXT,
            IOC_GUID,
            "169.254.77.1:5001",
            "M0:0",
            "-i",
            "169.254.77.2",
            "-i",
            "0x0000000000000000fe80000000000001",
        ]),
        json!(true)
    );
    let targets = t.rpc_ok(&["srp_get_targets"]);
    let t0 = &targets[0];
    assert_eq!(t0["name"], "srp0");
    assert_eq!(t0["id_ext"], ID_EXT);
    assert_eq!(t0["ioc_guid"], IOC_GUID);
    assert_eq!(t0["host"], "169.254.77.1");
    assert_eq!(t0["port"], 5001);
    assert_eq!(t0["luns"], json!([{"bdev_name": "M0", "lun_id": 0}]));
    assert_eq!(
        t0["initiators"],
        json!(["169.254.77.2", "0x0000000000000000fe80000000000001"])
    );
    if !rdma_present() {
        // The decision for a machine without RDMA: created, inactive, said so.
        assert_eq!(t0["active"], false);
        let why = t0["inactive_reason"].as_str().unwrap();
        assert!(why.contains("no RDMA device"), "{why}");
        let log = t.log_text();
        assert!(
            log.contains("SRP target srp0") && log.contains("is inactive") && log.contains(why),
            "{log}"
        );
    }
    assert_eq!(t.rpc_ok(&["srp_get_channels"]), json!([]));
    t.rpc_ok(&["srp_target_add_lun", "srp0", "M1:4"]);
    assert_eq!(
        t.rpc_ok(&["srp_get_targets", "-n", "srp0"])[0]["luns"],
        json!([{"bdev_name": "M0", "lun_id": 0}, {"bdev_name": "M1", "lun_id": 4}])
    );

    // Errors name the parameter at fault; the target keeps serving.
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let create = |name: &str, id_ext: &str, addr: &str, lun: &str| {
        vec![
            "srp_create_target".to_string(),
            name.into(),
            id_ext.into(),
            IOC_GUID.into(),
            addr.into(),
            lun.into(),
        ]
    };
    let v = create("srp0", "0000000000000009", "169.254.77.1:5002", "M0:0");
    refused(&t, &args(&v), -17, "name");
    let v = create("srp1", ID_EXT, "169.254.77.1:5002", "M0:0");
    refused(&t, &args(&v), -17, "id_ext");
    let v = create("srp1", "0000000000000009", "nohost:5002", "M0:0");
    refused(&t, &args(&v), -22, "host");
    let v = create("srp1", "0000000000000009", "169.254.77.1:0", "M0:0");
    refused(&t, &args(&v), -22, "port");
    let v = create("srp1", "0000000000000009", "169.254.77.1:5002", "Nope:0");
    refused(&t, &args(&v), -19, "luns: bdev Nope");
    refused(
        &t,
        &[
            "call",
            "srp_create_target",
            r#"{"name": "x", "id_ext": "12", "ioc_guid": "5254000000000002", "host": "1.2.3.4", "port": 1}"#,
        ],
        -22,
        "id_ext",
    );
    refused(&t, &["srp_target_add_lun", "srp0", "M1:0"], -17, "lun_id");
    refused(&t, &["srp_delete_target", "nope"], -2, "nope");
    // The bdev an SRP target exports stays.
    refused(&t, &["bdev_malloc_delete", "M1"], -16, "SRP target srp0");

    // save_config, then a fresh target from the file: the same targets.
    let file = scratch("srp-config").with_extension("json");
    let out = t.rpc(&["save_config", "-o", file.to_str().unwrap()]);
    assert!(out.ok(), "{}", out.stderr);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let srp = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "srp")
        .expect("an srp subsystem");
    assert_eq!(srp["config"][0]["method"], "srp_create_target");
    let before = t.rpc_ok(&["srp_get_targets"]);
    drop(t);
    let t2 = Target::start(&["--json", file.to_str().unwrap()]);
    assert_eq!(t2.rpc_ok(&["srp_get_targets"]), before);
    assert_eq!(t2.rpc_ok(&["save_config"]), saved);
    t2.rpc_ok(&["srp_delete_target", "srp0"]);
    assert_eq!(t2.rpc_ok(&["srp_get_targets"]), json!([]));
    t2.rpc_ok(&["bdev_malloc_delete", "M1"]);
    let _ = std::fs::remove_file(file);
}
