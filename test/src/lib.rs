//! Harness for tests that run the real `ferrite-tgt` and drive it through the
//! real `app/rpc.py`, as an operator would.

pub mod raw;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test/ sits in the repo")
        .to_path_buf()
}

/// A binary of this workspace, from `$FERRITE_<NAME>_BIN` or next to the test
/// executable (the same profile `cargo test` built).
pub fn binary(name: &str) -> PathBuf {
    let var = format!(
        "FERRITE_{}_BIN",
        name.trim_start_matches("ferrite-").to_uppercase()
    );
    if let Ok(p) = std::env::var(&var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (cargo build -p ferrite-app -p ferrite-perf) or set {var}",
        path.display()
    );
    path
}

/// A unique scratch path under /tmp for this process.
pub fn scratch(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ferrite-{tag}-{}-{n}", std::process::id()))
}

/// A running `ferrite-tgt`, killed on drop if still running.
pub struct Target {
    pub child: Child,
    pub sock: PathBuf,
    pub log: PathBuf,
    /// Held while a target on the embedded default (which listens on
    /// 127.0.0.1:3260) runs, so such tests take turns, across test binaries too.
    _port_lock: Option<std::fs::File>,
}

/// Takes the lock that targets on port 3260 take turns with.
fn lock_default_port() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("ferrite-tests-port-3260.lock"))
        .expect("lock file");
    // SAFETY: flock on a file descriptor we own; blocks until the lock is ours.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    f
}

impl Target {
    /// Starts the target with `args` (plus `-r SOCK` and `-m 0x1` unless given)
    /// and waits until its RPC socket answers.
    pub fn start(args: &[&str]) -> Target {
        let sock = scratch("sock");
        let t = Target::spawn(args, &sock);
        t.wait_ready();
        t
    }

    /// Starts the target without waiting for it.
    pub fn spawn(args: &[&str], sock: &Path) -> Target {
        let on_default = !args
            .iter()
            .any(|a| ["--no-default", "--json", "-c", "--config"].contains(a));
        let port_lock = on_default.then(lock_default_port);
        let log = sock.with_extension("log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(binary("ferrite-tgt"));
        if !args.contains(&"-m") {
            cmd.args(["-m", "0x1"]);
        }
        if !args.contains(&"-r") {
            cmd.arg("-r").arg(sock);
        }
        // Keep each test's arena small: tests run side by side.
        if !args.contains(&"-s") {
            cmd.args(["-s", "1200"]);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf);
        Target {
            child: cmd.spawn().expect("ferrite-tgt starts"),
            sock: sock.to_path_buf(),
            log,
            _port_lock: port_lock,
        }
    }

    /// Waits until the socket accepts a request (or the process dies).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.sock).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ferrite-tgt did not come up; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `rpc.py -s SOCK args...`.
    pub fn rpc(&self, args: &[&str]) -> RpcOutput {
        rpc_py(&self.sock, args)
    }

    /// Runs an rpc.py command that must succeed and returns its JSON output.
    pub fn rpc_ok(&self, args: &[&str]) -> Value {
        let out = self.rpc(args);
        assert!(
            out.ok(),
            "rpc.py {args:?} failed: {}\nlog:\n{}",
            out.stderr,
            self.log_text()
        );
        out.json()
    }

    /// Sends a signal and waits (bounded) for the exit status.
    pub fn signal_and_wait(&mut self, sig: i32) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        self.wait_exit(Duration::from_secs(30))
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "ferrite-tgt did not exit in {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Asserts an rpc.py call failed with JSON-RPC error `code` and a message containing
/// `needle`, and that the target still answers.
pub fn refused(t: &Target, args: &[&str], code: i64, needle: &str) {
    let out = t.rpc(args);
    assert!(!out.ok(), "{args:?} should fail; got {}", out.stdout);
    assert!(
        out.stderr.contains(&format!("\"code\": {code},")),
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

/// What rpc.py printed.
#[derive(Debug)]
pub struct RpcOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RpcOutput {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// stdout as JSON (a bare word such as a bdev name is returned as a string).
    pub fn json(&self) -> Value {
        let s = self.stdout.trim();
        serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
    }
}

/// Runs `app/rpc.py -s sock args...` with a bounded time.
pub fn rpc_py(sock: &Path, args: &[&str]) -> RpcOutput {
    let out: Output = Command::new("timeout")
        .arg("60")
        .arg("python3")
        .arg(repo_root().join("app/rpc.py"))
        .arg("-s")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    RpcOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
