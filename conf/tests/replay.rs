//! Replaying a config through registered methods, in and off a reactor.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use ferrite_lib::jsonrpc::{parse_params, Methods, Responder};
use ferrite_reactor::{Runtime, RuntimeConfig};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: String,
    #[allow(dead_code)]
    block_size: u32,
}

/// Methods that log their calls: `create` answers at once, `create_later` from
/// another reactor (or thread), `init` takes no params.
fn methods(log: Arc<Mutex<Vec<String>>>) -> Methods {
    let mut m = Methods::new();
    let created = log.clone();
    m.register(
        "create",
        move |params, resp: Responder| match parse_params::<CreateParams>(params) {
            Ok(p) => {
                created.lock().unwrap().push(p.name);
                resp.ok(true);
            }
            Err(e) => resp.err(e),
        },
    );
    let created = log.clone();
    m.register("create_later", move |params, resp: Responder| {
        let created = created.clone();
        let answer = move || match parse_params::<CreateParams>(params) {
            Ok(p) => {
                created.lock().unwrap().push(p.name);
                resp.ok(true);
            }
            Err(e) => resp.err(e),
        };
        let last = ferrite_reactor::on_reactor().then(|| ferrite_reactor::handle().count() - 1);
        match last {
            Some(last) => ferrite_reactor::send(last, Box::new(answer)).unwrap(),
            None => {
                std::thread::spawn(answer);
            }
        }
    });
    m.register("init", move |params, resp: Responder| {
        assert!(params.is_none());
        log.lock().unwrap().push("init".into());
        resp.ok(Value::Null);
    });
    m
}

fn config(bad_block_size: bool) -> Value {
    let third = if bad_block_size {
        json!({"name": "M2"})
    } else {
        json!({"name": "M2", "block_size": 512})
    };
    json!({"subsystems": [
        {"subsystem": "first", "config": [{"method": "init"}]},
        {"subsystem": "bdev", "config": [
            {"method": "create", "params": {"name": "M0", "block_size": 512}},
            {"method": "create_later", "params": {"name": "M1", "block_size": 512}},
            {"method": "create", "params": third},
            {"method": "create", "params": {"name": "M3", "block_size": 512}},
        ]},
    ]})
}

/// Replays `config` on reactor 0 of a runtime with two reactors when it can
/// have them, one otherwise.
fn replay_on_reactor(config: Value) -> (Result<(), String>, Vec<String>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let methods = Arc::new(methods(log.clone()));
    let cores: Vec<usize> = ferrite_reactor::available_cores()
        .into_iter()
        .take(2)
        .collect();
    let runtime_config = RuntimeConfig {
        cores,
        ..RuntimeConfig::default()
    };
    let (tx, rx) = mpsc::channel();
    let rt = Runtime::start(runtime_config, move || {
        ferrite_conf::replay(config, methods, move |result| {
            assert_eq!(ferrite_reactor::current_index(), Some(0));
            tx.send(result).unwrap();
        });
    })
    .unwrap();
    let result = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    rt.handle().stop();
    rt.wait();
    let log = log.lock().unwrap().clone();
    (result, log)
}

#[test]
fn replays_in_order_on_a_reactor() {
    let (result, log) = replay_on_reactor(config(false));
    assert_eq!(result, Ok(()));
    assert_eq!(log, ["init", "M0", "M1", "M2", "M3"]);
}

#[test]
fn stops_at_the_first_failure_and_names_it() {
    let (result, log) = replay_on_reactor(config(true));
    assert_eq!(
        result.unwrap_err(),
        "config: subsystem bdev: create failed: missing field `block_size`"
    );
    assert_eq!(log, ["init", "M0", "M1"]);
}

#[test]
fn unknown_method_fails_the_replay() {
    let config = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_nope_create", "params": {}}
    ]}]});
    let (result, _) = replay_on_reactor(config);
    assert_eq!(
        result.unwrap_err(),
        "config: subsystem bdev: bdev_nope_create failed: Method not found: bdev_nope_create"
    );
}

#[test]
fn replays_off_a_reactor() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let methods = Arc::new(methods(log.clone()));
    let (tx, rx) = mpsc::channel();
    ferrite_conf::replay(config(false), methods, move |r| tx.send(r).unwrap());
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(()));
    assert_eq!(*log.lock().unwrap(), ["init", "M0", "M1", "M2", "M3"]);

    let (tx, rx) = mpsc::channel();
    ferrite_conf::replay(
        json!({"subsystems": {}}),
        Arc::new(Methods::new()),
        move |r| tx.send(r).unwrap(),
    );
    assert!(rx
        .recv()
        .unwrap()
        .unwrap_err()
        .starts_with("config: expected"));
}
