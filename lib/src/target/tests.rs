//! The target model on its own (a private model, fake bdevs and fake hooks) and
//! through its JSON-RPC methods called in-process.

use std::io;
use std::net::IpAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::*;
use crate::jsonrpc::{Methods, RpcError};
use crate::subsystem::Subsystem;

const BDEVS: [&str; 3] = ["Malloc0", "Malloc1", "Null0"];

fn test_model() -> Arc<TargetModel> {
    Arc::new(TargetModel::with_bdev_check(|n| BDEVS.contains(&n)))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Records the portal hooks' calls; refuses to listen on port 3999.
#[derive(Default)]
struct FakePortals {
    log: Mutex<Vec<String>>,
}

impl PortalHooks for FakePortals {
    fn listen(&self, pg: u32, p: &Portal) -> io::Result<()> {
        if p.port == 3999 {
            return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
        }
        self.log.lock().unwrap().push(format!("listen {pg} {p}"));
        Ok(())
    }
    fn start(&self, pg: u32, p: &Portal) {
        self.log.lock().unwrap().push(format!("start {pg} {p}"));
    }
    fn unlisten(&self, pg: u32, p: &Portal) {
        self.log.lock().unwrap().push(format!("unlisten {pg} {p}"));
    }
}

#[derive(Default)]
struct FakeTargets {
    log: Mutex<Vec<String>>,
}

impl TargetHooks for FakeTargets {
    fn target_changed(&self, snap: &Arc<ModelSnapshot>, name: &str, change: &TargetChange) {
        assert!(snap.target(name).is_some(), "the snapshot shows {name}");
        self.log.lock().unwrap().push(format!("{change:?} {name}"));
    }
    fn target_deleted(&self, name: &str) {
        self.log.lock().unwrap().push(format!("deleted {name}"));
    }
}

struct FakeConnections;

impl ConnectionsHook for FakeConnections {
    fn list(&self) -> Vec<Value> {
        vec![json!({"id": 1, "target_node_name": "iqn.x"})]
    }
}

fn portal(host: &str, port: &str) -> PortalSpec {
    PortalSpec {
        host: host.into(),
        port: port.into(),
        iser: false,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn disk(name: &str, maps: &[(u32, u32)]) -> TargetNodeSpec {
    TargetNodeSpec {
        name: name.into(),
        alias: format!("{name} alias"),
        pg_ig_maps: maps.to_vec(),
        luns: vec![("Malloc0".into(), 0)],
        queue_depth: 32,
        ..TargetNodeSpec::default()
    }
}

/// pg 1 (public, 127.0.0.1:3260 and [::1]:3260), pg 2 (private), ig 1 (ANY from
/// loopback), ig 2 (one name from 10/8, but not 10.0.0.66), target disk0 on 1:1
/// and 2:1.
fn populated() -> Arc<TargetModel> {
    let m = test_model();
    m.create_portal_group(
        1,
        &[portal("127.0.0.1", "3260"), portal("[::1]", "3260")],
        false,
        false,
    )
    .unwrap();
    m.create_portal_group(2, &[portal("127.0.0.2", "3260")], true, false)
        .unwrap();
    m.create_initiator_group(1, &strings(&["ANY"]), &strings(&["127.0.0.0/8", "[::1]"]))
        .unwrap();
    m.create_initiator_group(
        2,
        &strings(&["iqn.2000-01.com.example:h1"]),
        &strings(&["!10.0.0.66", "10.0.0.0/8"]),
    )
    .unwrap();
    m.create_target_node(&disk("disk0", &[(1, 1), (2, 1)]))
        .unwrap();
    m
}

#[test]
fn snapshots_are_versioned_and_immutable() {
    let m = test_model();
    let empty = m.snapshot();
    assert_eq!(empty.version, 0);
    m.create_initiator_group(1, &strings(&["ANY"]), &strings(&["ANY"]))
        .unwrap();
    let one = m.snapshot();
    assert_eq!(one.version, 1);
    assert!(
        empty.initiator_groups.is_empty(),
        "old snapshots do not change"
    );
    assert_eq!(one.initiator_groups.len(), 1);
    // A refused change publishes nothing.
    assert!(m
        .create_initiator_group(1, &strings(&["ANY"]), &strings(&["ANY"]))
        .is_err());
    assert_eq!(m.snapshot().version, 1);
}

#[test]
fn target_names_get_the_node_base_and_compare_without_case() {
    let m = populated();
    let s = m.snapshot();
    let t = s
        .target("IQN.2026-11.io.ferrite:DISK0")
        .expect("case-insensitive");
    assert_eq!(t.name, "iqn.2026-11.io.ferrite:disk0");
    assert_eq!(s.find_target("disk0").unwrap().name, t.name);
    assert!(s.target("disk0").is_none(), "login names are full names");
    let e = m.create_target_node(&disk("DISK0", &[(1, 1)])).unwrap_err();
    assert_eq!(e.errno, libc::EEXIST);
    let e = m
        .create_target_node(&disk("iqn.2026-11.io.ferrite:disk0", &[(1, 1)]))
        .unwrap_err();
    assert_eq!(e.errno, libc::EEXIST);
    let e = m
        .create_target_node(&disk("bad name", &[(1, 1)]))
        .unwrap_err();
    assert!(e.message.starts_with("name: "), "{e}");
    let e = m
        .create_target_node(&disk("eui.12", &[(1, 1)]))
        .unwrap_err();
    assert!(e.message.contains("eui"), "{e}");
    m.create_target_node(&disk("eui.0123456789abcdef", &[(1, 1)]))
        .unwrap();
    // Deleting by the short name works too.
    m.delete_target_node("disk0").unwrap();
    assert_eq!(
        m.delete_target_node("disk0").unwrap_err().errno,
        libc::ENOENT
    );
}

#[test]
fn access_follows_spdk_rules() {
    let m = populated();
    let s = m.snapshot();
    let t = s.target("iqn.2026-11.io.ferrite:disk0").unwrap().clone();
    let h1 = "iqn.2000-01.com.example:h1";
    assert_eq!(s.check_access(&t, 1, h1, ip("127.0.0.1")), Ok(1));
    assert_eq!(s.check_access(&t, 1, h1, ip("::1")), Ok(1));
    assert_eq!(s.check_access(&t, 1, h1, ip("::ffff:127.0.0.9")), Ok(1));
    assert!(s.check_access(&t, 1, h1, ip("10.1.1.1")).is_err());
    assert!(s
        .check_access(&t, 3, h1, ip("127.0.0.1"))
        .unwrap_err()
        .contains("not mapped to portal group 3"));

    // Map ig 2 (deny ! first) through pg 1 too.
    m.target_node_add_maps("disk0", &[(1, 2)]).unwrap();
    let s = m.snapshot();
    let t = s.target("iqn.2026-11.io.ferrite:disk0").unwrap().clone();
    assert_eq!(s.check_access(&t, 1, h1, ip("10.1.1.1")), Ok(2));
    assert_eq!(
        s.check_access(&t, 1, "IQN.2000-01.COM.EXAMPLE:H1", ip("10.1.1.1")),
        Ok(2)
    );
    assert!(s
        .check_access(&t, 1, h1, ip("10.0.0.66"))
        .unwrap_err()
        .contains("denies"));
    assert!(s.check_access(&t, 1, "iqn.other", ip("10.1.1.1")).is_err());

    // A "!name" entry denies even when a later group would allow.
    m.create_initiator_group(3, &strings(&["!iqn.bad", "ANY"]), &strings(&["ANY"]))
        .unwrap();
    m.target_node_remove_maps("disk0", &[(1, 1), (1, 2)])
        .unwrap();
    m.target_node_add_maps("disk0", &[(1, 3), (1, 1)]).unwrap();
    let s = m.snapshot();
    assert!(matches!(
        s.login_target(
            "iqn.2026-11.io.ferrite:disk0",
            1,
            "iqn.bad",
            ip("127.0.0.1")
        ),
        Err(LoginRefusal::NotAllowed(_))
    ));
    assert_eq!(
        s.login_target("iqn.2026-11.io.ferrite:disk0", 1, "iqn.good", ip("8.8.8.8"))
            .unwrap()
            .queue_depth,
        32
    );
    assert_eq!(
        s.login_target("iqn.nope:x", 1, "iqn.good", ip("127.0.0.1")),
        Err(LoginRefusal::NotFound)
    );
}

#[test]
fn send_targets_hides_private_groups_and_what_acls_refuse() {
    let m = populated();
    m.create_portal_group(3, &[portal("0.0.0.0", "3261")], false, false)
        .unwrap();
    m.create_target_node(&disk("disk1", &[(3, 1)])).unwrap();
    m.create_target_node(&disk("hidden", &[(2, 1)])).unwrap();
    m.create_target_node(&disk("others", &[(1, 2)])).unwrap();
    let s = m.snapshot();
    let found = s.send_targets("iqn.x", ip("127.0.0.1"), Some(ip("127.0.0.5")), "All");
    let names: Vec<&str> = found.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "iqn.2026-11.io.ferrite:disk0",
            "iqn.2026-11.io.ferrite:disk1"
        ]
    );
    let addrs: Vec<String> = found[0].addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        addrs,
        ["127.0.0.1:3260,1", "[::1]:3260,1"],
        "pg 2 is private"
    );
    assert_eq!(found[1].addresses[0].to_string(), "127.0.0.5:3261,3");
    // A wildcard portal is left out without the local address.
    let found = s.send_targets("iqn.x", ip("127.0.0.1"), None, "All");
    assert_eq!(found.len(), 1);
    // One target by name; another initiator sees what its ACLs allow.
    let one = s.send_targets(
        "iqn.x",
        ip("127.0.0.1"),
        None,
        "IQN.2026-11.io.ferrite:disk0",
    );
    assert_eq!(one.len(), 1);
    let h1 = s.send_targets("iqn.2000-01.com.example:h1", ip("10.2.3.4"), None, "All");
    assert_eq!(h1.len(), 1);
    assert_eq!(h1[0].name, "iqn.2026-11.io.ferrite:others");
    assert!(s
        .send_targets("iqn.2000-01.com.example:h1", ip("10.0.0.66"), None, "All")
        .is_empty());
}

#[test]
fn portal_of_finds_exact_then_wildcard() {
    let m = populated();
    m.create_portal_group(3, &[portal("[::]", "3261")], false, false)
        .unwrap();
    let s = m.snapshot();
    let (g, p) = s
        .portal_of("127.0.0.1:3260".parse().unwrap(), false)
        .unwrap();
    assert_eq!((g.tag, p.host.as_str()), (1, "127.0.0.1"));
    let (g, _) = s
        .portal_of("[::ffff:127.0.0.2]:3260".parse().unwrap(), false)
        .unwrap();
    assert_eq!(g.tag, 2);
    let (g, _) = s
        .portal_of("192.168.1.1:3261".parse().unwrap(), false)
        .unwrap();
    assert_eq!(g.tag, 3);
    assert!(s
        .portal_of("127.0.0.1:3260".parse().unwrap(), true)
        .is_none());
    assert!(s
        .portal_of("127.0.0.1:9999".parse().unwrap(), false)
        .is_none());
}

#[test]
fn portal_groups_listen_through_the_hooks_all_or_nothing() {
    let m = test_model();
    let portals = Arc::new(FakePortals::default());
    m.set_hooks(Hooks {
        portals: Some(portals.clone()),
        ..Hooks::default()
    })
    .unwrap();
    assert!(m.set_hooks(Hooks::default()).is_err(), "once");
    m.create_portal_group(1, &[portal("127.0.0.1", "3260")], false, false)
        .unwrap();
    let e = m
        .create_portal_group(
            2,
            &[portal("127.0.0.1", "3261"), portal("127.0.0.1", "3999")],
            false,
            false,
        )
        .unwrap_err();
    assert_eq!(e.errno, libc::EADDRINUSE);
    assert!(e.message.contains("cannot listen on 127.0.0.1:3999"), "{e}");
    assert!(m.snapshot().portal_group(2).is_none());
    m.create_portal_group(3, &[portal("127.0.0.1", "3262")], false, true)
        .unwrap();
    assert!(!m.snapshot().portal_group(3).unwrap().started);
    m.start_portal_group(3).unwrap();
    m.start_portal_group(3).unwrap();
    assert!(m.snapshot().portal_group(3).unwrap().started);
    m.delete_portal_group(1).unwrap();
    assert_eq!(
        *portals.log.lock().unwrap(),
        [
            "listen 1 127.0.0.1:3260",
            "start 1 127.0.0.1:3260",
            "listen 2 127.0.0.1:3261",
            "unlisten 2 127.0.0.1:3261",
            "listen 3 127.0.0.1:3262",
            "start 3 127.0.0.1:3262",
            "unlisten 1 127.0.0.1:3260",
        ]
    );
}

#[test]
fn hooks_set_late_listen_on_existing_groups() {
    let m = test_model();
    m.create_portal_group(1, &[portal("127.0.0.1", "3260")], false, false)
        .unwrap();
    m.create_portal_group(2, &[portal("127.0.0.1", "3261")], false, true)
        .unwrap();
    let portals = Arc::new(FakePortals::default());
    m.set_hooks(Hooks {
        portals: Some(portals.clone()),
        ..Hooks::default()
    })
    .unwrap();
    assert_eq!(
        *portals.log.lock().unwrap(),
        [
            "listen 1 127.0.0.1:3260",
            "start 1 127.0.0.1:3260",
            "listen 2 127.0.0.1:3261"
        ]
    );
}

#[test]
fn target_hooks_hear_about_changes_and_deletions() {
    let m = populated();
    let targets = Arc::new(FakeTargets::default());
    m.set_hooks(Hooks {
        targets: Some(targets.clone()),
        connections: Some(Arc::new(FakeConnections)),
        ..Hooks::default()
    })
    .unwrap();
    m.create_target_node(&disk("disk1", &[(1, 1)])).unwrap();
    assert_eq!(m.target_node_add_lun("disk1", "Malloc1", None), Ok(1));
    m.target_node_set_auth(
        "disk1",
        ChapSettings {
            disable_chap: true,
            ..ChapSettings::default()
        },
    )
    .unwrap();
    m.initiator_group_add(1, &strings(&["iqn.x"]), &[]).unwrap();
    m.delete_target_node("iqn.2026-11.io.ferrite:disk1")
        .unwrap();
    m.clear();
    let p = "iqn.2026-11.io.ferrite:";
    assert_eq!(
        *targets.log.lock().unwrap(),
        [
            format!("Created {p}disk1"),
            format!("LunAdded {{ lun_id: 1 }} {p}disk1"),
            format!("AuthChanged {p}disk1"),
            format!("MapsChanged {p}disk0"),
            format!("MapsChanged {p}disk1"),
            format!("deleted {p}disk1"),
            format!("deleted {p}disk0"),
        ]
    );
    assert_eq!(m.connections().len(), 1);
    let s = m.snapshot();
    assert!(s.target_nodes.is_empty() && s.portal_groups.is_empty());
}

#[test]
fn validation_errors_name_the_problem() {
    let m = populated();
    let err = |r: Result<(), ModelError>, errno: i32, needle: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.errno, errno, "{e}");
        assert!(e.message.contains(needle), "expected {needle:?} in {e}");
    };
    let spec = |f: &dyn Fn(&mut TargetNodeSpec)| {
        let mut s = disk("new", &[(1, 1)]);
        f(&mut s);
        m.create_target_node(&s).map(|_| ())
    };
    // Target nodes.
    err(
        spec(&|s| s.pg_ig_maps = vec![(9, 1)]),
        libc::ENOENT,
        "portal group 9 does not exist",
    );
    err(
        spec(&|s| s.pg_ig_maps = vec![(1, 9)]),
        libc::ENOENT,
        "initiator group 9 does not exist",
    );
    err(
        spec(&|s| s.pg_ig_maps = vec![(1, 1), (1, 1)]),
        libc::EEXIST,
        "1:1 is already mapped",
    );
    err(spec(&|s| s.luns = vec![]), libc::EINVAL, "LUN 0");
    err(
        spec(&|s| s.luns = vec![("Malloc0".into(), 1)]),
        libc::EINVAL,
        "LUN 0 is required",
    );
    err(
        spec(&|s| s.luns = vec![("Malloc0".into(), 0), ("Malloc1".into(), 0)]),
        libc::EEXIST,
        "LUN 0 is given twice",
    );
    err(
        spec(&|s| s.luns = vec![("Nope".into(), 0)]),
        libc::ENODEV,
        "bdev Nope does not exist",
    );
    err(
        spec(&|s| s.luns = vec![("Malloc0".into(), 16384)]),
        libc::EINVAL,
        "lun_id 16384",
    );
    err(
        spec(&|s| s.luns = vec![("Malloc0".into(), -1)]),
        libc::EINVAL,
        "lun_id -1",
    );
    err(
        spec(&|s| {
            s.chap = ChapSettings {
                disable_chap: true,
                require_chap: true,
                ..Default::default()
            }
        }),
        libc::EINVAL,
        "disable_chap cannot be combined with require_chap",
    );
    err(
        spec(&|s| {
            s.chap = ChapSettings {
                mutual_chap: true,
                ..Default::default()
            }
        }),
        libc::EINVAL,
        "mutual_chap needs require_chap",
    );
    err(
        spec(&|s| {
            s.chap = ChapSettings {
                require_chap: true,
                chap_group: 7,
                ..Default::default()
            }
        }),
        libc::ENOENT,
        "auth group 7 does not exist",
    );
    err(
        spec(&|s| s.alias = "a\nb".into()),
        libc::EINVAL,
        "alias_name",
    );
    err(
        spec(&|s| s.pg_ig_maps = vec![(0, 1)]),
        libc::EINVAL,
        "pg_tag 0",
    );
    // Queue depth out of 1..=max_queue_depth is clamped, as in SPDK.
    spec(&|s| {
        s.name = "deep".into();
        s.queue_depth = 1000;
    })
    .unwrap();
    assert_eq!(m.snapshot().find_target("deep").unwrap().queue_depth, 64);

    // LUNs added later.
    err(
        m.target_node_add_lun("disk0", "Malloc1", Some(0))
            .map(|_| ()),
        libc::EEXIST,
        "already has LUN 0",
    );
    err(
        m.target_node_add_lun("disk0", "Nope", None).map(|_| ()),
        libc::ENODEV,
        "bdev Nope",
    );
    err(
        m.target_node_add_lun("nope", "Malloc1", None).map(|_| ()),
        libc::ENOENT,
        "target node nope",
    );
    err(
        m.target_node_add_lun("disk0", "Malloc1", Some(20000))
            .map(|_| ()),
        libc::EINVAL,
        "lun_id 20000",
    );
    assert_eq!(m.target_node_add_lun("disk0", "Malloc1", Some(5)), Ok(5));
    assert_eq!(m.target_node_add_lun("disk0", "Null0", Some(-1)), Ok(1));
    let luns: Vec<u32> = m
        .snapshot()
        .find_target("disk0")
        .unwrap()
        .luns
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(luns, [0, 1, 5]);

    // Maps.
    err(
        m.target_node_add_maps("disk0", &[(1, 1)]),
        libc::EEXIST,
        "already mapped",
    );
    err(
        m.target_node_add_maps("disk0", &[(1, 2), (9, 2)]),
        libc::ENOENT,
        "portal group 9",
    );
    assert!(
        m.snapshot()
            .find_target("disk0")
            .unwrap()
            .pg_ig_pairs()
            .all(|p| p != (1, 2)),
        "all or nothing"
    );
    err(
        m.target_node_remove_maps("disk0", &[(1, 2)]),
        libc::ENOENT,
        "1:2 is not mapped",
    );

    // Groups in use.
    err(
        m.delete_portal_group(1),
        libc::EBUSY,
        "in use by target node iqn.2026-11.io.ferrite:disk0",
    );
    err(
        m.delete_initiator_group(1),
        libc::EBUSY,
        "in use by target node",
    );
    err(
        m.delete_portal_group(9),
        libc::ENOENT,
        "portal group 9 does not exist",
    );
    m.delete_initiator_group(2).unwrap();

    // Portal groups.
    err(
        m.create_portal_group(1, &[portal("127.0.0.9", "3260")], false, false),
        libc::EEXIST,
        "portal group 1 already exists",
    );
    err(
        m.create_portal_group(4, &[portal("127.0.0.1", "3260")], false, false),
        libc::EEXIST,
        "already in portal group 1",
    );
    err(
        m.create_portal_group(
            4,
            &[portal("127.0.0.9", "3260"), portal("127.0.0.9", "3260")],
            false,
            false,
        ),
        libc::EEXIST,
        "given twice",
    );
    err(
        m.create_portal_group(4, &[portal("my.host", "3260")], false, false),
        libc::EINVAL,
        "not a numeric address",
    );
    err(
        m.create_portal_group(4, &[portal("127.0.0.9", "99999")], false, false),
        libc::EINVAL,
        "not a TCP port",
    );
    err(
        m.create_portal_group(4, &[], false, false),
        libc::EINVAL,
        "at least one portal",
    );
    err(
        m.create_portal_group(0, &[portal("127.0.0.9", "1")], false, false),
        libc::EINVAL,
        "tag 0",
    );
    err(
        m.create_portal_group(70000, &[portal("127.0.0.9", "1")], false, false),
        libc::EINVAL,
        "1..=65535",
    );
    // The same address as iSER is another portal.
    m.create_portal_group(
        4,
        &[PortalSpec {
            iser: true,
            ..portal("127.0.0.1", "3260")
        }],
        false,
        false,
    )
    .unwrap();

    // Initiator groups.
    let ig = |tag, i: &[&str], n: &[&str]| m.create_initiator_group(tag, &strings(i), &strings(n));
    err(
        ig(1, &["ANY"], &["ANY"]),
        libc::EEXIST,
        "initiator group 1 already exists",
    );
    err(
        ig(5, &[], &["ANY"]),
        libc::EINVAL,
        "initiators: at least one",
    );
    err(ig(5, &["ANY"], &[]), libc::EINVAL, "netmasks: at least one");
    err(
        ig(5, &["ANY"], &["10.0.0.0/40"]),
        libc::EINVAL,
        "netmasks: netmask \"10.0.0.0/40\"",
    );
    err(
        ig(5, &["ANY"], &["10.0.0.0/8", "10.1.0.0/8"]),
        libc::EEXIST,
        "already in the group",
    );
    err(
        ig(5, &["iqn.a", "IQN.A"], &["ANY"]),
        libc::EEXIST,
        "already in the group",
    );
    err(
        ig(5, &["bad name"], &["ANY"]),
        libc::EINVAL,
        "initiators: initiator",
    );
    err(
        m.initiator_group_add(1, &strings(&["ANY"]), &[]),
        libc::EEXIST,
        "ANY is already",
    );
    err(
        m.initiator_group_add(1, &[], &[]),
        libc::EINVAL,
        "give initiators or netmasks",
    );
    err(
        m.initiator_group_add(9, &strings(&["iqn.a"]), &[]),
        libc::ENOENT,
        "initiator group 9",
    );
    err(
        m.initiator_group_remove(1, &strings(&["iqn.a"]), &[]),
        libc::ENOENT,
        "iqn.a is not in",
    );
    err(
        m.initiator_group_remove(1, &strings(&["ANY"]), &[]),
        libc::EINVAL,
        "no initiators left",
    );
    m.initiator_group_add(1, &strings(&["iqn.a"]), &strings(&["10.0.0.0/8"]))
        .unwrap();
    m.initiator_group_remove(1, &strings(&["IQN.A"]), &strings(&["10.0.0.1/8"]))
        .unwrap();
    assert_eq!(m.snapshot().initiator_group(1).unwrap().initiators.len(), 1);

    // Auth groups and secrets.
    let secret =
        |u: Option<&str>, s: Option<&str>, mu: Option<&str>, ms: Option<&str>| SecretSpec {
            user: u.map(Into::into),
            secret: s.map(Into::into),
            muser: mu.map(Into::into),
            msecret: ms.map(Into::into),
        };
    err(
        m.create_auth_group(1, &[secret(None, Some("s"), None, None)]),
        libc::EINVAL,
        "secrets[0]: user is missing",
    );
    err(
        m.create_auth_group(1, &[secret(Some("u"), None, None, None)]),
        libc::EINVAL,
        "secret is missing",
    );
    err(
        m.create_auth_group(1, &[secret(Some("u"), Some("s"), Some("mu"), None)]),
        libc::EINVAL,
        "muser needs msecret",
    );
    err(
        m.create_auth_group(1, &[secret(Some("u"), Some("s"), None, Some("ms"))]),
        libc::EINVAL,
        "msecret needs muser",
    );
    err(
        m.create_auth_group(1, &[secret(Some(""), Some("s"), None, None)]),
        libc::EINVAL,
        "user is empty",
    );
    err(
        m.create_auth_group(
            1,
            &[
                secret(Some("u"), Some("s"), None, None),
                secret(Some("u"), Some("t"), None, None),
            ],
        ),
        libc::EEXIST,
        "already has a secret for user u",
    );
    err(m.create_auth_group(0, &[]), libc::EINVAL, "tag 0");
    m.create_auth_group(1, &[secret(Some("u"), Some("s"), Some("mu"), Some("ms"))])
        .unwrap();
    err(
        m.create_auth_group(1, &[]),
        libc::EEXIST,
        "auth group 1 already exists",
    );
    err(
        m.auth_group_add_secret(1, &secret(Some("u"), Some("x"), None, None)),
        libc::EEXIST,
        "user u",
    );
    err(
        m.auth_group_add_secret(2, &secret(Some("v"), Some("x"), None, None)),
        libc::ENOENT,
        "auth group 2",
    );
    err(
        m.auth_group_remove_secret(1, "nobody"),
        libc::ENOENT,
        "no secret for user nobody",
    );
    let s = m.snapshot();
    let sec = s.chap_secret(1, "u").unwrap();
    assert_eq!(
        (sec.secret.as_str(), sec.mutual()),
        ("s", Some(("mu", "ms")))
    );
    assert!(!format!("{sec:?}").contains("\"s\""), "Debug hides secrets");
    assert!(s.chap_secret(1, "nobody").is_none() && s.chap_secret(2, "u").is_none());

    m.target_node_set_auth(
        "disk0",
        ChapSettings {
            require_chap: true,
            mutual_chap: true,
            chap_group: 1,
            ..Default::default()
        },
    )
    .unwrap();
    m.set_discovery_auth(ChapSettings {
        require_chap: true,
        chap_group: 1,
        ..Default::default()
    })
    .unwrap();
    err(
        m.delete_auth_group(1),
        libc::EBUSY,
        "in use by discovery auth, target node iqn.2026-11.io.ferrite:disk0",
    );
    err(
        m.set_discovery_auth(ChapSettings {
            chap_group: 3,
            ..Default::default()
        }),
        libc::ENOENT,
        "auth group 3",
    );
    err(
        m.target_node_set_auth(
            "disk0",
            ChapSettings {
                disable_chap: true,
                mutual_chap: true,
                ..Default::default()
            },
        ),
        libc::EINVAL,
        "disable_chap",
    );
    assert_eq!(m.snapshot().discovery_chap().mode(), ChapMode::Chap);

    // Options: only before portal groups and target nodes exist.
    err(
        m.set_options(&OptionsUpdate::default()),
        libc::EPERM,
        "before any portal group",
    );
}

#[test]
fn bdevs_in_use_are_reported() {
    let m = populated();
    assert_eq!(
        m.bdev_in_use("Malloc0").as_deref(),
        Some("bdev Malloc0 is LUN 0 of iSCSI target node iqn.2026-11.io.ferrite:disk0")
    );
    assert!(m.bdev_in_use("Malloc1").is_none());
}

#[test]
fn set_options_changes_the_node_base_and_queue_depth_limit() {
    let m = test_model();
    let up: OptionsUpdate = serde_json::from_value(json!({
        "node_base": "iqn.2000-01.org.example",
        "max_queue_depth": 128,
        "require_chap": true,
    }))
    .unwrap();
    m.set_options(&up).unwrap();
    m.create_portal_group(1, &[portal("127.0.0.1", "3260")], false, false)
        .unwrap();
    m.create_initiator_group(1, &strings(&["ANY"]), &strings(&["ANY"]))
        .unwrap();
    let mut spec = disk("d", &[(1, 1)]);
    spec.queue_depth = 128;
    assert_eq!(
        m.create_target_node(&spec).unwrap(),
        "iqn.2000-01.org.example:d"
    );
    let s = m.snapshot();
    assert_eq!(
        s.target("iqn.2000-01.org.example:d").unwrap().queue_depth,
        128
    );
    assert_eq!(s.discovery_chap().mode(), ChapMode::Chap);
    let opts = s.options_json();
    assert_eq!(opts["max_queue_depth"], 128);
    assert_eq!(opts["require_chap"], true);
}

// ------------------------------------------------------------- through RPC

fn methods(model: &Arc<TargetModel>) -> Methods {
    let mut m = Methods::new();
    register_iscsi_methods_on(&mut m, model.clone());
    m
}

fn call(m: &Methods, method: &str, params: Value) -> Result<Value, RpcError> {
    let (tx, rx) = mpsc::channel();
    let params = if params.is_null() { None } else { Some(params) };
    m.call(method, params, move |r| tx.send(r).unwrap());
    rx.recv().unwrap()
}

#[test]
fn rpc_methods_answer_in_spdk_shapes() {
    let model = test_model();
    let m = methods(&model);
    let ok = |method: &str, params: Value| {
        call(&m, method, params.clone()).unwrap_or_else(|e| panic!("{method} {params}: {e}"))
    };
    assert_eq!(
        ok(
            "iscsi_create_auth_group",
            json!({"tag": 1, "secrets": [
        {"user": "u1", "secret": "s1"},
        {"user": "u2", "secret": "s2", "muser": "m2", "msecret": "ms2"}]})
        ),
        json!(true)
    );
    ok(
        "iscsi_auth_group_add_secret",
        json!({"tag": 1, "user": "u3", "secret": "s3"}),
    );
    ok(
        "iscsi_auth_group_remove_secret",
        json!({"tag": 1, "user": "u3"}),
    );
    ok(
        "iscsi_set_discovery_auth",
        json!({"require_chap": true, "chap_group": 1}),
    );
    ok(
        "iscsi_create_portal_group",
        json!({"tag": 1, "portals": [
        {"host": "127.0.0.1", "port": "3260"}, {"host": "[::1]", "port": 3260, "iser": true}]}),
    );
    ok(
        "iscsi_create_portal_group",
        json!({"tag": 2, "portals": [{"host": "*", "port": "3261"}],
        "private": true, "wait": true}),
    );
    ok("iscsi_start_portal_group", json!({"tag": 2}));
    ok(
        "iscsi_create_initiator_group",
        json!({"tag": 1, "initiators": ["ANY"], "netmasks": ["127.0.0.1/32"]}),
    );
    ok(
        "iscsi_initiator_group_add_initiators",
        json!({"tag": 1, "initiators": ["!iqn.bad"]}),
    );
    ok(
        "iscsi_initiator_group_remove_initiators",
        json!({"tag": 1, "initiators": ["!iqn.bad"]}),
    );
    ok(
        "iscsi_create_target_node",
        json!({
            "name": "disk0", "alias_name": "Disk 0",
            "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
            "luns": [{"bdev_name": "Malloc0", "lun_id": 0}],
            "queue_depth": 64, "header_digest": true,
        }),
    );
    ok(
        "iscsi_target_node_add_lun",
        json!({"name": "iqn.2026-11.io.ferrite:disk0", "bdev_name": "Malloc1"}),
    );
    ok(
        "iscsi_target_node_add_pg_ig_maps",
        json!({"name": "disk0", "pg_ig_maps": [{"pg_tag": 2, "ig_tag": 1}]}),
    );
    ok(
        "iscsi_target_node_remove_pg_ig_maps",
        json!({"name": "disk0", "pg_ig_maps": [{"pg_tag": 2, "ig_tag": 1}]}),
    );
    ok(
        "iscsi_target_node_set_auth",
        json!({"name": "disk0", "require_chap": true, "chap_group": 1}),
    );

    assert_eq!(
        ok("iscsi_get_portal_groups", Value::Null),
        json!([
            {"tag": 1, "portals": [{"host": "127.0.0.1", "port": "3260"},
                                   {"host": "[::1]", "port": "3260", "iser": true}], "private": false},
            {"tag": 2, "portals": [{"host": "0.0.0.0", "port": "3261"}], "private": true},
        ])
    );
    assert_eq!(
        ok("iscsi_get_initiator_groups", Value::Null),
        json!([
        {"tag": 1, "initiators": ["ANY"], "netmasks": ["127.0.0.1/32"]}])
    );
    assert_eq!(
        ok("iscsi_get_auth_groups", Value::Null),
        json!([{"tag": 1, "secrets": [
        {"user": "u1", "secret": "s1"},
        {"user": "u2", "secret": "s2", "muser": "m2", "msecret": "ms2"}]}])
    );
    assert_eq!(
        ok("iscsi_get_target_nodes", Value::Null),
        json!([{
            "name": "iqn.2026-11.io.ferrite:disk0", "alias_name": "Disk 0",
            "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
            "luns": [{"bdev_name": "Malloc0", "lun_id": 0}, {"bdev_name": "Malloc1", "lun_id": 1}],
            "queue_depth": 64, "disable_chap": false, "require_chap": true, "mutual_chap": false,
            "chap_group": 1, "header_digest": true, "data_digest": false,
        }])
    );
    assert_eq!(
        ok("iscsi_get_discovery_auth", Value::Null),
        json!({
        "disable_chap": false, "require_chap": true, "mutual_chap": false, "chap_group": 1})
    );
    let opts = ok("iscsi_get_options", Value::Null);
    assert_eq!(opts["node_base"], "iqn.2026-11.io.ferrite");
    assert_eq!(opts["require_chap"], true);
    assert_eq!(ok("iscsi_get_connections", Value::Null), json!([]));

    // save_config, replayed into a fresh model, saves the same.
    let config = IscsiSubsystem::on(model.clone()).write_config();
    let methods_in_order: Vec<&str> = config
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods_in_order,
        [
            "iscsi_create_auth_group",
            "iscsi_set_discovery_auth",
            "iscsi_create_portal_group",
            "iscsi_create_portal_group",
            "iscsi_create_initiator_group",
            "iscsi_create_target_node",
        ]
    );
    let fresh = test_model();
    let m2 = methods(&fresh);
    for c in &config {
        call(&m2, c["method"].as_str().unwrap(), c["params"].clone())
            .unwrap_or_else(|e| panic!("replaying {c}: {e}"));
    }
    assert_eq!(IscsiSubsystem::on(fresh.clone()).write_config(), config);

    // Shutdown empties it; an empty model saves nothing.
    let (tx, rx) = mpsc::channel();
    IscsiSubsystem::on(fresh.clone()).fini(Box::new(move || tx.send(()).unwrap()));
    rx.recv().unwrap();
    assert!(IscsiSubsystem::on(fresh).write_config().is_empty());
}

#[test]
fn rpc_errors_carry_errno_codes_and_name_fields() {
    let model = test_model();
    let m = methods(&model);
    let refused = |method: &str, params: Value, code: i32, needle: &str| {
        let e = call(&m, method, params.clone()).unwrap_err();
        assert_eq!(e.code, code, "{method} {params}: {e}");
        assert!(
            e.message.contains(needle),
            "{method} {params}: expected {needle:?} in {e}"
        );
    };
    refused(
        "iscsi_create_portal_group",
        json!({"tag": 1}),
        -32602,
        "portals",
    );
    refused(
        "iscsi_create_portal_group",
        json!({"tag": 1, "portals": [], "colour": 1}),
        -32602,
        "colour",
    );
    refused(
        "iscsi_create_portal_group",
        json!({"tag": -1, "portals": [{"host": "127.0.0.1", "port": "1"}]}),
        -22,
        "tag -1",
    );
    refused(
        "iscsi_create_portal_group",
        json!({"tag": 1, "portals": [{"host": "127.0.0.1", "port": "x"}]}),
        -22,
        "port",
    );
    refused(
        "iscsi_get_portal_groups",
        json!({"x": 1}),
        -32602,
        "unknown field",
    );
    refused(
        "iscsi_set_options",
        json!({"error_recovery_level": 2}),
        -22,
        "error_recovery_level",
    );
    refused(
        "iscsi_set_options",
        json!({"max_queue_depth": 0}),
        -22,
        "max_queue_depth",
    );
    refused("iscsi_set_options", json!({"bogus": 0}), -32602, "bogus");
    refused(
        "iscsi_set_discovery_auth",
        json!({"chap_group": -1}),
        -22,
        "chap_group -1",
    );
    refused(
        "iscsi_set_discovery_auth",
        json!({"disable_chap": true, "require_chap": true}),
        -22,
        "disable_chap",
    );
    refused(
        "iscsi_create_auth_group",
        json!({"tag": 1, "secrets": [{"secret": "s"}]}),
        -22,
        "user is missing",
    );
    refused(
        "iscsi_delete_auth_group",
        json!({"tag": 5}),
        -2,
        "auth group 5 does not exist",
    );
    refused(
        "iscsi_create_target_node",
        json!({"name": "d", "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
        "luns": [{"bdev_name": "Malloc0", "lun_id": 0}], "queue_depth": 1}),
        -2,
        "portal group 1 does not exist",
    );
    refused(
        "iscsi_create_target_node",
        json!({"name": "d", "pg_ig_maps": [],
        "luns": [{"bdev_name": "Gone", "lun_id": 0}], "queue_depth": 1}),
        -19,
        "bdev Gone does not exist",
    );
    refused(
        "iscsi_create_target_node",
        json!({"name": "d", "pg_ig_maps": [{"pg_tag": 0, "ig_tag": 1}],
        "luns": [], "queue_depth": 1}),
        -22,
        "pg_tag 0",
    );
    refused(
        "iscsi_delete_target_node",
        json!({"name": "d"}),
        -2,
        "target node d does not exist",
    );
    refused(
        "iscsi_target_node_add_lun",
        json!({"name": "d", "bdev_name": "Malloc0"}),
        -2,
        "target node d",
    );
}
