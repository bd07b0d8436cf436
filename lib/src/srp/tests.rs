use std::sync::mpsc;

use super::*;
use crate::jsonrpc::RpcError;

fn test_model() -> Arc<SrpModel> {
    Arc::new(SrpModel::with_bdev_check(|n| n.starts_with("Malloc")))
}

fn methods(model: &Arc<SrpModel>) -> Methods {
    let mut m = Methods::new();
    register_srp_methods_on(&mut m, model.clone());
    m
}

fn call(m: &Methods, method: &str, params: Value) -> Result<Value, RpcError> {
    let (tx, rx) = mpsc::channel();
    let params = if params.is_null() { None } else { Some(params) };
    m.call(method, params, move |r| tx.send(r).unwrap());
    rx.recv().unwrap()
}

fn create_params() -> Value {
    json!({
        "name": "srp0",
        "id_ext": "5254000000000001",
        "ioc_guid": "5254000000000002",
        "host": "169.254.77.1",
        "port": 5001,
        "luns": [{"bdev_name": "Malloc0", "lun_id": 0}],
    })
}

/// Records what the model asks of the transport.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
    fail: Option<String>,
}

impl SrpHooks for Recorder {
    fn listen(&self, t: &SrpTarget) -> Result<(), String> {
        self.log
            .lock()
            .unwrap()
            .push(format!("listen {}:{}", t.host, t.port));
        self.fail.clone().map_or(Ok(()), Err)
    }
    fn target_deleted(&self, name: &str) {
        self.log.lock().unwrap().push(format!("deleted {name}"));
    }
    fn lun_added(&self, name: &str, lun: &SrpLun) {
        self.log
            .lock()
            .unwrap()
            .push(format!("lun {name} {}", lun.lun_id));
    }
    fn channels(&self) -> Vec<Value> {
        vec![json!({"target": "srp0"})]
    }
}

#[test]
fn create_list_add_lun_delete() {
    let model = test_model();
    let hooks = Arc::new(Recorder::default());
    model.set_hooks(hooks.clone());
    let m = methods(&model);
    assert_eq!(
        call(&m, "srp_create_target", create_params()).unwrap(),
        json!(true)
    );
    let mut p = create_params();
    p["name"] = json!("srp1");
    p["id_ext"] = json!("00000000000000AA");
    p["port"] = json!("5002");
    p["initiators"] = json!(["0x0000000000000000fe80000000000001", "169.254.77.2"]);
    p["luns"] = json!([]);
    call(&m, "srp_create_target", p).unwrap();
    let all = call(&m, "srp_get_targets", Value::Null).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let one = call(&m, "srp_get_targets", json!({"name": "srp1"})).unwrap();
    assert_eq!(
        one,
        json!([{
            "name": "srp1", "id_ext": "00000000000000aa", "ioc_guid": "5254000000000002",
            "host": "169.254.77.1", "port": 5002, "luns": [], "active": true,
            "initiators": ["0x0000000000000000fe80000000000001", "169.254.77.2"],
        }])
    );
    call(
        &m,
        "srp_target_add_lun",
        json!({"name": "srp1", "bdev_name": "Malloc1", "lun_id": 3}),
    )
    .unwrap();
    assert_eq!(
        call(&m, "srp_get_targets", json!({"name": "srp1"})).unwrap()[0]["luns"],
        json!([{"bdev_name": "Malloc1", "lun_id": 3}])
    );
    assert_eq!(
        call(&m, "srp_get_channels", Value::Null).unwrap(),
        json!([{"target": "srp0"}])
    );
    assert_eq!(
        model.bdev_in_use("Malloc1").unwrap(),
        "bdev Malloc1 is exported by SRP target srp1"
    );
    call(&m, "srp_delete_target", json!({"name": "srp1"})).unwrap();
    assert!(model.bdev_in_use("Malloc1").is_none());
    assert_eq!(
        *hooks.log.lock().unwrap(),
        [
            "listen 169.254.77.1:5001",
            "listen 169.254.77.1:5002",
            "lun srp1 3",
            "deleted srp1"
        ]
    );
}

#[test]
fn login_lookup_and_acl() {
    let model = test_model();
    let m = methods(&model);
    let mut p = create_params();
    p["initiators"] = json!(["0000000000000000fe80000000000001", "169.254.77.2"]);
    call(&m, "srp_create_target", p).unwrap();
    let mut port_id = [0u8; 16];
    port_id[..8].copy_from_slice(&0x5254_0000_0000_0001u64.to_be_bytes());
    port_id[8..].copy_from_slice(&0x5254_0000_0000_0002u64.to_be_bytes());
    let t = model.find(&port_id).expect("found by id_ext + ioc_guid");
    assert_eq!(t.name, "srp0");
    port_id[15] ^= 1;
    assert!(model.find(&port_id).is_none());

    let mut ini = [0u8; 16];
    ini[8..].copy_from_slice(&0xfe80_0000_0000_0001u64.to_be_bytes());
    assert!(t.allows(&ini, None));
    let other = [0x11u8; 16];
    assert!(!t.allows(&other, Some("169.254.77.9".parse().unwrap())));
    assert!(t.allows(&other, Some("169.254.77.2".parse().unwrap())));
    assert!(t.allows(&other, Some("::ffff:169.254.77.2".parse().unwrap())));
    // No list: anyone.
    let mut open = t.clone();
    open.initiators = None;
    assert!(open.allows(&other, None));
}

#[test]
fn errors_name_the_bad_parameter() {
    let model = test_model();
    let m = methods(&model);
    call(&m, "srp_create_target", create_params()).unwrap();
    let err = |method: &str, p: Value| call(&m, method, p).unwrap_err();
    let with = |k: &str, v: Value| {
        let mut p = create_params();
        p["name"] = json!("other");
        p["id_ext"] = json!("0000000000000009");
        p[k] = v;
        p
    };
    for (k, v, code, text) in [
        ("id_ext", json!("123"), -libc::EINVAL, "id_ext"),
        ("id_ext", json!("zz54000000000001"), -libc::EINVAL, "id_ext"),
        (
            "ioc_guid",
            json!("52540000000000021"),
            -libc::EINVAL,
            "ioc_guid",
        ),
        ("host", json!("no.such.host"), -libc::EINVAL, "host"),
        ("port", json!(0), -libc::EINVAL, "port"),
        ("port", json!(70000), -libc::EINVAL, "port"),
        ("port", json!("x"), -libc::EINVAL, "port"),
        (
            "luns",
            json!([{"bdev_name": "Nope", "lun_id": 0}]),
            -libc::ENODEV,
            "luns",
        ),
        (
            "luns",
            json!([{"bdev_name": "Malloc0", "lun_id": 99999}]),
            -libc::EINVAL,
            "lun_id",
        ),
        (
            "luns",
            json!([{"bdev_name": "Malloc0", "lun_id": 1}, {"bdev_name": "Malloc1", "lun_id": 1}]),
            -libc::EEXIST,
            "luns",
        ),
        (
            "initiators",
            json!(["nonsense"]),
            -libc::EINVAL,
            "initiators",
        ),
        ("name", json!("srp0"), -libc::EEXIST, "name"),
        ("name", json!(""), -libc::EINVAL, "name"),
    ] {
        let e = err("srp_create_target", with(k, v.clone()));
        assert_eq!(e.code, code, "{k}={v}: {}", e.message);
        assert!(e.message.contains(text), "{k}={v}: {}", e.message);
    }
    // The same target port id twice.
    let mut p = create_params();
    p["name"] = json!("dup");
    let e = err("srp_create_target", p);
    assert_eq!(e.code, -libc::EEXIST);
    assert!(e.message.contains("id_ext"), "{}", e.message);
    // Unknown and missing fields.
    let mut p = create_params();
    p["bogus"] = json!(1);
    assert!(err("srp_create_target", p).message.contains("bogus"));
    assert!(err("srp_create_target", json!({"name": "x"}))
        .message
        .contains("id_ext"));
    assert_eq!(
        err("srp_delete_target", json!({"name": "nope"})).code,
        -libc::ENOENT
    );
    assert_eq!(
        err("srp_get_targets", json!({"name": "nope"})).code,
        -libc::ENOENT
    );
    let e = err(
        "srp_target_add_lun",
        json!({"name": "srp0", "bdev_name": "Malloc2", "lun_id": 0}),
    );
    assert_eq!(e.code, -libc::EEXIST);
    assert!(e.message.contains("lun_id"));
}

#[test]
fn inactive_without_a_transport_or_a_device() {
    let model = test_model();
    let m = methods(&model);
    call(&m, "srp_create_target", create_params()).unwrap();
    let t = &call(&m, "srp_get_targets", Value::Null).unwrap()[0];
    assert_eq!(t["active"], json!(false));
    assert_eq!(
        t["inactive_reason"],
        json!("no SRP transport in this target")
    );

    let model = test_model();
    model.set_hooks(Arc::new(Recorder {
        fail: Some("no RDMA device".into()),
        ..Default::default()
    }));
    let m = methods(&model);
    call(&m, "srp_create_target", create_params()).unwrap();
    let t = &call(&m, "srp_get_targets", Value::Null).unwrap()[0];
    assert_eq!(t["active"], json!(false));
    assert_eq!(t["inactive_reason"], json!("no RDMA device"));
}

#[test]
fn save_config_replays_to_the_same_targets() {
    let model = test_model();
    let m = methods(&model);
    let mut p = create_params();
    p["initiators"] = json!(["169.254.77.2"]);
    p["luns"] =
        json!([{"bdev_name": "Malloc1", "lun_id": 5}, {"bdev_name": "Malloc0", "lun_id": 0}]);
    call(&m, "srp_create_target", p).unwrap();
    let saved = SrpSubsystem::on(model.clone()).write_config();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0]["method"], "srp_create_target");

    let again = test_model();
    let m2 = methods(&again);
    for c in &saved {
        call(&m2, c["method"].as_str().unwrap(), c["params"].clone()).unwrap();
    }
    assert_eq!(
        call(&m, "srp_get_targets", Value::Null).unwrap(),
        call(&m2, "srp_get_targets", Value::Null).unwrap()
    );
    assert_eq!(SrpSubsystem::on(again).write_config(), saved);
}
