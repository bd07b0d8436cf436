//! Helpers shared by the tests that point real iSCSI clients at ferrite-tgt: a portal on a
//! free port of 127.0.0.1 (never 3260, which the embedded default takes), and libiscsi's
//! command-line tools run under a time limit with a clean environment.

// Each test file that uses this module compiles it anew and uses only part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use ferrite_tests::Target;

/// The node base: a target node created as `NAME` is `NODE_BASE:NAME`.
pub const NODE_BASE: &str = "iqn.2026-11.io.ferrite";

/// The environment variables through which libiscsi takes CHAP credentials; removed from
/// every client's environment so that the caller's shell cannot change a test's outcome.
const LIBISCSI_CHAP_VARS: [&str; 4] = [
    "LIBISCSI_CHAP_USERNAME",
    "LIBISCSI_CHAP_PASSWORD",
    "LIBISCSI_CHAP_TARGET_USERNAME",
    "LIBISCSI_CHAP_TARGET_PASSWORD",
];

/// A TCP port on 127.0.0.1 that nothing listens on right now (from the kernel's ephemeral
/// range, so it is neither 3260 nor one of the fixed ports other tests derive).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Creates portal group `tag` with one portal on 127.0.0.1 at a free port and returns the
/// port. The port is free when probed but may be taken before the target binds it (other
/// processes share the machine): on "address in use" (-98) another port is tried.
pub fn create_portal_group(t: &Target, tag: u32) -> u16 {
    let mut last = String::new();
    for _ in 0..10 {
        let port = free_port();
        let out = t.rpc(&[
            "iscsi_create_portal_group",
            &tag.to_string(),
            &format!("127.0.0.1:{port}"),
        ]);
        if out.ok() {
            return port;
        }
        assert!(
            out.stderr.contains("\"code\": -98,"),
            "iscsi_create_portal_group {tag} 127.0.0.1:{port} failed: {}\nlog:\n{}",
            out.stderr,
            t.log_text()
        );
        last = out.stderr;
    }
    panic!("no free port for portal group {tag} in 10 tries; last error: {last}");
}

/// Panics with the package to install when one of `tools` is not on PATH.
pub fn require_tools(tools: &[&str]) {
    for tool in tools {
        let found = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| Path::new(&dir).join(tool).is_file())
        });
        assert!(
            found,
            "{tool} not found on PATH: install libiscsi-bin (scripts/deps.sh test)"
        );
    }
}

/// What a client printed, and how it ended.
#[derive(Debug)]
pub struct Run {
    pub what: String,
    /// The exit status; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Both streams, for messages and for searching.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The command line and everything it printed, for a panic message.
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }

    /// Panics unless the client exited 0.
    pub fn assert_ok(&self, why: &str) -> &Self {
        assert!(self.ok(), "{why}: expected success; {}", self.describe());
        self
    }

    /// Panics unless the client failed on its own (not by timing out) and said `needle`.
    pub fn assert_refused(&self, why: &str, needle: &str) -> &Self {
        assert_ne!(
            self.code,
            Some(124),
            "{why}: the client hung (killed by timeout); {}",
            self.describe()
        );
        assert!(!self.ok(), "{why}: expected a refusal; {}", self.describe());
        assert!(
            self.text().contains(needle),
            "{why}: expected '{needle}' in the output; {}",
            self.describe()
        );
        self
    }
}

/// Runs `program args...` under `timeout 60` with `env` set and libiscsi's CHAP variables
/// otherwise removed.
pub fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "60", program])
        .args(args)
        .stdin(Stdio::null());
    for var in LIBISCSI_CHAP_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run timeout {program}: {e}"));
    Run {
        what: format!("{program} {}", args.join(" ")),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
