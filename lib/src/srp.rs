//! The SRP target model and its `srp_*` JSON-RPC methods.
//!
//! An SRP target is a SCSI device reached over RDMA CM on `host:port`, named
//! to initiators by its target port id: `id_ext` then `ioc_guid` (Linux
//! `ib_srp`'s `add_target id_ext=..,ioc_guid=..,dest=host:port`). It exports
//! LUNs over bdevs and serves the initiators listed (by SRP initiator port id
//! or by source address), or any when none are.
//!
//! The transport plugs in with [`set_hooks`]: it listens for targets, answers
//! `srp_get_channels`, and hears about LUNs added and targets deleted; at
//! login it reads [`snapshot`] and asks [`SrpTarget::allows`].
//!
//! **Without an RDMA device** (or without the transport) a target is still
//! created, so configurations replay on any machine, but it is *inactive*:
//! the reason is logged as a warning and `srp_get_targets` shows
//! `"active": false` and `"inactive_reason"`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::jsonrpc::{parse_params, Methods, NoParams, Responder, RpcError};
use crate::subsystem::{FiniDone, Subsystem};
use crate::target::ModelError;

/// Largest LUN id (flat addressing, as the iSCSI model allows).
pub const MAX_LUN_ID: u32 = 16383;

/// An initiator an SRP target serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitiatorId {
    /// An SRP initiator port id (16 bytes: identifier extension, GUID).
    PortId([u8; 16]),
    /// The initiator's source address (RDMA CM).
    Addr(IpAddr),
}

impl InitiatorId {
    /// `0x` and 32 hex digits (or the 32 digits alone), or an IP address.
    pub fn parse(s: &str) -> Result<InitiatorId, String> {
        if let Ok(a) = s.parse::<IpAddr>() {
            return Ok(InitiatorId::Addr(a));
        }
        let hex = s.strip_prefix("0x").unwrap_or(s);
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut id = [0u8; 16];
            for (i, b) in id.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digits");
            }
            return Ok(InitiatorId::PortId(id));
        }
        Err(format!(
            "{s:?} is neither an initiator port id (0x and 32 hex digits) nor an IP address"
        ))
    }
}

impl std::fmt::Display for InitiatorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitiatorId::PortId(id) => {
                f.write_str("0x")?;
                id.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            InitiatorId::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// A LUN of an SRP target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrpLun {
    pub lun_id: u32,
    pub bdev_name: String,
}

/// An SRP target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrpTarget {
    pub name: String,
    pub id_ext: u64,
    pub ioc_guid: u64,
    pub host: IpAddr,
    pub port: u16,
    pub luns: Vec<SrpLun>,
    /// `None`: any initiator.
    pub initiators: Option<Vec<InitiatorId>>,
    /// Why the target does not listen, if it does not.
    pub inactive_reason: Option<String>,
}

impl SrpTarget {
    /// The target port id initiators log in to: `id_ext` then `ioc_guid`.
    pub fn port_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.id_ext.to_be_bytes());
        id[8..].copy_from_slice(&self.ioc_guid.to_be_bytes());
        id
    }

    /// Whether the initiator with port id `port_id`, connecting from `from`,
    /// may log in.
    pub fn allows(&self, port_id: &[u8; 16], from: Option<IpAddr>) -> bool {
        let Some(list) = &self.initiators else {
            return true;
        };
        list.iter().any(|i| match i {
            InitiatorId::PortId(p) => p == port_id,
            InitiatorId::Addr(a) => from.is_some_and(|f| canonical(f) == canonical(*a)),
        })
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "id_ext": format!("{:016x}", self.id_ext),
            "ioc_guid": format!("{:016x}", self.ioc_guid),
            "host": self.host.to_string(),
            "port": self.port,
            "luns": self.luns.iter().map(|l| json!({"bdev_name": l.bdev_name, "lun_id": l.lun_id})).collect::<Vec<_>>(),
            "active": self.inactive_reason.is_none(),
        });
        if let Some(list) = &self.initiators {
            v["initiators"] = list.iter().map(|i| i.to_string()).collect();
        }
        if let Some(why) = &self.inactive_reason {
            v["inactive_reason"] = json!(why);
        }
        v
    }

    /// The `srp_create_target` call that makes this target again.
    fn create_call(&self) -> Value {
        let mut params = json!({
            "name": self.name,
            "id_ext": format!("{:016x}", self.id_ext),
            "ioc_guid": format!("{:016x}", self.ioc_guid),
            "host": self.host.to_string(),
            "port": self.port,
            "luns": self.luns.iter().map(|l| json!({"bdev_name": l.bdev_name, "lun_id": l.lun_id})).collect::<Vec<_>>(),
        });
        if let Some(list) = &self.initiators {
            params["initiators"] = list.iter().map(|i| i.to_string()).collect();
        }
        json!({"method": "srp_create_target", "params": params})
    }
}

fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

/// What the SRP transport plugs into the model. Called on the RPC's thread
/// without the model's lock held.
pub trait SrpHooks: Send + Sync {
    /// Starts listening for `target` (RDMA CM on its host and port). An error
    /// leaves the target inactive, with that reason.
    fn listen(&self, target: &SrpTarget) -> Result<(), String>;
    /// Stops listening for target `name` and ends its channels.
    fn target_deleted(&self, name: &str);
    /// A LUN was added to target `name`.
    fn lun_added(&self, name: &str, lun: &SrpLun) {
        let _ = (name, lun);
    }
    /// The live channels, for `srp_get_channels`.
    fn channels(&self) -> Vec<Value> {
        Vec::new()
    }
    /// Shutdown, after every target was deleted: `done` once their channels
    /// have ended (or a grace period passed).
    fn shutdown(&self, done: FiniDone) {
        done()
    }
}

/// The SRP targets of a process.
pub struct SrpModel {
    targets: Mutex<Arc<Vec<SrpTarget>>>,
    hooks: Mutex<Option<Arc<dyn SrpHooks>>>,
    bdev_exists: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl SrpModel {
    /// An empty model that asks `bdev_exists` whether a LUN's bdev exists.
    pub fn with_bdev_check(bdev_exists: impl Fn(&str) -> bool + Send + Sync + 'static) -> SrpModel {
        SrpModel {
            targets: Mutex::new(Arc::new(Vec::new())),
            hooks: Mutex::new(None),
            bdev_exists: Box::new(bdev_exists),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Arc<Vec<SrpTarget>>> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hooks(&self) -> Option<Arc<dyn SrpHooks>> {
        self.hooks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Registers the transport's hooks (once, at start).
    pub fn set_hooks(&self, hooks: Arc<dyn SrpHooks>) {
        *self.hooks.lock().unwrap_or_else(|e| e.into_inner()) = Some(hooks);
    }

    /// The targets now: an immutable list, cheap to take at login.
    pub fn snapshot(&self) -> Arc<Vec<SrpTarget>> {
        self.lock().clone()
    }

    /// The target whose port id is `port_id`.
    pub fn find(&self, port_id: &[u8; 16]) -> Option<SrpTarget> {
        self.snapshot()
            .iter()
            .find(|t| &t.port_id() == port_id)
            .cloned()
    }

    fn check_luns(&self, luns: &[SrpLun]) -> Result<(), ModelError> {
        for (i, l) in luns.iter().enumerate() {
            if l.lun_id > MAX_LUN_ID {
                return Err(ModelError::invalid(format!(
                    "luns: lun_id {} is above {MAX_LUN_ID}",
                    l.lun_id
                )));
            }
            if luns[..i].iter().any(|o| o.lun_id == l.lun_id) {
                return Err(ModelError::exists(format!(
                    "luns: LUN {} is given twice",
                    l.lun_id
                )));
            }
            if !(self.bdev_exists)(&l.bdev_name) {
                return Err(ModelError::new(
                    libc::ENODEV,
                    format!("luns: bdev {} does not exist", l.bdev_name),
                ));
            }
        }
        Ok(())
    }

    /// Creates a target; it listens if the transport can.
    pub fn create(&self, mut target: SrpTarget) -> Result<(), ModelError> {
        if target.name.is_empty() {
            return Err(ModelError::invalid("name: empty"));
        }
        if target.port == 0 {
            return Err(ModelError::invalid("port: 0 is not a port"));
        }
        self.check_luns(&target.luns)?;
        {
            let list = self.lock();
            if list.iter().any(|t| t.name == target.name) {
                return Err(ModelError::exists(format!(
                    "name: SRP target {} exists",
                    target.name
                )));
            }
            if let Some(t) = list.iter().find(|t| t.port_id() == target.port_id()) {
                return Err(ModelError::exists(format!(
                    "id_ext, ioc_guid: target {} has that target port id",
                    t.name
                )));
            }
        }
        target.inactive_reason = match self.hooks() {
            Some(h) => h.listen(&target).err(),
            None => Some("no SRP transport in this target".into()),
        };
        match &target.inactive_reason {
            Some(why) => tracing::warn!(
                "SRP target {} (id_ext {:016x}, ioc_guid {:016x}) is inactive, not listening on {}:{}: {why}",
                target.name, target.id_ext, target.ioc_guid, target.host, target.port
            ),
            None => tracing::info!(
                "SRP target {} (id_ext {:016x}, ioc_guid {:016x}) listening on {}:{}",
                target.name, target.id_ext, target.ioc_guid, target.host, target.port
            ),
        }
        let mut list = self.lock();
        // Checked again: another RPC may have raced the listen.
        if list
            .iter()
            .any(|t| t.name == target.name || t.port_id() == target.port_id())
        {
            drop(list);
            if let Some(h) = self.hooks() {
                h.target_deleted(&target.name);
            }
            return Err(ModelError::exists(format!(
                "name: SRP target {} exists",
                target.name
            )));
        }
        Arc::make_mut(&mut list).push(target);
        Ok(())
    }

    pub fn delete(&self, name: &str) -> Result<(), ModelError> {
        {
            let mut list = self.lock();
            let Some(i) = list.iter().position(|t| t.name == name) else {
                return Err(ModelError::not_found(format!("name: no SRP target {name}")));
            };
            Arc::make_mut(&mut list).remove(i);
        }
        if let Some(h) = self.hooks() {
            h.target_deleted(name);
        }
        Ok(())
    }

    pub fn add_lun(&self, name: &str, lun: SrpLun) -> Result<(), ModelError> {
        self.check_luns(std::slice::from_ref(&lun))?;
        {
            let mut list = self.lock();
            let Some(t) = Arc::make_mut(&mut list).iter_mut().find(|t| t.name == name) else {
                return Err(ModelError::not_found(format!("name: no SRP target {name}")));
            };
            if t.luns.iter().any(|l| l.lun_id == lun.lun_id) {
                return Err(ModelError::exists(format!(
                    "lun_id: target {name} has LUN {}",
                    lun.lun_id
                )));
            }
            t.luns.push(lun.clone());
            t.luns.sort_by_key(|l| l.lun_id);
        }
        if let Some(h) = self.hooks() {
            h.lun_added(name, &lun);
        }
        Ok(())
    }

    /// The SRP target exporting `bdev`, as a sentence, if one does.
    pub fn bdev_in_use(&self, bdev: &str) -> Option<String> {
        self.snapshot()
            .iter()
            .find(|t| t.luns.iter().any(|l| l.bdev_name == bdev))
            .map(|t| format!("bdev {bdev} is exported by SRP target {}", t.name))
    }

    /// Forgets every target (shutdown).
    pub fn clear(&self) {
        let names: Vec<String> = self.snapshot().iter().map(|t| t.name.clone()).collect();
        *self.lock() = Arc::new(Vec::new());
        if let Some(h) = self.hooks() {
            for n in names {
                h.target_deleted(&n);
            }
        }
    }
}

/// The process's SRP model.
pub fn model() -> &'static Arc<SrpModel> {
    static MODEL: OnceLock<Arc<SrpModel>> = OnceLock::new();
    MODEL.get_or_init(|| {
        Arc::new(SrpModel::with_bdev_check(|name| {
            ferrite_bdev::get(name).is_some_and(|b| !b.is_removing())
        }))
    })
}

/// The process's SRP targets now.
pub fn snapshot() -> Arc<Vec<SrpTarget>> {
    model().snapshot()
}

/// Registers the SRP transport's hooks on the process's model.
pub fn set_hooks(hooks: Arc<dyn SrpHooks>) {
    model().set_hooks(hooks)
}

/// The SRP target exporting `bdev`, if one does (bdev deletion refuses then).
pub fn bdev_in_use(bdev: &str) -> Option<String> {
    model().bdev_in_use(bdev)
}

/// 16 hex digits, as `add_target` takes `id_ext` and `ioc_guid`.
fn hex64(field: &str, s: &str) -> Result<u64, ModelError> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ModelError::invalid(format!(
            "{field}: {s:?} is not 16 hex digits"
        )));
    }
    u64::from_str_radix(s, 16).map_err(|e| ModelError::invalid(format!("{field}: {e}")))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortValue {
    Text(String),
    Number(i64),
}

fn port(v: &PortValue) -> Result<u16, ModelError> {
    let n = match v {
        PortValue::Number(n) => *n,
        PortValue::Text(s) => s
            .parse::<i64>()
            .map_err(|_| ModelError::invalid(format!("port: {s:?} is not a number")))?,
    };
    if !(1..=65535).contains(&n) {
        return Err(ModelError::invalid(format!("port: {n} is not in 1..65535")));
    }
    Ok(n as u16)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LunParam {
    bdev_name: String,
    lun_id: i64,
}

impl LunParam {
    fn lun(&self) -> Result<SrpLun, ModelError> {
        if !(0..=MAX_LUN_ID as i64).contains(&self.lun_id) {
            return Err(ModelError::invalid(format!(
                "lun_id: {} is not in 0..{MAX_LUN_ID}",
                self.lun_id
            )));
        }
        Ok(SrpLun {
            lun_id: self.lun_id as u32,
            bdev_name: self.bdev_name.clone(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: String,
    id_ext: String,
    ioc_guid: String,
    host: String,
    port: PortValue,
    #[serde(default)]
    luns: Vec<LunParam>,
    initiators: Option<Vec<String>>,
}

impl CreateParams {
    fn target(&self) -> Result<SrpTarget, ModelError> {
        let host = self.host.parse::<IpAddr>().map_err(|_| {
            ModelError::invalid(format!("host: {:?} is not an IP address", self.host))
        })?;
        let initiators = match &self.initiators {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|s| {
                        InitiatorId::parse(s)
                            .map_err(|e| ModelError::invalid(format!("initiators: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let mut luns = self
            .luns
            .iter()
            .map(LunParam::lun)
            .collect::<Result<Vec<_>, _>>()?;
        luns.sort_by_key(|l| l.lun_id);
        Ok(SrpTarget {
            name: self.name.clone(),
            id_ext: hex64("id_ext", &self.id_ext)?,
            ioc_guid: hex64("ioc_guid", &self.ioc_guid)?,
            host,
            port: port(&self.port)?,
            luns,
            initiators,
            inactive_reason: None,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddLunParams {
    name: String,
    bdev_name: String,
    lun_id: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    name: Option<String>,
}

fn method<P: serde::de::DeserializeOwned>(
    m: &mut Methods,
    name: &str,
    model: &Arc<SrpModel>,
    f: impl Fn(&SrpModel, P) -> Result<Value, ModelError> + Send + Sync + 'static,
) {
    let model = model.clone();
    m.register(name, move |params, resp: Responder| {
        match parse_params::<P>(params) {
            Ok(p) => resp.reply(f(&model, p).map_err(RpcError::from)),
            Err(e) => resp.err(e),
        }
    });
}

/// Registers the `srp_*` methods on the process's model.
pub fn register_srp_methods(m: &mut Methods) {
    register_srp_methods_on(m, model().clone());
}

/// Registers the `srp_*` methods on `model`.
pub fn register_srp_methods_on(m: &mut Methods, model: Arc<SrpModel>) {
    let model = &model;
    method(m, "srp_create_target", model, |s, p: CreateParams| {
        s.create(p.target()?).map(|()| json!(true))
    });
    method(m, "srp_delete_target", model, |s, p: NameParams| {
        s.delete(&p.name).map(|()| json!(true))
    });
    method(m, "srp_target_add_lun", model, |s, p: AddLunParams| {
        let lun = LunParam {
            bdev_name: p.bdev_name,
            lun_id: p.lun_id,
        }
        .lun()?;
        s.add_lun(&p.name, lun).map(|()| json!(true))
    });
    method(m, "srp_get_targets", model, |s, p: GetParams| {
        let list = s.snapshot();
        if let Some(n) = &p.name {
            if !list.iter().any(|t| &t.name == n) {
                return Err(ModelError::not_found(format!("name: no SRP target {n}")));
            }
        }
        Ok(list
            .iter()
            .filter(|t| p.name.as_ref().is_none_or(|n| n == &t.name))
            .map(SrpTarget::to_json)
            .collect())
    });
    method(m, "srp_get_channels", model, |s, _: NoParams| {
        Ok(Value::Array(
            s.hooks().map(|h| h.channels()).unwrap_or_default(),
        ))
    });
}

/// The srp subsystem: `save_config` writes the targets, shutdown forgets them.
pub struct SrpSubsystem {
    model: Arc<SrpModel>,
}

impl SrpSubsystem {
    pub fn new() -> SrpSubsystem {
        SrpSubsystem {
            model: model().clone(),
        }
    }

    pub fn on(model: Arc<SrpModel>) -> SrpSubsystem {
        SrpSubsystem { model }
    }
}

impl Default for SrpSubsystem {
    fn default() -> SrpSubsystem {
        SrpSubsystem::new()
    }
}

impl Subsystem for SrpSubsystem {
    fn name(&self) -> &'static str {
        "srp"
    }

    fn write_config(&self) -> Vec<Value> {
        self.model
            .snapshot()
            .iter()
            .map(SrpTarget::create_call)
            .collect()
    }

    fn fini(&self, done: FiniDone) {
        self.model.clear();
        match self.model.hooks() {
            Some(h) => h.shutdown(done),
            None => done(),
        }
    }
}

#[cfg(test)]
mod tests;
