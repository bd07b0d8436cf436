//! The target model: its types, the immutable [`ModelSnapshot`] the transport
//! reads, and [`TargetModel`], which changes it under a lock and republishes a
//! new snapshot after every change.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::Deserialize;
use serde_json::{json, Value};

use super::hooks::{Hooks, TargetChange};
use super::names::{
    canonical_ip, check_iscsi_name, full_target_name, parse_port, parse_portal_host,
    InitiatorEntry, NetmaskEntry, MAX_NAME_LEN,
};
use super::options::{ChapSettings, IscsiOptions, OptionsUpdate};
use super::ModelError;

/// Largest LUN id (the 14 bits of SAM's flat and peripheral addressing).
pub const MAX_LUN_ID: u32 = 16383;
/// Largest portal group tag (the 16-bit Target Portal Group Tag).
pub const MAX_PG_TAG: u32 = 65535;
/// Largest initiator group and auth group tag (SPDK's int32).
pub const MAX_TAG: u32 = i32::MAX as u32;
/// Most initiators, and most netmasks, in one initiator group (SPDK).
pub const MAX_IG_ENTRIES: usize = 256;
/// Longest CHAP user name or secret, in bytes (SPDK).
pub const MAX_CHAP_LEN: usize = 255;

// ---------------------------------------------------------------- types

/// A listening address of a portal group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    /// As shown and saved: `127.0.0.1`, `[::1]`, `0.0.0.0`, `[::]`.
    pub host: String,
    pub port: u16,
    /// An iSER portal (RDMA CM) rather than a TCP one.
    pub iser: bool,
    /// `host`, parsed.
    pub addr: IpAddr,
}

impl Portal {
    /// The address to bind.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// Listens on every address (`0.0.0.0` or `[::]`).
    pub fn is_wildcard(&self) -> bool {
        self.addr.is_unspecified()
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"host": self.host, "port": self.port.to_string()});
        if self.iser {
            v["iser"] = json!(true);
        }
        v
    }

    /// Whether a connection accepted on `local` by a listener of this kind
    /// belongs to this portal.
    fn accepts(&self, local: SocketAddr, iser: bool) -> bool {
        self.iser == iser
            && self.port == local.port()
            && (canonical_ip(self.addr) == canonical_ip(local.ip())
                || (self.is_wildcard()
                    && (self.addr.is_ipv6() || canonical_ip(local.ip()).is_ipv4())))
    }
}

impl fmt::Display for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}{}",
            self.host,
            self.port,
            if self.iser { " (iSER)" } else { "" }
        )
    }
}

/// A portal group: the portals a target node is reached through, and the
/// Target Portal Group Tag logins report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalGroup {
    pub tag: u32,
    pub portals: Vec<Portal>,
    /// Private groups are never reported by SendTargets.
    pub private: bool,
    /// Accepting connections (false for a group created with `wait` until
    /// `iscsi_start_portal_group`).
    pub started: bool,
}

/// An initiator group: who (names) from where (netmasks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiatorGroup {
    pub tag: u32,
    pub initiators: Vec<InitiatorEntry>,
    pub netmasks: Vec<NetmaskEntry>,
}

/// What an initiator group says about an initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The group does not mention it.
    NotListed,
    Allow,
    Deny,
}

impl InitiatorGroup {
    /// SPDK's rule, with `!` netmasks too: the first entry of `initiators`
    /// matching `name` decides (a `!` entry denies; none matching: the group does
    /// not apply). An allowed name must then come from an address the first
    /// matching `netmasks` entry allows (a `!` entry denies; none matching: the
    /// group does not apply).
    pub fn verdict(&self, name: &str, addr: IpAddr) -> Verdict {
        match self.initiators.iter().find(|e| e.matches(name)) {
            None => Verdict::NotListed,
            Some(e) if e.deny => Verdict::Deny,
            Some(_) => match self.netmasks.iter().find(|m| m.matches(addr)) {
                None => Verdict::NotListed,
                Some(m) if m.deny => Verdict::Deny,
                Some(_) => Verdict::Allow,
            },
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "tag": self.tag,
            "initiators": self.initiators.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
            "netmasks": self.netmasks.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
        })
    }
}

/// The initiator groups allowed through one portal group of a target node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgMap {
    pub pg_tag: u32,
    /// In the order they were mapped; at least one.
    pub ig_tags: Vec<u32>,
}

/// A logical unit of a target node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lun {
    pub id: u32,
    pub bdev_name: String,
}

/// A target node: a name, its LUNs, who may reach it through which portals,
/// and its login settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetNode {
    /// The full iSCSI name (with the node base when created without one).
    pub name: String,
    /// TargetAlias; empty for none.
    pub alias: String,
    pub pg_maps: Vec<PgMap>,
    /// Sorted by id; LUN 0 is always there.
    pub luns: Vec<Lun>,
    /// Commands outstanding per session (at most `max_queue_depth`).
    pub queue_depth: u32,
    pub chap: ChapSettings,
    /// Require HeaderDigest=CRC32C (else the initiator chooses).
    pub header_digest: bool,
    /// Require DataDigest=CRC32C (else the initiator chooses).
    pub data_digest: bool,
}

impl TargetNode {
    /// The LUN with this id.
    pub fn lun(&self, id: u32) -> Option<&Lun> {
        self.luns
            .binary_search_by_key(&id, |l| l.id)
            .ok()
            .map(|i| &self.luns[i])
    }

    /// The `(pg_tag, ig_tag)` pairs, in SPDK's order.
    pub fn pg_ig_pairs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.pg_maps
            .iter()
            .flat_map(|m| m.ig_tags.iter().map(move |&ig| (m.pg_tag, ig)))
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name});
        if !self.alias.is_empty() {
            v["alias_name"] = json!(self.alias);
        }
        let maps: Vec<Value> = self
            .pg_ig_pairs()
            .map(|(pg, ig)| json!({"pg_tag": pg, "ig_tag": ig}))
            .collect();
        let luns: Vec<Value> = self
            .luns
            .iter()
            .map(|l| json!({"bdev_name": l.bdev_name, "lun_id": l.id}))
            .collect();
        v["pg_ig_maps"] = json!(maps);
        v["luns"] = json!(luns);
        v["queue_depth"] = json!(self.queue_depth);
        let chap = self.chap.to_json();
        for key in ["disable_chap", "require_chap", "mutual_chap", "chap_group"] {
            v[key] = chap[key].clone();
        }
        v["header_digest"] = json!(self.header_digest);
        v["data_digest"] = json!(self.data_digest);
        v
    }
}

/// One CHAP identity of an auth group. The initiator authenticates as `user`
/// with `secret`; with mutual CHAP the target answers as `muser` with `msecret`.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapSecret {
    pub user: String,
    pub secret: String,
    pub muser: Option<String>,
    pub msecret: Option<String>,
}

impl ChapSecret {
    /// The target's own name and secret for mutual CHAP, when it has them.
    pub fn mutual(&self) -> Option<(&str, &str)> {
        Some((self.muser.as_deref()?, self.msecret.as_deref()?))
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"user": self.user, "secret": self.secret});
        if let Some((mu, ms)) = self.mutual() {
            v["muser"] = json!(mu);
            v["msecret"] = json!(ms);
        }
        v
    }
}

impl fmt::Debug for ChapSecret {
    /// Never prints the secrets (logs, panics).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChapSecret")
            .field("user", &self.user)
            .field("muser", &self.muser)
            .finish_non_exhaustive()
    }
}

/// CHAP secrets, referred to by `chap_group` tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthGroup {
    pub tag: u32,
    pub secrets: Vec<ChapSecret>,
}

impl AuthGroup {
    fn to_json(&self) -> Value {
        json!({
            "tag": self.tag,
            "secrets": self.secrets.iter().map(ChapSecret::to_json).collect::<Vec<_>>(),
        })
    }
}

/// A portal to report in a SendTargets answer: `TargetAddress=host:port,tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetAddress {
    /// A wildcard portal's host is replaced by the discovery connection's local
    /// address; IPv6 in brackets.
    pub host: String,
    pub port: u16,
    pub pg_tag: u32,
    pub iser: bool,
}

impl fmt::Display for TargetAddress {
    /// The value of a TargetAddress key: `host:port,tag`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{},{}", self.host, self.port, self.pg_tag)
    }
}

/// A target node an initiator may see in SendTargets, with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    pub name: String,
    pub addresses: Vec<TargetAddress>,
}

/// Why a login to a target node is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefusal {
    /// No target node of that name (login status 0x0203, Not found).
    NotFound,
    /// The ACLs do not allow this initiator from this address through this
    /// portal group (login status 0x0202, Authorization failure). The text says
    /// why, for the log.
    NotAllowed(String),
}

// ---------------------------------------------------------------- snapshot

/// The whole model at one moment: immutable, shared (`Arc`), replaced by a new
/// one on every change. The transport reads it at login and discovery time,
/// never on the I/O path.
#[derive(Debug, Clone, Default)]
pub struct ModelSnapshot {
    /// Grows by one with every change.
    pub version: u64,
    pub options: IscsiOptions,
    /// CHAP settings of discovery sessions.
    pub discovery_auth: ChapSettings,
    /// In creation order, as SPDK lists them.
    pub auth_groups: Vec<AuthGroup>,
    pub portal_groups: Vec<PortalGroup>,
    pub initiator_groups: Vec<InitiatorGroup>,
    pub target_nodes: Vec<TargetNode>,
    /// Lower-cased target name → index in `target_nodes`.
    target_index: HashMap<String, usize>,
}

impl ModelSnapshot {
    /// Auth group `tag`, to change, or "does not exist".
    fn auth_group_mut(&mut self, tag: u32) -> Result<&mut AuthGroup, ModelError> {
        self.auth_groups
            .iter_mut()
            .find(|g| g.tag == tag)
            .ok_or_else(|| ModelError::not_found(format!("auth group {tag} does not exist")))
    }

    /// Initiator group `tag`, to change, or "does not exist".
    fn initiator_group_mut(&mut self, tag: u32) -> Result<&mut InitiatorGroup, ModelError> {
        self.initiator_groups
            .iter_mut()
            .find(|g| g.tag == tag)
            .ok_or_else(|| ModelError::not_found(format!("initiator group {tag} does not exist")))
    }

    /// The global options.
    pub fn options(&self) -> &IscsiOptions {
        &self.options
    }

    /// The target node of this name (iSCSI names compare without regard to case).
    pub fn target(&self, name: &str) -> Option<&TargetNode> {
        self.target_index
            .get(&name.to_ascii_lowercase())
            .map(|&i| &self.target_nodes[i])
    }

    /// A target node by the name an operator gave: the full name, or a short
    /// one the node base is put in front of.
    pub fn find_target(&self, name: &str) -> Option<&TargetNode> {
        self.target(name)
            .or_else(|| self.target(&full_target_name(&self.options.node_base, name)))
    }

    pub fn portal_group(&self, tag: u32) -> Option<&PortalGroup> {
        self.portal_groups.iter().find(|g| g.tag == tag)
    }

    pub fn initiator_group(&self, tag: u32) -> Option<&InitiatorGroup> {
        self.initiator_groups.iter().find(|g| g.tag == tag)
    }

    pub fn auth_group(&self, tag: u32) -> Option<&AuthGroup> {
        self.auth_groups.iter().find(|g| g.tag == tag)
    }

    /// The portal group and portal a connection accepted on `local` (the
    /// socket's local address) by a TCP (`iser` false) or iSER listener came
    /// through: an exact address first, else a wildcard portal of that port.
    pub fn portal_of(&self, local: SocketAddr, iser: bool) -> Option<(&PortalGroup, &Portal)> {
        let all = || {
            self.portal_groups
                .iter()
                .flat_map(|g| g.portals.iter().map(move |p| (g, p)))
        };
        all()
            .find(|(_, p)| !p.is_wildcard() && p.accepts(local, iser))
            .or_else(|| all().find(|(_, p)| p.accepts(local, iser)))
    }

    /// Whether `initiator` (its iSCSI name) connecting from `addr` may log in to
    /// `target` through portal group `pg_tag`. SPDK's rule: the target must map
    /// that portal group; its initiator groups are asked in order and the first
    /// that lists the initiator decides (see [`InitiatorGroup::verdict`]).
    /// Answers the tag of the initiator group that allowed it.
    pub fn check_access(
        &self,
        target: &TargetNode,
        pg_tag: u32,
        initiator: &str,
        addr: IpAddr,
    ) -> Result<u32, String> {
        let Some(map) = target.pg_maps.iter().find(|m| m.pg_tag == pg_tag) else {
            return Err(format!(
                "target {} is not mapped to portal group {pg_tag}",
                target.name
            ));
        };
        for &ig_tag in &map.ig_tags {
            let Some(ig) = self.initiator_group(ig_tag) else {
                continue;
            };
            match ig.verdict(initiator, addr) {
                Verdict::NotListed => continue,
                Verdict::Allow => return Ok(ig_tag),
                Verdict::Deny => {
                    return Err(format!(
                        "initiator group {ig_tag} denies {initiator} from {addr} access to {}",
                        target.name
                    ))
                }
            }
        }
        Err(format!(
            "no initiator group of portal group {pg_tag} of {} allows {initiator} from {addr}",
            target.name
        ))
    }

    /// A normal session's login: the target node named `target_name`, if
    /// `initiator` from `addr` may reach it through portal group `pg_tag`.
    pub fn login_target(
        &self,
        target_name: &str,
        pg_tag: u32,
        initiator: &str,
        addr: IpAddr,
    ) -> Result<&TargetNode, LoginRefusal> {
        let target = self.target(target_name).ok_or(LoginRefusal::NotFound)?;
        self.check_access(target, pg_tag, initiator, addr)
            .map(|_| target)
            .map_err(LoginRefusal::NotAllowed)
    }

    /// The CHAP settings of discovery sessions.
    pub fn discovery_chap(&self) -> ChapSettings {
        self.discovery_auth
    }

    /// The secret of `user` in auth group `group` (what CHAP_N names), with its
    /// mutual name and secret if it has them ([`ChapSecret::mutual`]).
    pub fn chap_secret(&self, group: u32, user: &str) -> Option<&ChapSecret> {
        self.auth_group(group)?
            .secrets
            .iter()
            .find(|s| s.user == user)
    }

    /// What SendTargets tells `initiator` connecting from `addr`: the target
    /// nodes it may log in to (`which`: `All`, or one target name) with the
    /// portals of the public portal groups it is allowed through. A target
    /// reachable only through private portal groups is not reported. Wildcard
    /// portals report `local`, the discovery connection's own address, or are
    /// left out without one.
    pub fn send_targets(
        &self,
        initiator: &str,
        addr: IpAddr,
        local: Option<IpAddr>,
        which: &str,
    ) -> Vec<DiscoveredTarget> {
        let all = which.eq_ignore_ascii_case("All");
        let mut out = Vec::new();
        for target in &self.target_nodes {
            if !all && !target.name.eq_ignore_ascii_case(which) {
                continue;
            }
            let mut addresses = Vec::new();
            for map in &target.pg_maps {
                let Some(pg) = self.portal_group(map.pg_tag) else {
                    continue;
                };
                if pg.private || self.check_access(target, pg.tag, initiator, addr).is_err() {
                    continue;
                }
                for p in &pg.portals {
                    let host = if p.is_wildcard() {
                        match local.map(canonical_ip) {
                            Some(IpAddr::V4(ip)) => ip.to_string(),
                            Some(IpAddr::V6(ip)) => format!("[{ip}]"),
                            None => continue,
                        }
                    } else {
                        p.host.clone()
                    };
                    addresses.push(TargetAddress {
                        host,
                        port: p.port,
                        pg_tag: pg.tag,
                        iser: p.iser,
                    });
                }
            }
            if !addresses.is_empty() {
                out.push(DiscoveredTarget {
                    name: target.name.clone(),
                    addresses,
                });
            }
        }
        out
    }

    /// The target node exporting `bdev`, as a sentence, if one does.
    pub fn bdev_in_use(&self, bdev: &str) -> Option<String> {
        self.target_nodes.iter().find_map(|t| {
            t.luns.iter().find(|l| l.bdev_name == bdev).map(|l| {
                format!(
                    "bdev {bdev} is LUN {} of iSCSI target node {}",
                    l.id, t.name
                )
            })
        })
    }

    // JSON views, SPDK's shapes.

    pub fn options_json(&self) -> Value {
        self.options.to_json(&self.discovery_auth)
    }

    pub fn auth_groups_json(&self) -> Value {
        json!(self
            .auth_groups
            .iter()
            .map(AuthGroup::to_json)
            .collect::<Vec<_>>())
    }

    pub fn portal_groups_json(&self) -> Value {
        json!(self
            .portal_groups
            .iter()
            .map(|g| {
                json!({
                    "tag": g.tag,
                    "portals": g.portals.iter().map(Portal::to_json).collect::<Vec<_>>(),
                    "private": g.private,
                })
            })
            .collect::<Vec<_>>())
    }

    pub fn initiator_groups_json(&self) -> Value {
        json!(self
            .initiator_groups
            .iter()
            .map(InitiatorGroup::to_json)
            .collect::<Vec<_>>())
    }

    pub fn target_nodes_json(&self) -> Value {
        json!(self
            .target_nodes
            .iter()
            .map(TargetNode::to_json)
            .collect::<Vec<_>>())
    }

    /// The RPC calls that rebuild this model, in replay order: options (those
    /// not at their default), auth groups, discovery auth (unless the default),
    /// portal groups, initiator groups, target nodes.
    pub fn config(&self) -> Vec<Value> {
        let call = |method: &str, params: Value| json!({"method": method, "params": params});
        let mut calls = Vec::new();
        // Only what differs from the defaults, so an empty model saves nothing.
        let options = serde_json::to_value(&self.options).expect("options serialize");
        let defaults = serde_json::to_value(IscsiOptions::default()).expect("options serialize");
        let changed: serde_json::Map<String, Value> = options
            .as_object()
            .expect("an object")
            .iter()
            .filter(|(k, v)| defaults.get(k.as_str()) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !changed.is_empty() {
            calls.push(call("iscsi_set_options", Value::Object(changed)));
        }
        for g in &self.auth_groups {
            calls.push(call("iscsi_create_auth_group", g.to_json()));
        }
        if self.discovery_auth != ChapSettings::default() {
            calls.push(call(
                "iscsi_set_discovery_auth",
                self.discovery_auth.to_json(),
            ));
        }
        for g in &self.portal_groups {
            let mut params = json!({
                "tag": g.tag,
                "portals": g.portals.iter().map(Portal::to_json).collect::<Vec<_>>(),
                "private": g.private,
            });
            if !g.started {
                params["wait"] = json!(true);
            }
            calls.push(call("iscsi_create_portal_group", params));
        }
        for g in &self.initiator_groups {
            calls.push(call("iscsi_create_initiator_group", g.to_json()));
        }
        for t in &self.target_nodes {
            calls.push(call("iscsi_create_target_node", t.to_json()));
        }
        calls
    }

    fn reindex(&mut self) {
        self.target_index = self
            .target_nodes
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.to_ascii_lowercase(), i))
            .collect();
    }

    fn target_mut(&mut self, name: &str) -> Result<&mut TargetNode, ModelError> {
        let full = full_target_name(&self.options.node_base, name);
        let index = self
            .target_nodes
            .iter()
            .position(|t| t.name.eq_ignore_ascii_case(name))
            .or_else(|| {
                self.target_nodes
                    .iter()
                    .position(|t| t.name.eq_ignore_ascii_case(&full))
            })
            .ok_or_else(|| ModelError::not_found(format!("target node {name} does not exist")))?;
        Ok(&mut self.target_nodes[index])
    }

    /// The target nodes mapping portal group `pg` (or initiator group `ig`).
    fn targets_using(&self, pg: Option<u32>, ig: Option<u32>) -> Vec<&str> {
        self.target_nodes
            .iter()
            .filter(|t| t.pg_ig_pairs().any(|(p, i)| Some(p) == pg || Some(i) == ig))
            .map(|t| t.name.as_str())
            .collect()
    }

    fn check_chap(&self, chap: &ChapSettings) -> Result<(), ModelError> {
        chap.check()?;
        if chap.chap_group != 0 && self.auth_group(chap.chap_group).is_none() {
            return Err(ModelError::not_found(format!(
                "chap_group: auth group {} does not exist",
                chap.chap_group
            )));
        }
        Ok(())
    }

    /// Checks new `(pg, ig)` pairs for `target` (which may be brand new).
    fn check_new_maps(&self, target: &TargetNode, maps: &[(u32, u32)]) -> Result<(), ModelError> {
        for (i, &(pg, ig)) in maps.iter().enumerate() {
            if self.portal_group(pg).is_none() {
                return Err(ModelError::not_found(format!(
                    "pg_ig_maps: portal group {pg} does not exist"
                )));
            }
            if self.initiator_group(ig).is_none() {
                return Err(ModelError::not_found(format!(
                    "pg_ig_maps: initiator group {ig} does not exist"
                )));
            }
            if target.pg_ig_pairs().any(|p| p == (pg, ig)) || maps[..i].contains(&(pg, ig)) {
                return Err(ModelError::exists(format!(
                    "pg_ig_maps: {pg}:{ig} is already mapped to {}",
                    target.name
                )));
            }
        }
        Ok(())
    }
}

fn add_maps(target: &mut TargetNode, maps: &[(u32, u32)]) {
    for &(pg, ig) in maps {
        match target.pg_maps.iter_mut().find(|m| m.pg_tag == pg) {
            Some(m) => m.ig_tags.push(ig),
            None => target.pg_maps.push(PgMap {
                pg_tag: pg,
                ig_tags: vec![ig],
            }),
        }
    }
}

// ---------------------------------------------------------------- inputs

/// A portal as given to `iscsi_create_portal_group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSpec {
    pub host: String,
    /// As SPDK sends it, a string ("3260").
    pub port: String,
    pub iser: bool,
}

/// A secret as given to `iscsi_create_auth_group`: every field optional so that
/// a missing one gets a message saying which.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub user: Option<String>,
    pub secret: Option<String>,
    pub muser: Option<String>,
    pub msecret: Option<String>,
}

/// A target node as given to `iscsi_create_target_node`, checked by the model.
#[derive(Debug, Clone, Default)]
pub struct TargetNodeSpec {
    /// A full iSCSI name, or a short one the node base goes in front of.
    pub name: String,
    pub alias: String,
    pub pg_ig_maps: Vec<(u32, u32)>,
    /// `(bdev_name, lun_id)`.
    pub luns: Vec<(String, i64)>,
    /// Out of 1..=max_queue_depth it becomes max_queue_depth, as in SPDK.
    pub queue_depth: i64,
    pub chap: ChapSettings,
    pub header_digest: bool,
    pub data_digest: bool,
}

fn check_secret(spec: &SecretSpec, index: Option<usize>) -> Result<ChapSecret, ModelError> {
    let at = match index {
        Some(i) => format!("secrets[{i}]: "),
        None => String::new(),
    };
    let field =
        |name: &str, v: &Option<String>, required: bool| -> Result<Option<String>, ModelError> {
            match v {
                None if required => Err(ModelError::invalid(format!("{at}{name} is missing"))),
                None => Ok(None),
                Some(s) if s.is_empty() => Err(ModelError::invalid(format!("{at}{name} is empty"))),
                Some(s) if s.len() > MAX_CHAP_LEN => Err(ModelError::invalid(format!(
                    "{at}{name} is longer than {MAX_CHAP_LEN} bytes"
                ))),
                Some(s) if s.chars().any(char::is_control) => Err(ModelError::invalid(format!(
                    "{at}{name} contains a control character"
                ))),
                Some(s) => Ok(Some(s.clone())),
            }
        };
    let user = field("user", &spec.user, true)?.expect("required");
    let secret = field("secret", &spec.secret, true)?.expect("required");
    let muser = field("muser", &spec.muser, false)?;
    let msecret = field("msecret", &spec.msecret, false)?;
    match (&muser, &msecret) {
        (Some(_), None) => Err(ModelError::invalid(format!("{at}muser needs msecret"))),
        (None, Some(_)) => Err(ModelError::invalid(format!("{at}msecret needs muser"))),
        _ => Ok(ChapSecret {
            user,
            secret,
            muser,
            msecret,
        }),
    }
}

fn add_secret(group: &mut AuthGroup, secret: ChapSecret) -> Result<(), ModelError> {
    if group.secrets.iter().any(|s| s.user == secret.user) {
        return Err(ModelError::exists(format!(
            "auth group {} already has a secret for user {}",
            group.tag, secret.user
        )));
    }
    group.secrets.push(secret);
    Ok(())
}

fn parse_initiators(list: &[String]) -> Result<Vec<InitiatorEntry>, ModelError> {
    list.iter()
        .map(|s| {
            InitiatorEntry::parse(s).map_err(|e| ModelError::invalid(format!("initiators: {e}")))
        })
        .collect()
}

fn parse_netmasks(list: &[String]) -> Result<Vec<NetmaskEntry>, ModelError> {
    list.iter()
        .map(|s| NetmaskEntry::parse(s).map_err(|e| ModelError::invalid(format!("netmasks: {e}"))))
        .collect()
}

fn same_initiator(a: &InitiatorEntry, b: &InitiatorEntry) -> bool {
    a.deny == b.deny && a.text.eq_ignore_ascii_case(&b.text)
}

fn same_netmask(a: &NetmaskEntry, b: &NetmaskEntry) -> bool {
    if a.deny != b.deny {
        return false;
    }
    match (a.net, b.net) {
        (None, None) => true,
        (Some((ia, ba)), Some((ib, bb))) => {
            ba == bb && canonical_ip(ia).is_ipv4() == canonical_ip(ib).is_ipv4() && a.matches(ib)
        }
        _ => false,
    }
}

/// Appends `new` entries to `list`, refusing duplicates (with the list and
/// among themselves) and a list longer than [`MAX_IG_ENTRIES`].
fn append_unique<T: Clone>(
    list: &mut Vec<T>,
    new: Vec<T>,
    what: &str,
    same: fn(&T, &T) -> bool,
    text: fn(&T) -> &str,
) -> Result<(), ModelError> {
    for e in new {
        if list.iter().any(|x| same(x, &e)) {
            return Err(ModelError::exists(format!(
                "{what}: {} is already in the group",
                text(&e)
            )));
        }
        list.push(e);
    }
    if list.len() > MAX_IG_ENTRIES {
        return Err(ModelError::invalid(format!(
            "{what}: more than {MAX_IG_ENTRIES} in one group"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- the model

/// The control-path state: a lock around the current snapshot and the hooks,
/// and the published snapshot readers take without waiting for the lock.
pub struct TargetModel {
    state: Mutex<State>,
    published: RwLock<Arc<ModelSnapshot>>,
    bdev_exists: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

struct State {
    current: Arc<ModelSnapshot>,
    hooks: Hooks,
    hooks_set: bool,
}

/// Told to the target hooks once a change is published.
enum Event {
    Changed(String, TargetChange),
    Deleted(String),
}

impl Default for TargetModel {
    fn default() -> TargetModel {
        TargetModel::new()
    }
}

impl fmt::Debug for TargetModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetModel")
            .field("version", &self.snapshot().version)
            .finish_non_exhaustive()
    }
}

impl TargetModel {
    /// An empty model whose LUNs must name bdevs of the bdev registry.
    pub fn new() -> TargetModel {
        TargetModel::with_bdev_check(|name| {
            ferrite_bdev::get(name).is_some_and(|b| !b.is_removing())
        })
    }

    /// An empty model that asks `bdev_exists` whether a LUN's bdev exists.
    pub fn with_bdev_check(
        bdev_exists: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> TargetModel {
        let empty = Arc::new(ModelSnapshot::default());
        TargetModel {
            state: Mutex::new(State {
                current: empty.clone(),
                hooks: Hooks::default(),
                hooks_set: false,
            }),
            published: RwLock::new(empty),
            bdev_exists: Box::new(bdev_exists),
        }
    }

    /// The current snapshot. Cheap (an `Arc` clone under a read lock that is
    /// only ever held for a pointer swap); hold on to it as long as needed.
    pub fn snapshot(&self) -> Arc<ModelSnapshot> {
        self.published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the transport's hooks, once. Portal groups created before are
    /// listened on now (and started if they were); a failure is logged and the
    /// first one returned, the hooks staying registered.
    pub fn set_hooks(&self, hooks: Hooks) -> Result<(), String> {
        let mut st = self.lock();
        if st.hooks_set {
            return Err("the iSCSI target model's hooks are already registered".into());
        }
        st.hooks = hooks;
        st.hooks_set = true;
        let mut first_error = None;
        if let Some(ph) = st.hooks.portals.clone() {
            for pg in &st.current.portal_groups {
                for p in &pg.portals {
                    match ph.listen(pg.tag, p) {
                        Ok(()) if pg.started => ph.start(pg.tag, p),
                        Ok(()) => {}
                        Err(e) => {
                            let msg = format!("portal group {}: cannot listen on {p}: {e}", pg.tag);
                            tracing::error!("{msg}");
                            first_error.get_or_insert(msg);
                        }
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Applies `change` to a copy of the current snapshot and publishes it, or
    /// leaves everything as it was if `change` fails.
    fn mutate<T>(
        &self,
        change: impl FnOnce(&mut ModelSnapshot, &Hooks, &mut Vec<Event>) -> Result<T, ModelError>,
    ) -> Result<T, ModelError> {
        let mut st = self.lock();
        let mut next = (*st.current).clone();
        let mut events = Vec::new();
        let out = change(&mut next, &st.hooks, &mut events)?;
        next.version = st.current.version + 1;
        next.reindex();
        let next = Arc::new(next);
        st.current = next.clone();
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        let target_hooks = st.hooks.targets.clone();
        drop(st);
        if let Some(th) = target_hooks {
            for event in events {
                match event {
                    Event::Changed(name, change) => th.target_changed(&next, &name, &change),
                    Event::Deleted(name) => th.target_deleted(&name),
                }
            }
        }
        Ok(out)
    }

    // -- options and discovery auth

    /// `iscsi_set_options`: only while no portal group and no target node exist
    /// (target names and queue depths depend on them). Options it leaves out
    /// keep their value; CHAP fields, if any, set the discovery auth.
    pub fn set_options(&self, update: &OptionsUpdate) -> Result<(), ModelError> {
        self.mutate(|m, _, _| {
            if !m.portal_groups.is_empty() || !m.target_nodes.is_empty() {
                return Err(ModelError::new(
                    libc::EPERM,
                    "iscsi_set_options must be called before any portal group or target node is created \
                     (first in a --json config, or on a target started with --no-default)",
                ));
            }
            let options = update.apply(&m.options)?;
            if let Some(chap) = update.discovery_auth()? {
                m.check_chap(&chap)?;
                m.discovery_auth = chap;
            }
            m.options = options;
            Ok(())
        })
    }

    /// `iscsi_set_discovery_auth`.
    pub fn set_discovery_auth(&self, chap: ChapSettings) -> Result<(), ModelError> {
        self.mutate(|m, _, _| {
            m.check_chap(&chap)?;
            m.discovery_auth = chap;
            Ok(())
        })
    }

    // -- auth groups

    /// `iscsi_create_auth_group`.
    pub fn create_auth_group(&self, tag: u32, secrets: &[SecretSpec]) -> Result<(), ModelError> {
        check_tag("tag", tag, MAX_TAG)?;
        self.mutate(|m, _, _| {
            if m.auth_group(tag).is_some() {
                return Err(ModelError::exists(format!(
                    "auth group {tag} already exists"
                )));
            }
            let mut group = AuthGroup {
                tag,
                secrets: Vec::new(),
            };
            for (i, s) in secrets.iter().enumerate() {
                add_secret(&mut group, check_secret(s, Some(i))?)?;
            }
            m.auth_groups.push(group);
            Ok(())
        })
    }

    /// `iscsi_delete_auth_group`: refused while discovery or a target node uses it.
    pub fn delete_auth_group(&self, tag: u32) -> Result<(), ModelError> {
        self.mutate(|m, _, _| {
            let index = m
                .auth_groups
                .iter()
                .position(|g| g.tag == tag)
                .ok_or_else(|| ModelError::not_found(format!("auth group {tag} does not exist")))?;
            let mut users: Vec<String> = m
                .target_nodes
                .iter()
                .filter(|t| t.chap.chap_group == tag)
                .map(|t| format!("target node {}", t.name))
                .collect();
            if m.discovery_auth.chap_group == tag {
                users.insert(0, "discovery auth".into());
            }
            if !users.is_empty() {
                return Err(ModelError::busy(format!(
                    "auth group {tag} is in use by {}",
                    users.join(", ")
                )));
            }
            m.auth_groups.remove(index);
            Ok(())
        })
    }

    /// `iscsi_auth_group_add_secret`.
    pub fn auth_group_add_secret(&self, tag: u32, secret: &SecretSpec) -> Result<(), ModelError> {
        let secret = check_secret(secret, None)?;
        self.mutate(|m, _, _| {
            let group = m.auth_group_mut(tag)?;
            add_secret(group, secret)
        })
    }

    /// `iscsi_auth_group_remove_secret`.
    pub fn auth_group_remove_secret(&self, tag: u32, user: &str) -> Result<(), ModelError> {
        self.mutate(|m, _, _| {
            let group = m.auth_group_mut(tag)?;
            let before = group.secrets.len();
            group.secrets.retain(|s| s.user != user);
            if group.secrets.len() == before {
                return Err(ModelError::not_found(format!(
                    "auth group {tag} has no secret for user {user}"
                )));
            }
            Ok(())
        })
    }

    // -- portal groups

    /// `iscsi_create_portal_group`: listens on every portal (through the hooks)
    /// and, unless `wait`, starts accepting. If one portal cannot listen, the
    /// others are unlistened and nothing is created.
    pub fn create_portal_group(
        &self,
        tag: u32,
        portals: &[PortalSpec],
        private: bool,
        wait: bool,
    ) -> Result<(), ModelError> {
        check_tag("tag", tag, MAX_PG_TAG)?;
        if portals.is_empty() {
            return Err(ModelError::invalid(
                "portals: a portal group needs at least one portal",
            ));
        }
        let mut parsed: Vec<Portal> = Vec::with_capacity(portals.len());
        for spec in portals {
            let (host, addr) = parse_portal_host(&spec.host).map_err(ModelError::invalid)?;
            let port = parse_port(&spec.port).map_err(ModelError::invalid)?;
            parsed.push(Portal {
                host,
                port,
                iser: spec.iser,
                addr,
            });
        }
        self.mutate(|m, hooks, _| {
            if m.portal_group(tag).is_some() {
                return Err(ModelError::exists(format!(
                    "portal group {tag} already exists"
                )));
            }
            for (i, p) in parsed.iter().enumerate() {
                let same = |q: &Portal| q.addr == p.addr && q.port == p.port && q.iser == p.iser;
                if parsed[..i].iter().any(same) {
                    return Err(ModelError::exists(format!("portals: {p} is given twice")));
                }
                if let Some(g) = m.portal_groups.iter().find(|g| g.portals.iter().any(same)) {
                    return Err(ModelError::exists(format!(
                        "portals: {p} is already in portal group {}",
                        g.tag
                    )));
                }
            }
            if let Some(ph) = &hooks.portals {
                for (i, p) in parsed.iter().enumerate() {
                    if let Err(e) = ph.listen(tag, p) {
                        for done in &parsed[..i] {
                            ph.unlisten(tag, done);
                        }
                        let errno = e.raw_os_error().unwrap_or(libc::EIO);
                        return Err(ModelError::new(
                            errno,
                            format!("portal group {tag}: cannot listen on {p}: {e}"),
                        ));
                    }
                }
                if !wait {
                    for p in &parsed {
                        ph.start(tag, p);
                    }
                }
            }
            m.portal_groups.push(PortalGroup {
                tag,
                portals: parsed,
                private,
                started: !wait,
            });
            Ok(())
        })
    }

    /// `iscsi_start_portal_group`: starts accepting (a no-op when started).
    pub fn start_portal_group(&self, tag: u32) -> Result<(), ModelError> {
        self.mutate(|m, hooks, _| {
            let pg = m
                .portal_groups
                .iter_mut()
                .find(|g| g.tag == tag)
                .ok_or_else(|| {
                    ModelError::not_found(format!("portal group {tag} does not exist"))
                })?;
            if !pg.started {
                if let Some(ph) = &hooks.portals {
                    for p in &pg.portals {
                        ph.start(tag, p);
                    }
                }
                pg.started = true;
            }
            Ok(())
        })
    }

    /// `iscsi_delete_portal_group`: refused (EBUSY) while a target node maps it.
    pub fn delete_portal_group(&self, tag: u32) -> Result<(), ModelError> {
        self.mutate(|m, hooks, _| {
            let index = m
                .portal_groups
                .iter()
                .position(|g| g.tag == tag)
                .ok_or_else(|| ModelError::not_found(format!("portal group {tag} does not exist")))?;
            let users = m.targets_using(Some(tag), None);
            if !users.is_empty() {
                return Err(ModelError::busy(format!(
                    "portal group {tag} is in use by target node {}; remove it from their pg_ig_maps first",
                    users.join(", ")
                )));
            }
            let pg = m.portal_groups.remove(index);
            if let Some(ph) = &hooks.portals {
                for p in &pg.portals {
                    ph.unlisten(tag, p);
                }
            }
            Ok(())
        })
    }

    // -- initiator groups

    /// `iscsi_create_initiator_group`: both lists non-empty, as in SPDK.
    pub fn create_initiator_group(
        &self,
        tag: u32,
        initiators: &[String],
        netmasks: &[String],
    ) -> Result<(), ModelError> {
        check_tag("tag", tag, MAX_TAG)?;
        if initiators.is_empty() {
            return Err(ModelError::invalid(
                "initiators: at least one is needed (ANY for every initiator)",
            ));
        }
        if netmasks.is_empty() {
            return Err(ModelError::invalid(
                "netmasks: at least one is needed (ANY for every address)",
            ));
        }
        let mut group = InitiatorGroup {
            tag,
            initiators: Vec::new(),
            netmasks: Vec::new(),
        };
        append_unique(
            &mut group.initiators,
            parse_initiators(initiators)?,
            "initiators",
            same_initiator,
            |e| &e.text,
        )?;
        append_unique(
            &mut group.netmasks,
            parse_netmasks(netmasks)?,
            "netmasks",
            same_netmask,
            |e| &e.text,
        )?;
        self.mutate(|m, _, _| {
            if m.initiator_group(tag).is_some() {
                return Err(ModelError::exists(format!(
                    "initiator group {tag} already exists"
                )));
            }
            m.initiator_groups.push(group);
            Ok(())
        })
    }

    /// `iscsi_delete_initiator_group`: refused (EBUSY) while a target node maps it.
    pub fn delete_initiator_group(&self, tag: u32) -> Result<(), ModelError> {
        self.mutate(|m, _, _| {
            let index = m
                .initiator_groups
                .iter()
                .position(|g| g.tag == tag)
                .ok_or_else(|| {
                    ModelError::not_found(format!("initiator group {tag} does not exist"))
                })?;
            let users = m.targets_using(None, Some(tag));
            if !users.is_empty() {
                return Err(ModelError::busy(format!(
                    "initiator group {tag} is in use by target node {}; remove it from their pg_ig_maps first",
                    users.join(", ")
                )));
            }
            m.initiator_groups.remove(index);
            Ok(())
        })
    }

    /// `iscsi_initiator_group_add_initiators`: all or nothing.
    pub fn initiator_group_add(
        &self,
        tag: u32,
        initiators: &[String],
        netmasks: &[String],
    ) -> Result<(), ModelError> {
        if initiators.is_empty() && netmasks.is_empty() {
            return Err(ModelError::invalid("give initiators or netmasks to add"));
        }
        let initiators = parse_initiators(initiators)?;
        let netmasks = parse_netmasks(netmasks)?;
        self.mutate(|m, _, events| {
            let group = m.initiator_group_mut(tag)?;
            append_unique(
                &mut group.initiators,
                initiators,
                "initiators",
                same_initiator,
                |e| &e.text,
            )?;
            append_unique(
                &mut group.netmasks,
                netmasks,
                "netmasks",
                same_netmask,
                |e| &e.text,
            )?;
            ig_changed(m, tag, events);
            Ok(())
        })
    }

    /// `iscsi_initiator_group_remove_initiators`: all or nothing; refuses to
    /// leave a group without initiators or netmasks (delete it instead).
    pub fn initiator_group_remove(
        &self,
        tag: u32,
        initiators: &[String],
        netmasks: &[String],
    ) -> Result<(), ModelError> {
        if initiators.is_empty() && netmasks.is_empty() {
            return Err(ModelError::invalid("give initiators or netmasks to remove"));
        }
        let initiators = parse_initiators(initiators)?;
        let netmasks = parse_netmasks(netmasks)?;
        self.mutate(|m, _, events| {
            let group = m.initiator_group_mut(tag)?;
            for e in &initiators {
                let i = group
                    .initiators
                    .iter()
                    .position(|x| same_initiator(x, e))
                    .ok_or_else(|| {
                        ModelError::not_found(format!(
                            "initiators: {} is not in initiator group {tag}",
                            e.text
                        ))
                    })?;
                group.initiators.remove(i);
            }
            for e in &netmasks {
                let i = group
                    .netmasks
                    .iter()
                    .position(|x| same_netmask(x, e))
                    .ok_or_else(|| {
                        ModelError::not_found(format!(
                            "netmasks: {} is not in initiator group {tag}",
                            e.text
                        ))
                    })?;
                group.netmasks.remove(i);
            }
            if group.initiators.is_empty() || group.netmasks.is_empty() {
                return Err(ModelError::invalid(format!(
                    "initiator group {tag} would have no {} left; delete the group instead",
                    if group.initiators.is_empty() {
                        "initiators"
                    } else {
                        "netmasks"
                    }
                )));
            }
            ig_changed(m, tag, events);
            Ok(())
        })
    }

    // -- target nodes

    /// `iscsi_create_target_node`. Answers the full name.
    pub fn create_target_node(&self, spec: &TargetNodeSpec) -> Result<String, ModelError> {
        if spec.alias.len() > MAX_NAME_LEN {
            return Err(ModelError::invalid(format!(
                "alias_name is longer than {MAX_NAME_LEN} bytes"
            )));
        }
        if spec.alias.chars().any(char::is_control) {
            return Err(ModelError::invalid(
                "alias_name contains a control character",
            ));
        }
        for &(pg, ig) in &spec.pg_ig_maps {
            check_tag("pg_ig_maps: pg_tag", pg, MAX_PG_TAG)?;
            check_tag("pg_ig_maps: ig_tag", ig, MAX_TAG)?;
        }
        if spec.luns.is_empty() {
            return Err(ModelError::invalid(
                "luns: a target node needs at least LUN 0",
            ));
        }
        let mut luns: Vec<Lun> = Vec::with_capacity(spec.luns.len());
        for (bdev, id) in &spec.luns {
            let id = check_lun_id(*id)?;
            if luns.iter().any(|l| l.id == id) {
                return Err(ModelError::exists(format!("luns: LUN {id} is given twice")));
            }
            if !(self.bdev_exists)(bdev) {
                return Err(ModelError::new(
                    libc::ENODEV,
                    format!("luns: bdev {bdev} does not exist"),
                ));
            }
            luns.push(Lun {
                id,
                bdev_name: bdev.clone(),
            });
        }
        luns.sort_by_key(|l| l.id);
        if luns[0].id != 0 {
            return Err(ModelError::invalid("luns: LUN 0 is required"));
        }
        self.mutate(|m, _, events| {
            let name = full_target_name(&m.options.node_base, &spec.name);
            check_iscsi_name(&name).map_err(|e| ModelError::invalid(format!("name: {e}")))?;
            if m.target(&name).is_some() {
                return Err(ModelError::exists(format!("target node {name} already exists")));
            }
            m.check_chap(&spec.chap)?;
            let max = m.options.max_queue_depth;
            let queue_depth = if (1..=max as i64).contains(&spec.queue_depth) {
                spec.queue_depth as u32
            } else {
                tracing::warn!(
                    "target node {name}: queue_depth {} is not in 1..={max} (max_queue_depth); using {max}",
                    spec.queue_depth
                );
                max
            };
            let mut target = TargetNode {
                name: name.clone(),
                alias: spec.alias.clone(),
                pg_maps: Vec::new(),
                luns,
                queue_depth,
                chap: spec.chap,
                header_digest: spec.header_digest,
                data_digest: spec.data_digest,
            };
            m.check_new_maps(&target, &spec.pg_ig_maps)?;
            add_maps(&mut target, &spec.pg_ig_maps);
            if target.pg_maps.is_empty() {
                tracing::warn!(
                    "target node {name} has no pg_ig_maps: nobody can log in until iscsi_target_node_add_pg_ig_maps"
                );
            }
            m.target_nodes.push(target);
            events.push(Event::Changed(name.clone(), TargetChange::Created));
            Ok(name)
        })
    }

    /// `iscsi_delete_target_node`; its sessions are dropped by the target hooks.
    pub fn delete_target_node(&self, name: &str) -> Result<(), ModelError> {
        self.mutate(|m, _, events| {
            let full = m.target_mut(name)?.name.clone();
            m.target_nodes.retain(|t| t.name != full);
            events.push(Event::Deleted(full));
            Ok(())
        })
    }

    /// `iscsi_target_node_add_lun`: `lun_id` None (or -1) takes the lowest free
    /// id. Answers the id.
    pub fn target_node_add_lun(
        &self,
        name: &str,
        bdev: &str,
        lun_id: Option<i64>,
    ) -> Result<u32, ModelError> {
        let wanted = match lun_id {
            None | Some(-1) => None,
            Some(id) => Some(check_lun_id(id)?),
        };
        if !(self.bdev_exists)(bdev) {
            return Err(ModelError::new(
                libc::ENODEV,
                format!("bdev {bdev} does not exist"),
            ));
        }
        self.mutate(|m, _, events| {
            let t = m.target_mut(name)?;
            let id = match wanted {
                Some(id) => {
                    if t.lun(id).is_some() {
                        return Err(ModelError::exists(format!(
                            "target node {} already has LUN {id}",
                            t.name
                        )));
                    }
                    id
                }
                None => (0..=MAX_LUN_ID)
                    .find(|&id| t.lun(id).is_none())
                    .ok_or_else(|| {
                        ModelError::new(
                            libc::ENOSPC,
                            format!("target node {} has no free LUN id", t.name),
                        )
                    })?,
            };
            t.luns.push(Lun {
                id,
                bdev_name: bdev.to_string(),
            });
            t.luns.sort_by_key(|l| l.id);
            events.push(Event::Changed(
                t.name.clone(),
                TargetChange::LunAdded { lun_id: id },
            ));
            Ok(id)
        })
    }

    /// `iscsi_target_node_add_pg_ig_maps`: all or nothing.
    pub fn target_node_add_maps(&self, name: &str, maps: &[(u32, u32)]) -> Result<(), ModelError> {
        if maps.is_empty() {
            return Err(ModelError::invalid("pg_ig_maps: give at least one map"));
        }
        self.mutate(|m, _, events| {
            let target = m.target_mut(name)?.clone();
            m.check_new_maps(&target, maps)?;
            let t = m.target_mut(name)?;
            add_maps(t, maps);
            events.push(Event::Changed(t.name.clone(), TargetChange::MapsChanged));
            Ok(())
        })
    }

    /// `iscsi_target_node_remove_pg_ig_maps`: all or nothing; a portal group
    /// left without initiator groups is unmapped.
    pub fn target_node_remove_maps(
        &self,
        name: &str,
        maps: &[(u32, u32)],
    ) -> Result<(), ModelError> {
        if maps.is_empty() {
            return Err(ModelError::invalid("pg_ig_maps: give at least one map"));
        }
        self.mutate(|m, _, events| {
            let t = m.target_mut(name)?;
            for &(pg, ig) in maps {
                let map = t
                    .pg_maps
                    .iter_mut()
                    .find(|x| x.pg_tag == pg && x.ig_tags.contains(&ig))
                    .ok_or_else(|| {
                        ModelError::not_found(format!(
                            "pg_ig_maps: {pg}:{ig} is not mapped to {}",
                            t.name
                        ))
                    })?;
                map.ig_tags.retain(|&x| x != ig);
                t.pg_maps.retain(|x| !x.ig_tags.is_empty());
            }
            events.push(Event::Changed(t.name.clone(), TargetChange::MapsChanged));
            Ok(())
        })
    }

    /// `iscsi_target_node_set_auth`.
    pub fn target_node_set_auth(&self, name: &str, chap: ChapSettings) -> Result<(), ModelError> {
        self.mutate(|m, _, events| {
            m.check_chap(&chap)?;
            let t = m.target_mut(name)?;
            t.chap = chap;
            events.push(Event::Changed(t.name.clone(), TargetChange::AuthChanged));
            Ok(())
        })
    }

    /// The connections, from the hook (none without one).
    pub fn connections(&self) -> Vec<Value> {
        let hook = self.lock().hooks.connections.clone();
        hook.map(|h| h.list()).unwrap_or_default()
    }

    /// The target node exporting `bdev`, as a sentence, if one does; the bdev
    /// delete RPCs refuse to delete such a bdev.
    pub fn bdev_in_use(&self, bdev: &str) -> Option<String> {
        self.snapshot().bdev_in_use(bdev)
    }

    /// Empties the model (shutdown): unlistens every portal, tells the target
    /// hooks every target node is gone, and resets the options.
    pub fn clear(&self) {
        let result = self.mutate(|m, hooks, events| {
            if let Some(ph) = &hooks.portals {
                for pg in &m.portal_groups {
                    for p in &pg.portals {
                        ph.unlisten(pg.tag, p);
                    }
                }
            }
            for t in &m.target_nodes {
                events.push(Event::Deleted(t.name.clone()));
            }
            let version = m.version;
            *m = ModelSnapshot {
                version,
                ..ModelSnapshot::default()
            };
            Ok(())
        });
        debug_assert!(result.is_ok());
    }
}

/// Tells the hooks about every target node mapping initiator group `tag`.
fn ig_changed(m: &ModelSnapshot, tag: u32, events: &mut Vec<Event>) {
    for t in m.targets_using(None, Some(tag)) {
        events.push(Event::Changed(t.to_string(), TargetChange::MapsChanged));
    }
}

fn check_tag(field: &str, tag: u32, max: u32) -> Result<(), ModelError> {
    if tag == 0 || tag > max {
        return Err(ModelError::invalid(format!(
            "{field} {tag} is out of range 1..={max}"
        )));
    }
    Ok(())
}

fn check_lun_id(id: i64) -> Result<u32, ModelError> {
    if !(0..=MAX_LUN_ID as i64).contains(&id) {
        return Err(ModelError::invalid(format!(
            "lun_id {id} is out of range 0..={MAX_LUN_ID}"
        )));
    }
    Ok(id as u32)
}
