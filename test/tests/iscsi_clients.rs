//! Access control of ferrite's iSCSI target seen by a real initiator: libiscsi's `iscsi-inq`,
//! `iscsi-ls` and `iscsi-perf` against a `ferrite-tgt` configured through `app/rpc.py`.
//!
//! - CHAP on a target node, one-way and mutual, and on discovery sessions;
//! - ACLs (initiator groups by name and by network): an initiator outside the group can
//!   neither discover the target nor log in to it, and changes to a group apply to the next
//!   login;
//! - a target node deleted while sessions are open: its sessions drop, other target nodes
//!   keep serving theirs.
//!
//! libiscsi takes the initiator's CHAP name and secret from the URL (`user%secret@`), the
//! target's (for mutual CHAP) from the URL arguments `target_user` / `target_password` or the
//! variables `LIBISCSI_CHAP_TARGET_USERNAME` / `_PASSWORD`, and the initiator name from `-i`.
//! It checks the target's answer itself: a wrong target secret or name fails the login on the
//! initiator's side. One limit of the tools: `iscsi-ls -s` logs in to each target it lists
//! with the initiator's CHAP only (not mutual), so a mutual-CHAP target node is checked with
//! `iscsi-inq` and discovery with plain `iscsi-ls`.
//!
//! Each test starts its own `ferrite-tgt --no-default` with a portal on a free port.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{create_portal_group, require_tools, run, Run, NODE_BASE};
use ferrite_tests::{scratch, Target};
use serde_json::Value;

const USER: &str = "alice";
const SECRET: &str = "alice-secret-1";
const TARGET_USER: &str = "ferrite-target";
const TARGET_SECRET: &str = "target-secret-1";

/// The libiscsi status text of each login refusal.
const AUTHENTICATION_FAILURE: &str = "Authentication failure(513)";
const AUTHORIZATION_FAILURE: &str = "Authorization failure(514)";
const TARGET_NOT_FOUND: &str = "Target not found(515)";

/// A target with portal group 1 on a free port and initiator group 1 (any name from
/// 127.0.0.1).
struct Setup {
    t: Target,
    port: u16,
}

impl Setup {
    fn new() -> Setup {
        require_tools(&["iscsi-inq", "iscsi-ls", "iscsi-perf"]);
        let t = Target::start(&["--no-default", "-s", "256"]);
        let port = create_portal_group(&t, 1);
        t.rpc_ok(&["iscsi_create_initiator_group", "1", "ANY", "127.0.0.1/32"]);
        Setup { t, port }
    }

    /// Creates a 16 MiB malloc bdev and target node `name` (LUN 0) with these pg:ig maps
    /// and flags (`-d`, `-r -g 1`...).
    fn node(&self, name: &str, maps: &str, flags: &[&str]) {
        let bdev = format!("B_{}", name.replace('-', "_"));
        self.t
            .rpc_ok(&["bdev_malloc_create", "-b", &bdev, "16", "512"]);
        let lun = format!("{bdev}:0");
        let mut args = vec!["iscsi_create_target_node", name, "", &lun, maps, "32"];
        args.extend_from_slice(flags);
        self.t.rpc_ok(&args);
    }

    /// Auth group 1: the initiator's secret, and the target's own for mutual CHAP.
    fn auth_group(&self) {
        let secrets =
            format!("user:{USER} secret:{SECRET} muser:{TARGET_USER} msecret:{TARGET_SECRET}");
        self.t
            .rpc_ok(&["iscsi_create_auth_group", "1", "-c", &secrets]);
    }

    /// `iscsi://[user%secret@]127.0.0.1:PORT/NODE_BASE:node/0[?query]`
    fn url(&self, node: &str, chap: Option<(&str, &str)>, query: &str) -> String {
        let auth = chap.map(|(u, s)| format!("{u}%{s}@")).unwrap_or_default();
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!(
            "iscsi://{auth}127.0.0.1:{}/{NODE_BASE}:{node}/0{q}",
            self.port
        )
    }

    /// `iscsi://[user%secret@]127.0.0.1:PORT[?query]`, for iscsi-ls.
    fn portal(&self, chap: Option<(&str, &str)>, query: &str) -> String {
        let auth = chap.map(|(u, s)| format!("{u}%{s}@")).unwrap_or_default();
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("iscsi://{auth}127.0.0.1:{}{q}", self.port)
    }

    /// Panics unless the target process still runs and answers RPCs.
    fn assert_alive(&mut self) {
        let exited = self.t.child.try_wait().expect("wait");
        assert!(
            exited.is_none(),
            "ferrite-tgt exited ({exited:?}); log:\n{}",
            self.t.log_text()
        );
        self.t.rpc_ok(&["iscsi_get_target_nodes"]);
    }

    /// The target node names of the open connections.
    fn connected_nodes(&self) -> Vec<String> {
        match self.t.rpc_ok(&["iscsi_get_connections"]) {
            Value::Array(conns) => conns
                .iter()
                .map(|c| c["target_node_name"].as_str().unwrap_or("").to_string())
                .collect(),
            other => panic!("iscsi_get_connections returned {other}"),
        }
    }
}

/// `iscsi-inq [-i INITIATOR] URL` with `env`.
fn inq(url: &str, initiator: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut args = Vec::new();
    if let Some(name) = initiator {
        args.extend(["-i", name]);
    }
    args.push(url);
    run("iscsi-inq", &args, env)
}

/// Panics unless `iscsi-inq` logged in and read the standard INQUIRY of a disk.
fn assert_inquiry(r: &Run, why: &str) {
    r.assert_ok(why);
    assert!(
        r.stdout.contains("Peripheral Device Type:DIRECT_ACCESS"),
        "{why}: no DIRECT_ACCESS in the INQUIRY; {}",
        r.describe()
    );
}

/// `iscsi-ls [-s] [-i INITIATOR] PORTAL` with `env`.
fn ls(portal: &str, luns: bool, initiator: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut args = Vec::new();
    if luns {
        args.push("-s");
    }
    if let Some(name) = initiator {
        args.extend(["-i", name]);
    }
    args.push(portal);
    run("iscsi-ls", &args, env)
}

/// The target names iscsi-ls printed ("Target:NAME Portal:...").
fn listed(r: &Run) -> Vec<String> {
    r.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Target:"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn iqn(node: &str) -> String {
    format!("{NODE_BASE}:{node}")
}

#[test]
fn chap_one_way_on_a_target_node() {
    let mut s = Setup::new();
    s.auth_group();
    s.node("chap", "1:1", &["-r", "-g", "1"]);
    let right = Some((USER, SECRET));

    assert_inquiry(&inq(&s.url("chap", right, ""), None, &[]), "right secret");
    // The variables are the other way to hand libiscsi the initiator's secret.
    assert_inquiry(
        &inq(
            &s.url("chap", None, ""),
            None,
            &[
                ("LIBISCSI_CHAP_USERNAME", USER),
                ("LIBISCSI_CHAP_PASSWORD", SECRET),
            ],
        ),
        "right secret from LIBISCSI_CHAP_USERNAME/_PASSWORD",
    );
    inq(
        &s.url("chap", Some((USER, "wrong-secret-1")), ""),
        None,
        &[],
    )
    .assert_refused("wrong secret", AUTHENTICATION_FAILURE);
    inq(&s.url("chap", Some(("mallory", SECRET)), ""), None, &[])
        .assert_refused("unknown CHAP user", AUTHENTICATION_FAILURE);
    inq(&s.url("chap", None, ""), None, &[])
        .assert_refused("no credentials", AUTHENTICATION_FAILURE);
    // A normal session through iscsi-ls -s: discovery is open, the LUN listing logs in with
    // the same CHAP name and secret.
    let r = ls(&s.portal(right, ""), true, None, &[]);
    r.assert_ok("iscsi-ls -s with the right secret");
    assert_eq!(listed(&r), [iqn("chap")], "{}", r.describe());
    assert!(r.stdout.contains("Lun:0"), "{}", r.describe());

    // Changes apply to the next login: without the secret in the group, alice is refused;
    // with CHAP disabled on the node, anyone logs in.
    s.t.rpc_ok(&["iscsi_auth_group_remove_secret", "1", "-u", USER]);
    inq(&s.url("chap", right, ""), None, &[])
        .assert_refused("secret removed from the group", AUTHENTICATION_FAILURE);
    s.t.rpc_ok(&["iscsi_target_node_set_auth", &iqn("chap"), "-d"]);
    assert_inquiry(&inq(&s.url("chap", None, ""), None, &[]), "CHAP disabled");
    s.assert_alive();
}

#[test]
fn chap_mutual_checked_both_ways() {
    let mut s = Setup::new();
    s.auth_group();
    s.node("mutual", "1:1", &["-r", "-m", "-g", "1"]);
    let right = Some((USER, SECRET));
    let target_right = format!("target_user={TARGET_USER}&target_password={TARGET_SECRET}");

    // Both sides prove themselves: the target checks alice's response, libiscsi checks the
    // target's name and response to its own challenge.
    assert_inquiry(
        &inq(&s.url("mutual", right, &target_right), None, &[]),
        "mutual CHAP, target credential in the URL",
    );
    assert_inquiry(
        &inq(
            &s.url("mutual", right, ""),
            None,
            &[
                ("LIBISCSI_CHAP_TARGET_USERNAME", TARGET_USER),
                ("LIBISCSI_CHAP_TARGET_PASSWORD", TARGET_SECRET),
            ],
        ),
        "mutual CHAP, target credential from LIBISCSI_CHAP_TARGET_*",
    );

    // The target side: a wrong initiator secret is refused even when the initiator would
    // accept the target; an initiator that does not ask the target to authenticate is
    // refused by a mutual-CHAP node.
    inq(
        &s.url("mutual", Some((USER, "wrong-secret-1")), &target_right),
        None,
        &[],
    )
    .assert_refused(
        "mutual CHAP, wrong initiator secret",
        AUTHENTICATION_FAILURE,
    );
    inq(&s.url("mutual", right, ""), None, &[])
        .assert_refused("one-way CHAP to a mutual-CHAP node", AUTHENTICATION_FAILURE);
    inq(&s.url("mutual", None, &target_right), None, &[])
        .assert_refused("no initiator credentials", AUTHENTICATION_FAILURE);

    // The initiator side: the target's answer is computed with its own secret, so an
    // initiator expecting another secret or another name refuses the target.
    inq(
        &s.url(
            "mutual",
            right,
            &format!("target_user={TARGET_USER}&target_password=not-the-target-secret"),
        ),
        None,
        &[],
    )
    .assert_refused(
        "initiator expects another target secret",
        "Invalid CHAP_R response from the target",
    );
    inq(
        &s.url(
            "mutual",
            right,
            &format!("target_user=another-target&target_password={TARGET_SECRET}"),
        ),
        None,
        &[],
    )
    .assert_refused(
        "initiator expects another target name",
        "Wrong CHAP targetname received",
    );
    s.assert_alive();
}

#[test]
fn chap_on_discovery_sessions() {
    let mut s = Setup::new();
    s.auth_group();
    s.node("disk", "1:1", &["-d"]);
    let right = Some((USER, SECRET));

    let r = ls(&s.portal(None, ""), false, None, &[]);
    r.assert_ok("open discovery");
    assert_eq!(listed(&r), [iqn("disk")], "{}", r.describe());

    s.t.rpc_ok(&["iscsi_set_discovery_auth", "-r", "-g", "1"]);
    ls(&s.portal(None, ""), false, None, &[])
        .assert_refused("discovery, no credentials", AUTHENTICATION_FAILURE);
    ls(
        &s.portal(Some((USER, "wrong-secret-1")), ""),
        false,
        None,
        &[],
    )
    .assert_refused("discovery, wrong secret", AUTHENTICATION_FAILURE);
    let r = ls(&s.portal(right, ""), true, None, &[]);
    r.assert_ok("discovery with the right secret, then the LUN listing");
    assert_eq!(listed(&r), [iqn("disk")], "{}", r.describe());
    assert!(r.stdout.contains("Lun:0"), "{}", r.describe());
    // Discovery CHAP guards discovery only: the node itself has CHAP disabled.
    assert_inquiry(
        &inq(&s.url("disk", None, ""), None, &[]),
        "normal login to a CHAP-disabled node while discovery needs CHAP",
    );

    s.t.rpc_ok(&["iscsi_set_discovery_auth", "-r", "-m", "-g", "1"]);
    ls(&s.portal(right, ""), false, None, &[])
        .assert_refused("mutual discovery, one-way CHAP", AUTHENTICATION_FAILURE);
    let target_env = [
        ("LIBISCSI_CHAP_TARGET_USERNAME", TARGET_USER),
        ("LIBISCSI_CHAP_TARGET_PASSWORD", TARGET_SECRET),
    ];
    let r = ls(&s.portal(right, ""), false, None, &target_env);
    r.assert_ok("mutual discovery, target credential from LIBISCSI_CHAP_TARGET_*");
    assert_eq!(listed(&r), [iqn("disk")], "{}", r.describe());
    let r = ls(
        &s.portal(
            right,
            &format!("target_user={TARGET_USER}&target_password={TARGET_SECRET}"),
        ),
        false,
        None,
        &[],
    );
    r.assert_ok("mutual discovery, target credential in the URL");
    ls(
        &s.portal(right, ""),
        false,
        None,
        &[
            ("LIBISCSI_CHAP_TARGET_USERNAME", TARGET_USER),
            ("LIBISCSI_CHAP_TARGET_PASSWORD", "not-the-target-secret"),
        ],
    )
    .assert_refused(
        "mutual discovery, initiator expects another target secret",
        "Invalid CHAP_R response from the target",
    );

    s.t.rpc_ok(&["iscsi_set_discovery_auth", "-d"]);
    let r = ls(&s.portal(None, ""), false, None, &[]);
    r.assert_ok("discovery open again");
    assert_eq!(listed(&r), [iqn("disk")], "{}", r.describe());
    s.assert_alive();
}

#[test]
fn acl_outsiders_neither_discover_nor_log_in() {
    const ALLOWED: &str = "iqn.2026-11.test:allowed";
    const OUTSIDER: &str = "iqn.2026-11.test:outsider";
    const BANNED: &str = "iqn.2026-11.test:banned";
    let mut s = Setup::new();
    // Group 2: one initiator name; group 3: any name, but only from 10.0.0.0/8 (not
    // 127.0.0.1); group 4: any name but one.
    s.t.rpc_ok(&["iscsi_create_initiator_group", "2", ALLOWED, "127.0.0.1/32"]);
    s.t.rpc_ok(&["iscsi_create_initiator_group", "3", "ANY", "10.0.0.0/8"]);
    s.t.rpc_ok(&[
        "iscsi_create_initiator_group",
        "4",
        &format!("!{BANNED} ANY"),
        "127.0.0.1/32",
    ]);
    s.node("open", "1:1", &["-d"]);
    s.node("named", "1:2", &["-d"]);
    s.node("remote", "1:3", &["-d"]);
    s.node("nobanned", "1:4", &["-d"]);

    // Discovery lists, to each initiator, only what it may log in to (iscsi-ls -s then logs
    // in to each listed target, so a listed but refused target would fail it).
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let r = ls(&s.portal(None, ""), true, Some(OUTSIDER), &[]);
    r.assert_ok("iscsi-ls -s as an outsider");
    assert_eq!(
        sorted(listed(&r)),
        [iqn("nobanned"), iqn("open")],
        "{}",
        r.describe()
    );
    let r = ls(&s.portal(None, ""), true, Some(ALLOWED), &[]);
    r.assert_ok("iscsi-ls -s as the allowed initiator");
    assert_eq!(
        sorted(listed(&r)),
        [iqn("named"), iqn("nobanned"), iqn("open")],
        "{}",
        r.describe()
    );
    let r = ls(&s.portal(None, ""), true, Some(BANNED), &[]);
    r.assert_ok("iscsi-ls -s as the banned initiator");
    assert_eq!(sorted(listed(&r)), [iqn("open")], "{}", r.describe());

    // Logins.
    assert_inquiry(
        &inq(&s.url("named", None, ""), Some(ALLOWED), &[]),
        "allowed initiator",
    );
    inq(&s.url("named", None, ""), Some(OUTSIDER), &[])
        .assert_refused("outsider to a node of one initiator", AUTHORIZATION_FAILURE);
    // libiscsi's own default initiator name is an outsider too.
    inq(&s.url("named", None, ""), None, &[])
        .assert_refused("iscsi-inq's default name", AUTHORIZATION_FAILURE);
    inq(&s.url("remote", None, ""), Some(ALLOWED), &[])
        .assert_refused("from outside the group's network", AUTHORIZATION_FAILURE);
    inq(&s.url("nobanned", None, ""), Some(BANNED), &[])
        .assert_refused("a denied name", AUTHORIZATION_FAILURE);
    assert_inquiry(
        &inq(&s.url("nobanned", None, ""), Some(OUTSIDER), &[]),
        "any other name where one is denied",
    );
    inq(&s.url("no-such-node", None, ""), Some(ALLOWED), &[])
        .assert_refused("a node that does not exist", TARGET_NOT_FOUND);

    // Changes to a group apply to the next discovery and login.
    s.t.rpc_ok(&["iscsi_initiator_group_add_initiators", "2", "-n", OUTSIDER]);
    assert_inquiry(
        &inq(&s.url("named", None, ""), Some(OUTSIDER), &[]),
        "outsider added to the group",
    );
    let r = ls(&s.portal(None, ""), false, Some(OUTSIDER), &[]);
    assert!(listed(&r).contains(&iqn("named")), "{}", r.describe());
    s.t.rpc_ok(&[
        "iscsi_initiator_group_remove_initiators",
        "2",
        "-n",
        OUTSIDER,
    ]);
    inq(&s.url("named", None, ""), Some(OUTSIDER), &[])
        .assert_refused("outsider removed again", AUTHORIZATION_FAILURE);
    let r = ls(&s.portal(None, ""), false, Some(OUTSIDER), &[]);
    r.assert_ok("iscsi-ls after the removal");
    assert!(!listed(&r).contains(&iqn("named")), "{}", r.describe());
    s.assert_alive();
}

/// A background client, killed if the test ends before it does.
struct Background {
    child: Child,
    out: PathBuf,
    what: String,
}

impl Background {
    /// `timeout LIMIT program args...`, stdout and stderr to a scratch file.
    fn spawn(program: &str, args: &[&str], limit_secs: u32) -> Background {
        let out = scratch("client-out");
        let f = std::fs::File::create(&out).expect("scratch file");
        let child = Command::new("timeout")
            .args(["-k", "5", &limit_secs.to_string(), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        Background {
            child,
            out,
            what: format!("{program} {}", args.join(" ")),
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .replace('\r', "\n")
    }

    /// Waits up to `limit` for the exit; `None` if it still runs then.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.out);
    }
}

/// Waits up to `limit` for `cond`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn deleting_a_target_node_drops_its_sessions_only() {
    let mut s = Setup::new();
    s.node("doomed", "1:1", &["-d"]);
    s.node("keeper", "1:1", &["-d"]);
    // iscsi-perf reads with 4 commands in flight until its time is up; -x 0: when the
    // connection drops, one reconnect attempt (a fresh login) and no more.
    let mut doomed = Background::spawn(
        "iscsi-perf",
        &[
            "-x",
            "0",
            "-m",
            "4",
            "-b",
            "8",
            "-t",
            "60",
            &s.url("doomed", None, ""),
        ],
        90,
    );
    let mut keeper = Background::spawn(
        "iscsi-perf",
        &[
            "-x",
            "0",
            "-m",
            "4",
            "-b",
            "8",
            "-t",
            "10",
            &s.url("keeper", None, ""),
        ],
        60,
    );
    let both = [iqn("doomed"), iqn("keeper")];
    assert!(
        wait_for(Duration::from_secs(30), || {
            let nodes = s.connected_nodes();
            both.iter().all(|n| nodes.contains(n))
        }),
        "the two iscsi-perf sessions did not show in iscsi_get_connections: {:?}\n{}\n{}",
        s.connected_nodes(),
        doomed.output(),
        keeper.output()
    );

    s.t.rpc_ok(&["iscsi_delete_target_node", &iqn("doomed")]);

    // The doomed session drops; its client's reconnect finds no such target and it gives up
    // long before its 60 s are up.
    let st = doomed.wait(Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "`{}` still runs 20 s after its target node was deleted:\n{}",
            doomed.what,
            doomed.output()
        )
    });
    assert!(
        !st.success(),
        "`{}` succeeded after its target node was deleted ({st}):\n{}",
        doomed.what,
        doomed.output()
    );
    assert!(
        doomed.output().contains(TARGET_NOT_FOUND),
        "`{}`: expected its reconnect to fail with {TARGET_NOT_FOUND}:\n{}",
        doomed.what,
        doomed.output()
    );
    assert!(
        wait_for(Duration::from_secs(10), || !s
            .connected_nodes()
            .contains(&iqn("doomed"))),
        "a session of the deleted node is still listed: {:?}",
        s.connected_nodes()
    );

    // The other session was not touched: while its client runs (10 s), its session stays,
    // and the client finishes without an error.
    if keeper.running() {
        let nodes = s.connected_nodes();
        assert!(
            nodes.contains(&iqn("keeper")),
            "the other node's session went too: {nodes:?}\n{}",
            keeper.output()
        );
    }
    let st = keeper.wait(Duration::from_secs(45)).unwrap_or_else(|| {
        panic!(
            "`{}` did not finish its 10 s run:\n{}",
            keeper.what,
            keeper.output()
        )
    });
    assert!(
        st.success() && keeper.output().contains("finished."),
        "`{}` failed ({st}) while another node was deleted:\n{}",
        keeper.what,
        keeper.output()
    );

    // And the target keeps serving: new logins to the other node, none to the deleted one,
    // which discovery no longer lists; the deleted node's bdev is free again.
    assert_inquiry(
        &inq(&s.url("keeper", None, ""), None, &[]),
        "login to the remaining node",
    );
    inq(&s.url("doomed", None, ""), None, &[])
        .assert_refused("login to the deleted node", TARGET_NOT_FOUND);
    let r = ls(&s.portal(None, ""), true, None, &[]);
    r.assert_ok("iscsi-ls -s after the deletion");
    assert_eq!(listed(&r), [iqn("keeper")], "{}", r.describe());
    s.t.rpc_ok(&["bdev_malloc_delete", "B_doomed"]);
    s.assert_alive();
}
