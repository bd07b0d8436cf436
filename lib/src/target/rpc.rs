//! The `iscsi_*` JSON-RPC methods (SPDK's names, parameters and result shapes)
//! and the iscsi subsystem (save_config, shutdown).
//!
//! Numbers are read wide and checked by the model, so a value out of range gets
//! a message naming its field; every failure is a JSON-RPC error with `-errno`
//! as its code (`-17` exists, `-2` no such group or target, `-19` no such bdev,
//! `-16` in use, `-22` a bad value, `-1` too late for `iscsi_set_options`).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::model::{PortalSpec, SecretSpec, TargetModel, TargetNodeSpec, MAX_PG_TAG, MAX_TAG};
use super::options::{in_range, ChapSettings, OptionsUpdate};
use super::ModelError;
use crate::jsonrpc::{parse_params, Methods, NoParams, Responder, RpcError};
use crate::subsystem::{FiniDone, Subsystem};

impl From<ModelError> for RpcError {
    fn from(e: ModelError) -> RpcError {
        RpcError::from_errno(e.errno, e.message)
    }
}

fn tag(field: &str, v: i64, max: u32) -> Result<u32, ModelError> {
    in_range(field, v, 1, max)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagParams {
    tag: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

/// CHAP fields as `iscsi_set_discovery_auth` and `iscsi_target_node_set_auth`
/// take them: those left out are false / 0.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChapParams {
    #[serde(default)]
    disable_chap: bool,
    #[serde(default)]
    require_chap: bool,
    #[serde(default)]
    mutual_chap: bool,
    #[serde(default)]
    chap_group: i64,
}

impl ChapParams {
    fn settings(&self) -> Result<ChapSettings, ModelError> {
        Ok(ChapSettings {
            disable_chap: self.disable_chap,
            require_chap: self.require_chap,
            mutual_chap: self.mutual_chap,
            chap_group: in_range("chap_group", self.chap_group, 0, MAX_TAG)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetAuthParams {
    name: String,
    #[serde(default)]
    disable_chap: bool,
    #[serde(default)]
    require_chap: bool,
    #[serde(default)]
    mutual_chap: bool,
    #[serde(default)]
    chap_group: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAuthGroupParams {
    tag: i64,
    #[serde(default)]
    secrets: Vec<SecretSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddSecretParams {
    tag: i64,
    user: Option<String>,
    secret: Option<String>,
    muser: Option<String>,
    msecret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveSecretParams {
    tag: i64,
    user: String,
}

/// SPDK sends ports as strings; a number is accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum PortValue {
    Text(String),
    Number(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalParam {
    host: String,
    port: PortValue,
    #[serde(default)]
    iser: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePortalGroupParams {
    tag: i64,
    portals: Vec<PortalParam>,
    #[serde(default)]
    private: bool,
    #[serde(default)]
    wait: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInitiatorGroupParams {
    tag: i64,
    initiators: Vec<String>,
    netmasks: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitiatorsParams {
    tag: i64,
    #[serde(default)]
    initiators: Vec<String>,
    #[serde(default)]
    netmasks: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapParam {
    pg_tag: i64,
    ig_tag: i64,
}

fn maps(list: &[MapParam]) -> Result<Vec<(u32, u32)>, ModelError> {
    list.iter()
        .map(|m| {
            Ok((
                tag("pg_ig_maps: pg_tag", m.pg_tag, MAX_PG_TAG)?,
                tag("pg_ig_maps: ig_tag", m.ig_tag, MAX_TAG)?,
            ))
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LunParam {
    bdev_name: String,
    /// SPDK reads a missing id as 0.
    #[serde(default)]
    lun_id: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTargetNodeParams {
    name: String,
    #[serde(default)]
    alias_name: String,
    pg_ig_maps: Vec<MapParam>,
    luns: Vec<LunParam>,
    queue_depth: i64,
    #[serde(default)]
    disable_chap: bool,
    #[serde(default)]
    require_chap: bool,
    #[serde(default)]
    mutual_chap: bool,
    #[serde(default)]
    chap_group: i64,
    #[serde(default)]
    header_digest: bool,
    #[serde(default)]
    data_digest: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapsParams {
    name: String,
    pg_ig_maps: Vec<MapParam>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddLunParams {
    name: String,
    bdev_name: String,
    /// -1 or left out: the lowest free id.
    #[serde(default)]
    lun_id: Option<i64>,
}

/// Registers a method whose params are `P` and whose work is `f`, answering
/// `f`'s value.
fn method<P, R>(
    m: &mut Methods,
    name: &str,
    model: &Arc<TargetModel>,
    f: impl Fn(&TargetModel, P) -> Result<R, ModelError> + Send + Sync + 'static,
) where
    P: DeserializeOwned,
    R: serde::Serialize,
{
    let model = model.clone();
    m.register(name, move |params, resp: Responder| {
        match parse_params::<P>(params) {
            Ok(p) => resp.reply(f(&model, p).map_err(RpcError::from)),
            Err(e) => resp.err(e),
        }
    });
}

/// Registers every `iscsi_*` method on the process's target model.
pub fn register_iscsi_methods(m: &mut Methods) {
    register_iscsi_methods_on(m, super::model().clone());
}

/// Registers every `iscsi_*` method on `model`.
pub fn register_iscsi_methods_on(m: &mut Methods, model: Arc<TargetModel>) {
    let model = &model;

    method(m, "iscsi_set_options", model, |t, p: OptionsUpdate| {
        t.set_options(&p).map(|()| true)
    });
    method(m, "iscsi_get_options", model, |t, _: NoParams| {
        Ok(t.snapshot().options_json())
    });
    method(m, "iscsi_set_discovery_auth", model, |t, p: ChapParams| {
        t.set_discovery_auth(p.settings()?).map(|()| true)
    });
    method(m, "iscsi_get_discovery_auth", model, |t, _: NoParams| {
        Ok(t.snapshot().discovery_auth.to_json())
    });

    method(
        m,
        "iscsi_create_auth_group",
        model,
        |t, p: CreateAuthGroupParams| {
            t.create_auth_group(tag("tag", p.tag, MAX_TAG)?, &p.secrets)
                .map(|()| true)
        },
    );
    method(m, "iscsi_delete_auth_group", model, |t, p: TagParams| {
        t.delete_auth_group(tag("tag", p.tag, MAX_TAG)?)
            .map(|()| true)
    });
    method(
        m,
        "iscsi_auth_group_add_secret",
        model,
        |t, p: AddSecretParams| {
            let secret = SecretSpec {
                user: p.user,
                secret: p.secret,
                muser: p.muser,
                msecret: p.msecret,
            };
            t.auth_group_add_secret(tag("tag", p.tag, MAX_TAG)?, &secret)
                .map(|()| true)
        },
    );
    method(
        m,
        "iscsi_auth_group_remove_secret",
        model,
        |t, p: RemoveSecretParams| {
            t.auth_group_remove_secret(tag("tag", p.tag, MAX_TAG)?, &p.user)
                .map(|()| true)
        },
    );
    method(m, "iscsi_get_auth_groups", model, |t, _: NoParams| {
        Ok(t.snapshot().auth_groups_json())
    });

    method(
        m,
        "iscsi_create_portal_group",
        model,
        |t, p: CreatePortalGroupParams| {
            let portals: Vec<PortalSpec> = p
                .portals
                .into_iter()
                .map(|q| PortalSpec {
                    host: q.host,
                    port: match q.port {
                        PortValue::Text(s) => s,
                        PortValue::Number(n) => n.to_string(),
                    },
                    iser: q.iser,
                })
                .collect();
            t.create_portal_group(tag("tag", p.tag, MAX_PG_TAG)?, &portals, p.private, p.wait)
                .map(|()| true)
        },
    );
    method(m, "iscsi_start_portal_group", model, |t, p: TagParams| {
        t.start_portal_group(tag("tag", p.tag, MAX_PG_TAG)?)
            .map(|()| true)
    });
    method(m, "iscsi_delete_portal_group", model, |t, p: TagParams| {
        t.delete_portal_group(tag("tag", p.tag, MAX_PG_TAG)?)
            .map(|()| true)
    });
    method(m, "iscsi_get_portal_groups", model, |t, _: NoParams| {
        Ok(t.snapshot().portal_groups_json())
    });

    method(
        m,
        "iscsi_create_initiator_group",
        model,
        |t, p: CreateInitiatorGroupParams| {
            t.create_initiator_group(tag("tag", p.tag, MAX_TAG)?, &p.initiators, &p.netmasks)
                .map(|()| true)
        },
    );
    method(
        m,
        "iscsi_delete_initiator_group",
        model,
        |t, p: TagParams| {
            t.delete_initiator_group(tag("tag", p.tag, MAX_TAG)?)
                .map(|()| true)
        },
    );
    method(
        m,
        "iscsi_initiator_group_add_initiators",
        model,
        |t, p: InitiatorsParams| {
            t.initiator_group_add(tag("tag", p.tag, MAX_TAG)?, &p.initiators, &p.netmasks)
                .map(|()| true)
        },
    );
    method(
        m,
        "iscsi_initiator_group_remove_initiators",
        model,
        |t, p: InitiatorsParams| {
            t.initiator_group_remove(tag("tag", p.tag, MAX_TAG)?, &p.initiators, &p.netmasks)
                .map(|()| true)
        },
    );
    method(m, "iscsi_get_initiator_groups", model, |t, _: NoParams| {
        Ok(t.snapshot().initiator_groups_json())
    });

    method(
        m,
        "iscsi_create_target_node",
        model,
        |t, p: CreateTargetNodeParams| {
            let spec = TargetNodeSpec {
                name: p.name,
                alias: p.alias_name,
                pg_ig_maps: maps(&p.pg_ig_maps)?,
                luns: p
                    .luns
                    .into_iter()
                    .map(|l| (l.bdev_name, l.lun_id))
                    .collect(),
                queue_depth: p.queue_depth,
                chap: ChapParams {
                    disable_chap: p.disable_chap,
                    require_chap: p.require_chap,
                    mutual_chap: p.mutual_chap,
                    chap_group: p.chap_group,
                }
                .settings()?,
                header_digest: p.header_digest,
                data_digest: p.data_digest,
            };
            t.create_target_node(&spec).map(|_| true)
        },
    );
    method(m, "iscsi_delete_target_node", model, |t, p: NameParams| {
        t.delete_target_node(&p.name).map(|()| true)
    });
    method(
        m,
        "iscsi_target_node_add_lun",
        model,
        |t, p: AddLunParams| {
            t.target_node_add_lun(&p.name, &p.bdev_name, p.lun_id)
                .map(|_| true)
        },
    );
    method(
        m,
        "iscsi_target_node_add_pg_ig_maps",
        model,
        |t, p: MapsParams| {
            t.target_node_add_maps(&p.name, &maps(&p.pg_ig_maps)?)
                .map(|()| true)
        },
    );
    method(
        m,
        "iscsi_target_node_remove_pg_ig_maps",
        model,
        |t, p: MapsParams| {
            t.target_node_remove_maps(&p.name, &maps(&p.pg_ig_maps)?)
                .map(|()| true)
        },
    );
    method(
        m,
        "iscsi_target_node_set_auth",
        model,
        |t, p: SetAuthParams| {
            let chap = ChapParams {
                disable_chap: p.disable_chap,
                require_chap: p.require_chap,
                mutual_chap: p.mutual_chap,
                chap_group: p.chap_group,
            }
            .settings()?;
            t.target_node_set_auth(&p.name, chap).map(|()| true)
        },
    );
    method(m, "iscsi_get_target_nodes", model, |t, _: NoParams| {
        Ok(t.snapshot().target_nodes_json())
    });
    method(m, "iscsi_get_connections", model, |t, _: NoParams| {
        Ok(Value::Array(t.connections()))
    });
}

/// The iscsi subsystem: saves the model as RPC calls and empties it on shutdown
/// (before the bdevs go, since it starts after them).
pub struct IscsiSubsystem {
    model: Arc<TargetModel>,
}

impl IscsiSubsystem {
    /// The subsystem of the process's target model.
    pub fn new() -> IscsiSubsystem {
        IscsiSubsystem::on(super::model().clone())
    }

    pub fn on(model: Arc<TargetModel>) -> IscsiSubsystem {
        IscsiSubsystem { model }
    }
}

impl Default for IscsiSubsystem {
    fn default() -> IscsiSubsystem {
        IscsiSubsystem::new()
    }
}

impl Subsystem for IscsiSubsystem {
    fn name(&self) -> &'static str {
        "iscsi"
    }

    fn write_config(&self) -> Vec<Value> {
        self.model.snapshot().config()
    }

    fn fini(&self, done: FiniDone) {
        self.model.clear();
        done();
    }
}
