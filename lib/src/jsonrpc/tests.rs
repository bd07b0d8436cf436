//! The server on a real socket and a one-reactor runtime, talked to with std's
//! blocking `UnixStream` like an external client.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ferrite_reactor::{Runtime, RuntimeConfig};
use serde_json::{json, Value};

use super::*;
use crate::subsystem::Subsystems;

thread_local! {
    /// The server of the test runtime, on its reactor 0.
    static SERVER: RefCell<Option<RpcServer>> = const { RefCell::new(None) };
}

fn socket_path(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ferrite-rpc-{}-{test}.sock", std::process::id()))
}

fn lock_path(socket: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", socket.display()))
}

fn methods(shutdowns: Arc<AtomicUsize>) -> Methods {
    let mut m = Methods::new();
    register_framework_methods(
        &mut m,
        Framework {
            subsystems: Arc::new(Subsystems::new()),
            shutdown: Arc::new(move || {
                shutdowns.fetch_add(1, Ordering::SeqCst);
            }),
        },
    );
    m.register("echo", |params, resp: Responder| resp.ok(params));
    // A response far larger than a socket buffer.
    m.register("big", |_, resp: Responder| resp.ok("x".repeat(1 << 20)));
    // Answers from a plain thread a little later, as a device might.
    m.register("slow", |params, resp: Responder| {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            resp.ok(params);
        });
    });
    m
}

struct TestServer {
    runtime: Option<Runtime>,
    path: PathBuf,
    shutdowns: Arc<AtomicUsize>,
}

impl TestServer {
    fn start(test: &str) -> TestServer {
        let path = socket_path(test);
        let _ = std::fs::remove_file(&path);
        let shutdowns = Arc::new(AtomicUsize::new(0));
        let runtime = start_runtime(&path, methods(shutdowns.clone())).unwrap();
        TestServer {
            runtime: Some(runtime),
            path,
            shutdowns,
        }
    }

    fn connect(&self) -> Client {
        let stream = UnixStream::connect(&self.path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn stop(mut self) {
        let runtime = self.runtime.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let stop = Box::new(move || {
            if let Some(server) = SERVER.with(|s| s.borrow_mut().take()) {
                server.stop();
            }
            tx.send(()).unwrap();
        });
        runtime.handle().try_send(0, stop).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        runtime.handle().stop();
        runtime.wait();
    }
}

/// Starts a one-reactor runtime whose reactor 0 serves `path`.
fn start_runtime(path: &Path, methods: Methods) -> std::io::Result<Runtime> {
    let config = RuntimeConfig {
        cores: vec![ferrite_reactor::available_cores()[0]],
        ..RuntimeConfig::default()
    };
    let (tx, rx) = mpsc::channel();
    let path = path.to_path_buf();
    let runtime = Runtime::start(config, move || {
        let started = RpcServer::start(&path, Arc::new(methods))
            .map(|server| SERVER.with(|s| *s.borrow_mut() = Some(server)));
        tx.send(started).unwrap();
    })?;
    match rx.recv_timeout(Duration::from_secs(5)).unwrap() {
        Ok(()) => Ok(runtime),
        Err(e) => {
            runtime.handle().stop();
            runtime.wait();
            Err(e)
        }
    }
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads the next JSON value the server sends.
    fn receive(&mut self) -> Value {
        loop {
            let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match stream.next() {
                Some(Ok(value)) => {
                    let used = stream.byte_offset();
                    self.buf.drain(..used);
                    return value;
                }
                Some(Err(e)) if !e.is_eof() => panic!("server sent bad JSON: {e}"),
                _ => {}
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk).expect("no response in time");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.send(request.to_string().as_bytes());
        self.receive()
    }

    /// Whether the server closed the connection (after any pending bytes).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).is_ok() && rest.iter().all(u8::is_ascii_whitespace)
    }
}

#[test]
fn requests_whole_split_and_pipelined() {
    let server = TestServer::start("pipelined");
    let mut client = server.connect();

    let r = client.call("echo", json!({"a": 1}));
    assert_eq!(r, json!({"jsonrpc": "2.0", "id": 1, "result": {"a": 1}}));

    // Split across writes, with the reactor given time to read the first half.
    let request = br#"{"jsonrpc":"2.0","id":2,"method":"echo","params":{"s":"}{"}}"#;
    let (a, b) = request.split_at(30);
    client.send(a);
    std::thread::sleep(Duration::from_millis(50));
    client.send(b);
    assert_eq!(client.receive()["result"], json!({"s": "}{"}));

    // Back to back in one write: a slow one, a notification, a fast one. The fast
    // answer may come first; JSON-RPC matches answers by id.
    client.send(
        concat!(
            r#"{"jsonrpc":"2.0","id":3,"method":"slow","params":[3]}"#,
            r#"{"jsonrpc":"2.0","method":"echo"}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"echo","params":[4]}"#,
        )
        .as_bytes(),
    );
    let mut ids: Vec<i64> = (0..2)
        .map(|_| client.receive()["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [3, 4]);

    // A batch, with an error inside.
    client.send(
        br#"[{"jsonrpc":"2.0","id":5,"method":"slow"},{"jsonrpc":"2.0","id":6,"method":"nope"}]"#,
    );
    let batch = client.receive();
    assert_eq!(batch[0]["id"], 5);
    assert_eq!(batch[1]["error"]["code"], -32601);
    assert!(batch[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nope"));

    let r = client.call("rpc_get_methods", json!({"foo": true}));
    assert_eq!(r["error"]["code"], -32602);
    assert!(r["error"]["message"].as_str().unwrap().contains("foo"));

    server.stop();
}

#[test]
fn bad_json_is_answered_then_the_connection_closes() {
    let server = TestServer::start("badjson");
    let mut client = server.connect();
    client.send(br#"{"jsonrpc":"2.0","id":1,"method":"echo"} {"jsonrpc" 2.0}"#);
    assert_eq!(client.receive()["id"], 1);
    let r = client.receive();
    assert_eq!(r["error"]["code"], -32700);
    assert_eq!(r["id"], Value::Null);
    assert!(client.closed());

    // The server still serves others.
    let mut other = server.connect();
    assert_eq!(other.call("echo", json!([1]))["result"], json!([1]));
    server.stop();
}

#[test]
fn large_responses_reach_a_client_that_reads_late() {
    let server = TestServer::start("large");
    let mut client = server.connect();
    // 40 MiB of answers, more than the output high-water mark: the server must
    // stop reading this client, keep retrying the blocked writes, then resume.
    let requests = 40;
    for id in 0..requests {
        client.send(
            json!({"jsonrpc": "2.0", "id": id, "method": "big"})
                .to_string()
                .as_bytes(),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    for id in 0..requests {
        let r = client.receive();
        assert_eq!(r["id"], id);
        assert_eq!(r["result"].as_str().unwrap().len(), 1 << 20);
    }
    // Drained, the connection serves small requests again.
    assert_eq!(client.call("echo", json!([7]))["result"], json!([7]));
    server.stop();
}

#[test]
fn half_closed_client_still_gets_its_answers() {
    let server = TestServer::start("halfclose");
    let mut client = server.connect();
    client.send(br#"{"jsonrpc":"2.0","id":9,"method":"slow","params":{}}"#);
    client.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(client.receive()["id"], 9);
    assert!(client.closed());
    server.stop();
}

#[test]
fn framework_methods() {
    let server = TestServer::start("framework");
    let mut client = server.connect();

    let names = client.call("rpc_get_methods", json!({}))["result"].clone();
    let names: Vec<String> = serde_json::from_value(names).unwrap();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for expected in [
        "framework_get_reactors",
        "framework_shutdown",
        "save_config",
        "echo",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }

    let reactors = client.call("framework_get_reactors", Value::Null)["result"].clone();
    assert!(reactors["tick_rate"].as_u64().unwrap() > 0);
    let reactor = &reactors["reactors"][0];
    assert_eq!(reactor["index"], 0);
    assert_eq!(reactor["in_interrupt"], true);
    let pollers = reactor["pollers"].as_array().unwrap();
    let rpc = pollers
        .iter()
        .find(|p| p["name"] == "rpc")
        .expect("the rpc poller");
    assert_eq!(rpc["type"], "active");
    assert!(rpc["run_count"].as_u64().unwrap() > 0);

    let config = client.call("save_config", Value::Null);
    assert_eq!(config["result"], json!({"subsystems": []}));

    let r = client.call("framework_shutdown", Value::Null);
    assert_eq!(r["result"], true);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(server.shutdowns.load(Ordering::SeqCst), 1);
    server.stop();
}

#[test]
fn socket_lock_and_cleanup() {
    let path = socket_path("lock");
    let _ = std::fs::remove_file(&path);
    // A socket file left by a target that died (nothing listens on it).
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let server = TestServer::start_at_existing(&path);
    assert!(lock_path(&path).exists());

    let err = start_runtime(&path, Methods::new()).err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        err.to_string().contains(&format!(
            "is in use by another ferrite-tgt (pid {})",
            std::process::id()
        )),
        "{err}"
    );
    // The failed start removed nothing of the running server's.
    assert!(path.exists());
    let mut client = server.connect();
    assert_eq!(client.call("echo", json!([2]))["result"], json!([2]));

    server.stop();
    assert!(!path.exists());
    assert!(!lock_path(&path).exists());
}

impl TestServer {
    /// Like `start`, but keeps whatever file is at `path`.
    fn start_at_existing(path: &Path) -> TestServer {
        let shutdowns = Arc::new(AtomicUsize::new(0));
        let runtime = start_runtime(path, methods(shutdowns.clone())).unwrap();
        TestServer {
            runtime: Some(runtime),
            path: path.to_path_buf(),
            shutdowns,
        }
    }
}
