//! The real `ferrite-tgt` binary, driven over its RPC socket with std's
//! `UnixStream`, as a client would.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(20);

fn temp_path(test: &str, suffix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ferrite-tgt-{}-{test}{suffix}", std::process::id()))
}

fn lock_path(socket: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", socket.display()))
}

/// One reactor on the first usable core, a small heap on normal pages.
fn base_args(socket: &Path) -> Vec<String> {
    let core = ferrite_reactor::available_cores()[0];
    vec![
        "-m".into(),
        format!("0x{:x}", 1u128 << core),
        "-r".into(),
        socket.display().to_string(),
        "-s".into(),
        "16".into(),
        "--no-huge".into(),
    ]
}

/// A running `ferrite-tgt`, its stderr in a file.
struct Tgt {
    child: Child,
    log: PathBuf,
}

impl Tgt {
    fn spawn(test: &str, args: &[String]) -> Tgt {
        let log = temp_path(test, ".log");
        let child = Command::new(env!("CARGO_BIN_EXE_ferrite-tgt"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Tgt { child, log }
    }

    /// Starts one and waits until it says it is ready.
    fn start(test: &str, args: &[String]) -> Tgt {
        let mut tgt = Tgt::spawn(test, args);
        let start = Instant::now();
        while !tgt.stderr().contains("ferrite-tgt ready: RPC on") {
            if let Some(status) = tgt.child.try_wait().unwrap() {
                panic!(
                    "ferrite-tgt exited with {status} before ready:\n{}",
                    tgt.stderr()
                );
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "not ready in time:\n{}",
                tgt.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        tgt
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                panic!("ferrite-tgt did not exit in time:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill takes no pointers; the pid is our child, not yet reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0);
    }
}

impl Drop for Tgt {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
}

impl Client {
    fn connect(socket: &Path) -> Client {
        let stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            next_id: 1,
        }
    }

    fn send(&mut self, request: &Value) {
        self.stream
            .write_all(request.to_string().as_bytes())
            .unwrap();
    }

    fn receive(&mut self) -> Value {
        loop {
            let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match values.next() {
                Some(Ok(value)) => {
                    let used = values.byte_offset();
                    self.buf.drain(..used);
                    return value;
                }
                Some(Err(e)) if !e.is_eof() => panic!("bad JSON from ferrite-tgt: {e}"),
                _ => {}
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("no answer in time");
            assert!(n > 0, "ferrite-tgt closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Calls `method` and returns the whole response.
    fn call(&mut self, method: &str, params: Option<Value>) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(params) = params {
            request["params"] = params;
        }
        self.send(&request);
        let response = self.receive();
        assert_eq!(response["id"], id, "{response}");
        response
    }

    fn result(&mut self, method: &str, params: Option<Value>) -> Value {
        let response = self.call(method, params);
        assert!(response.get("error").is_none(), "{method}: {response}");
        response["result"].clone()
    }
}

fn error_of(response: &Value) -> (i64, String) {
    let error = &response["error"];
    (
        error["code"].as_i64().unwrap(),
        error["message"].as_str().unwrap().to_string(),
    )
}

#[test]
fn serves_rpc_refuses_a_second_instance_and_shuts_down_by_rpc() {
    let socket = temp_path("main", ".sock");
    let mut args = base_args(&socket);
    args.push("--no-default".into());
    let mut tgt = Tgt::start("main", &args);
    let mut client = Client::connect(&socket);

    let names: Vec<String> =
        serde_json::from_value(client.result("rpc_get_methods", None)).unwrap();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for expected in [
        "framework_get_reactors",
        "framework_shutdown",
        "save_config",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }

    let reactors = client.result("framework_get_reactors", None);
    assert!(reactors["tick_rate"].as_u64().unwrap() > 0);
    let reactors = reactors["reactors"].as_array().unwrap();
    assert_eq!(reactors.len(), 1);
    let pollers = reactors[0]["pollers"].as_array().unwrap();
    assert!(pollers.iter().any(|p| p["name"] == "rpc"), "{pollers:?}");

    // No RDMA connection here (nor, on the host, any RDMA device): all zeros,
    // one entry per reactor.
    let rdma = client.result("rdma_get_stats", None);
    assert_eq!(rdma["qps"], 0, "{rdma}");
    assert_eq!(rdma["cm_ids"], 0, "{rdma}");
    assert_eq!(rdma["reactors"].as_array().unwrap().len(), 1, "{rdma}");
    assert_eq!(rdma["reactors"][0]["conns"], 0, "{rdma}");

    let (code, message) = error_of(&client.call("bdev_nope_create", None));
    assert_eq!(code, -32601);
    assert!(message.contains("bdev_nope_create"), "{message}");

    let (code, message) = error_of(&client.call("rpc_get_methods", Some(json!({"foo": 1}))));
    assert_eq!(code, -32602);
    assert!(message.contains("unknown field `foo`"), "{message}");
    let (code, message) = error_of(&client.call("rpc_get_methods", Some(json!({"current": "x"}))));
    assert_eq!(code, -32602);
    assert!(message.contains("invalid type: string \"x\""), "{message}");

    client.send(&json!([
        {"jsonrpc": "2.0", "id": "a", "method": "save_config"},
        {"jsonrpc": "2.0", "method": "rpc_get_methods"},
        {"jsonrpc": "2.0", "id": "c", "method": "nope"},
    ]));
    let batch = client.receive();
    let batch = batch.as_array().unwrap();
    assert_eq!(batch.len(), 2);
    // Started with --no-default: every subsystem saves an empty config.
    let saved = batch[0]["result"]["subsystems"].as_array().unwrap();
    assert!(saved.iter().any(|s| s["subsystem"] == "bdev"), "{saved:?}");
    assert!(
        saved
            .iter()
            .all(|s| s["config"].as_array().is_some_and(|c| c.is_empty())),
        "{saved:?}"
    );
    assert_eq!(
        (error_of(&batch[1]).0, &batch[1]["id"]),
        (-32601, &json!("c"))
    );

    // A second target on the same socket fails at once, naming the first.
    let mut second = Tgt::spawn("second", &args);
    let status = second.wait();
    assert!(!status.success());
    let expected = format!(
        "RPC socket {} is in use by another ferrite-tgt (pid {})",
        socket.display(),
        tgt.child.id()
    );
    assert!(second.stderr().contains(&expected), "{}", second.stderr());
    // ... and the first still serves, on the same connection and on new ones.
    client.result("rpc_get_methods", None);
    Client::connect(&socket).result("rpc_get_methods", None);

    assert_eq!(client.result("framework_shutdown", None), true);
    let status = tgt.wait();
    assert!(status.success(), "{status}:\n{}", tgt.stderr());
    assert!(!socket.exists());
    assert!(!lock_path(&socket).exists());
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let socket = temp_path("sigterm", ".sock");
    let mut args = base_args(&socket);
    args.push("--no-default".into());
    let mut tgt = Tgt::start("sigterm", &args);
    Client::connect(&socket).result("rpc_get_methods", None);

    tgt.signal(libc::SIGTERM);
    let status = tgt.wait();
    assert!(status.success(), "{status}:\n{}", tgt.stderr());
    assert!(!socket.exists());
    assert!(!lock_path(&socket).exists());
}

#[test]
fn a_failing_config_exits_nonzero_and_leaves_nothing() {
    let socket = temp_path("badconfig", ".sock");
    let config = temp_path("badconfig", ".json");
    std::fs::write(
        &config,
        r#"{"subsystems": [{"subsystem": "bdev", "config": [{"method": "no_such_method", "params": {}}]}]}"#,
    )
    .unwrap();
    let mut args = base_args(&socket);
    args.extend(["--json".to_string(), config.display().to_string()]);
    let mut tgt = Tgt::spawn("badconfig", &args);
    let status = tgt.wait();
    std::fs::remove_file(&config).unwrap();
    assert_eq!(status.code(), Some(1), "{}", tgt.stderr());
    assert!(
        tgt.stderr().contains(
            "config: subsystem bdev: no_such_method failed: Method not found: no_such_method"
        ),
        "{}",
        tgt.stderr()
    );
    assert!(!socket.exists());
    assert!(!lock_path(&socket).exists());
}

#[test]
fn a_malformed_config_file_is_refused() {
    let socket = temp_path("shape", ".sock");
    let config = temp_path("shape", ".json");
    std::fs::write(&config, r#"{"bdevs": []}"#).unwrap();
    let mut args = base_args(&socket);
    args.extend(["-c".to_string(), config.display().to_string()]);
    let mut tgt = Tgt::spawn("shape", &args);
    let status = tgt.wait();
    std::fs::remove_file(&config).unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        tgt.stderr().contains("config: expected {\"subsystems\":["),
        "{}",
        tgt.stderr()
    );
    assert!(!socket.exists());
}
