//! Global iSCSI options (`iscsi_set_options` / `iscsi_get_options`), with SPDK's
//! names, defaults and limits, and the CHAP settings shared by discovery and
//! target nodes.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::names::check_iscsi_name;
use super::ModelError;

/// The node base of target names given without one.
pub const DEFAULT_NODE_BASE: &str = "iqn.2026-11.io.ferrite";

/// Largest `first_burst_length`: SPDK's MaxBurstLength (64 KiB data segments,
/// 16 Data-Out buffers per connection).
pub const MAX_BURST_LENGTH: u32 = 65536 * 16;
/// Smallest `first_burst_length` (SPDK).
pub const MIN_FIRST_BURST_LENGTH: u32 = 512;
/// Largest `nop_in_interval`, in seconds (SPDK).
pub const MAX_NOP_IN_INTERVAL: u32 = 60;
/// Largest `max_queue_depth` (SPDK).
pub const MAX_QUEUE_DEPTH_LIMIT: u32 = 256;

/// The global options. Field names are SPDK's JSON names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IscsiOptions {
    /// Prefix of target names given without one (`disk0` → `NODE_BASE:disk0`).
    pub node_base: String,
    /// Seconds without an answer to a NOP-In before the connection is dropped.
    pub nop_timeout: u32,
    /// Seconds between NOP-Ins on an idle connection (0: never).
    pub nop_in_interval: u32,
    /// Sessions the target accepts at once.
    pub max_sessions: u32,
    /// Offered MaxConnections.
    pub max_connections_per_session: u32,
    /// Largest target node queue depth (commands outstanding per session).
    pub max_queue_depth: u32,
    /// Offered DefaultTime2Wait, seconds.
    pub default_time2wait: u32,
    /// Offered DefaultTime2Retain, seconds.
    pub default_time2retain: u32,
    /// Offered FirstBurstLength, bytes.
    pub first_burst_length: u32,
    /// Offered ImmediateData.
    pub immediate_data: bool,
    /// Offered ErrorRecoveryLevel; only 0 is implemented.
    pub error_recovery_level: u32,
    /// Accept a second session with an ISID already in use by the same initiator.
    pub allow_duplicated_isid: bool,
    /// Large (multi-buffer) reads outstanding per connection.
    pub max_large_datain_per_connection: u32,
    /// R2Ts outstanding per connection (offered MaxOutstandingR2T).
    pub max_r2t_per_connection: u32,
    /// PDUs in the pool (SPDK's sizing; the transport may use it as a hint).
    pub pdu_pool_size: u32,
    /// Immediate-data buffers in the pool.
    pub immediate_data_pool_size: u32,
    /// Data-Out buffers in the pool.
    pub data_out_pool_size: u32,
}

impl Default for IscsiOptions {
    /// SPDK's defaults (with ferrite's node base).
    fn default() -> IscsiOptions {
        let max_sessions = 128;
        let max_queue_depth = 64;
        let max_large_datain_per_connection = 64;
        let max_r2t_per_connection = 4;
        IscsiOptions {
            node_base: DEFAULT_NODE_BASE.to_string(),
            nop_timeout: 60,
            nop_in_interval: 30,
            max_sessions,
            max_connections_per_session: 2,
            max_queue_depth,
            default_time2wait: 2,
            default_time2retain: 20,
            first_burst_length: 8192,
            immediate_data: true,
            error_recovery_level: 0,
            allow_duplicated_isid: false,
            max_large_datain_per_connection,
            max_r2t_per_connection,
            pdu_pool_size: max_sessions
                * 2
                * (max_queue_depth
                    + max_large_datain_per_connection
                    + 2 * max_r2t_per_connection
                    + 8),
            immediate_data_pool_size: max_sessions * 128,
            data_out_pool_size: max_sessions * 16,
        }
    }
}

/// How a login authenticates, from the four CHAP settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChapMode {
    /// Neither disabled nor required: the initiator chooses (AuthMethod=CHAP,None).
    Auto,
    /// No authentication (AuthMethod=None).
    None,
    /// One-way CHAP required (AuthMethod=CHAP).
    Chap,
    /// Mutual CHAP required: the target proves itself too.
    Mutual,
}

/// CHAP settings of discovery sessions or of a target node, SPDK's four fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChapSettings {
    #[serde(default)]
    pub disable_chap: bool,
    #[serde(default)]
    pub require_chap: bool,
    #[serde(default)]
    pub mutual_chap: bool,
    /// The auth group whose secrets logins use; 0 for none.
    #[serde(default)]
    pub chap_group: u32,
}

impl ChapSettings {
    /// The mode these settings select. Valid settings only (see [`check`]).
    ///
    /// [`check`]: ChapSettings::check
    pub fn mode(&self) -> ChapMode {
        match (self.disable_chap, self.require_chap, self.mutual_chap) {
            (true, _, _) => ChapMode::None,
            (false, true, true) => ChapMode::Mutual,
            (false, true, false) => ChapMode::Chap,
            _ => ChapMode::Auto,
        }
    }

    /// SPDK's rule: disable_chap excludes require_chap and mutual_chap, and
    /// mutual_chap needs require_chap.
    pub fn check(&self) -> Result<(), ModelError> {
        if self.disable_chap && (self.require_chap || self.mutual_chap) {
            return Err(ModelError::invalid(format!(
                "disable_chap cannot be combined with {}",
                if self.require_chap {
                    "require_chap"
                } else {
                    "mutual_chap"
                }
            )));
        }
        if self.mutual_chap && !self.require_chap {
            return Err(ModelError::invalid("mutual_chap needs require_chap"));
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "disable_chap": self.disable_chap,
            "require_chap": self.require_chap,
            "mutual_chap": self.mutual_chap,
            "chap_group": self.chap_group,
        })
    }
}

/// The params of `iscsi_set_options`: every SPDK option, each optional. Numbers
/// are read wide so that a value out of range gets a message naming its field.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsUpdate {
    pub auth_file: Option<String>,
    pub node_base: Option<String>,
    pub nop_timeout: Option<i64>,
    pub nop_in_interval: Option<i64>,
    pub disable_chap: Option<bool>,
    pub require_chap: Option<bool>,
    pub mutual_chap: Option<bool>,
    pub chap_group: Option<i64>,
    pub max_sessions: Option<i64>,
    pub max_queue_depth: Option<i64>,
    pub max_connections_per_session: Option<i64>,
    pub default_time2wait: Option<i64>,
    pub default_time2retain: Option<i64>,
    pub first_burst_length: Option<i64>,
    pub immediate_data: Option<bool>,
    pub error_recovery_level: Option<i64>,
    pub allow_duplicated_isid: Option<bool>,
    pub max_large_datain_per_connection: Option<i64>,
    pub max_r2t_per_connection: Option<i64>,
    pub pdu_pool_size: Option<i64>,
    pub immediate_data_pool_size: Option<i64>,
    pub data_out_pool_size: Option<i64>,
}

impl OptionsUpdate {
    /// The discovery CHAP settings it carries, if it names any of the four
    /// (the ones it leaves out are false / 0, as in `iscsi_set_discovery_auth`).
    pub fn discovery_auth(&self) -> Result<Option<ChapSettings>, ModelError> {
        if self.disable_chap.is_none()
            && self.require_chap.is_none()
            && self.mutual_chap.is_none()
            && self.chap_group.is_none()
        {
            return Ok(None);
        }
        Ok(Some(ChapSettings {
            disable_chap: self.disable_chap.unwrap_or(false),
            require_chap: self.require_chap.unwrap_or(false),
            mutual_chap: self.mutual_chap.unwrap_or(false),
            chap_group: match self.chap_group {
                None => 0,
                Some(g) => in_range("chap_group", g, 0, i32::MAX as u32)?,
            },
        }))
    }

    /// `current` with this update applied, checked. Options it leaves out keep
    /// their value.
    pub fn apply(&self, current: &IscsiOptions) -> Result<IscsiOptions, ModelError> {
        if self.auth_file.is_some() {
            return Err(ModelError::invalid(
                "auth_file is not supported: create CHAP secrets with iscsi_create_auth_group",
            ));
        }
        let mut o = current.clone();
        if let Some(base) = &self.node_base {
            check_iscsi_name(base).map_err(|e| ModelError::invalid(format!("node_base: {e}")))?;
            if base.len() > super::names::MAX_NAME_LEN - 2 {
                return Err(ModelError::invalid(
                    "node_base leaves no room for a target name",
                ));
            }
            o.node_base = base.clone();
        }
        let set = |field: &mut u32, name: &str, v: Option<i64>, min: u32, max: u32| {
            if let Some(v) = v {
                *field = in_range(name, v, min, max)?;
            }
            Ok::<(), ModelError>(())
        };
        set(
            &mut o.nop_timeout,
            "nop_timeout",
            self.nop_timeout,
            0,
            i32::MAX as u32,
        )?;
        set(
            &mut o.nop_in_interval,
            "nop_in_interval",
            self.nop_in_interval,
            0,
            MAX_NOP_IN_INTERVAL,
        )?;
        set(
            &mut o.max_sessions,
            "max_sessions",
            self.max_sessions,
            1,
            65535,
        )?;
        set(
            &mut o.max_connections_per_session,
            "max_connections_per_session",
            self.max_connections_per_session,
            1,
            65535,
        )?;
        set(
            &mut o.max_queue_depth,
            "max_queue_depth",
            self.max_queue_depth,
            1,
            MAX_QUEUE_DEPTH_LIMIT,
        )?;
        set(
            &mut o.default_time2wait,
            "default_time2wait",
            self.default_time2wait,
            0,
            3600,
        )?;
        set(
            &mut o.default_time2retain,
            "default_time2retain",
            self.default_time2retain,
            0,
            3600,
        )?;
        set(
            &mut o.first_burst_length,
            "first_burst_length",
            self.first_burst_length,
            MIN_FIRST_BURST_LENGTH,
            MAX_BURST_LENGTH,
        )?;
        if let Some(level) = self.error_recovery_level {
            if level != 0 {
                return Err(ModelError::invalid(format!(
                    "error_recovery_level {level} is not supported: only 0 is"
                )));
            }
            o.error_recovery_level = 0;
        }
        set(
            &mut o.max_large_datain_per_connection,
            "max_large_datain_per_connection",
            self.max_large_datain_per_connection,
            1,
            u32::MAX,
        )?;
        set(
            &mut o.max_r2t_per_connection,
            "max_r2t_per_connection",
            self.max_r2t_per_connection,
            1,
            65535,
        )?;
        set(
            &mut o.pdu_pool_size,
            "pdu_pool_size",
            self.pdu_pool_size,
            1,
            u32::MAX,
        )?;
        set(
            &mut o.immediate_data_pool_size,
            "immediate_data_pool_size",
            self.immediate_data_pool_size,
            1,
            u32::MAX,
        )?;
        set(
            &mut o.data_out_pool_size,
            "data_out_pool_size",
            self.data_out_pool_size,
            1,
            u32::MAX,
        )?;
        if let Some(v) = self.immediate_data {
            o.immediate_data = v;
        }
        if let Some(v) = self.allow_duplicated_isid {
            o.allow_duplicated_isid = v;
        }
        Ok(o)
    }
}

/// `value` as a u32 within `min..=max`, or an error naming `field`.
pub(crate) fn in_range(field: &str, value: i64, min: u32, max: u32) -> Result<u32, ModelError> {
    if value < min as i64 || value > max as i64 {
        return Err(ModelError::invalid(format!(
            "{field} {value} is out of range {min}..={max}"
        )));
    }
    Ok(value as u32)
}

impl IscsiOptions {
    /// What `iscsi_get_options` shows: these options and the discovery CHAP
    /// settings, as SPDK shows them.
    pub fn to_json(&self, discovery: &ChapSettings) -> Value {
        let mut v = serde_json::to_value(self).expect("options serialize");
        let map = v.as_object_mut().expect("an object");
        if let Value::Object(chap) = discovery.to_json() {
            map.extend(chap);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_spdk_s() {
        let o = IscsiOptions::default();
        assert_eq!(o.max_sessions, 128);
        assert_eq!(o.max_queue_depth, 64);
        assert_eq!(o.max_connections_per_session, 2);
        assert_eq!(o.first_burst_length, 8192);
        assert_eq!(o.pdu_pool_size, 36864);
        assert_eq!(o.immediate_data_pool_size, 16384);
        assert_eq!(o.data_out_pool_size, 2048);
        assert!(o.immediate_data && !o.allow_duplicated_isid);
        let v = o.to_json(&ChapSettings::default());
        assert_eq!(v["node_base"], "iqn.2026-11.io.ferrite");
        assert_eq!(v["chap_group"], 0);
        assert_eq!(v["nop_in_interval"], 30);
    }

    #[test]
    fn updates_keep_what_they_leave_out_and_name_bad_fields() {
        let cur = IscsiOptions::default();
        let up: OptionsUpdate =
            serde_json::from_value(json!({"max_queue_depth": 128, "immediate_data": false}))
                .unwrap();
        let o = up.apply(&cur).unwrap();
        assert_eq!((o.max_queue_depth, o.immediate_data), (128, false));
        assert_eq!(o.max_sessions, 128);

        let bad = |v: Value, needle: &str| {
            let up: OptionsUpdate = serde_json::from_value(v.clone()).unwrap();
            let e = up.apply(&cur).unwrap_err();
            assert!(e.message.contains(needle), "{v}: {}", e.message);
            assert_eq!(e.errno, libc::EINVAL);
        };
        bad(
            json!({"max_queue_depth": 0}),
            "max_queue_depth 0 is out of range 1..=256",
        );
        bad(json!({"max_queue_depth": 257}), "max_queue_depth");
        bad(json!({"max_sessions": 70000}), "max_sessions");
        bad(json!({"error_recovery_level": 1}), "only 0");
        bad(json!({"first_burst_length": 100}), "first_burst_length");
        bad(json!({"nop_in_interval": 61}), "nop_in_interval");
        bad(json!({"nop_timeout": -1}), "nop_timeout");
        bad(json!({"default_time2wait": 3601}), "default_time2wait");
        bad(
            json!({"max_r2t_per_connection": 0}),
            "max_r2t_per_connection",
        );
        bad(json!({"node_base": "nope"}), "node_base");
        bad(json!({"auth_file": "/etc/x"}), "auth_file is not supported");
        assert!(serde_json::from_value::<OptionsUpdate>(json!({"colour": 1})).is_err());
    }

    #[test]
    fn chap_combinations() {
        let c = |d, r, m| ChapSettings {
            disable_chap: d,
            require_chap: r,
            mutual_chap: m,
            chap_group: 0,
        };
        assert_eq!(c(false, false, false).mode(), ChapMode::Auto);
        assert_eq!(c(true, false, false).mode(), ChapMode::None);
        assert_eq!(c(false, true, false).mode(), ChapMode::Chap);
        assert_eq!(c(false, true, true).mode(), ChapMode::Mutual);
        for (d, r, m) in [
            (false, false, false),
            (true, false, false),
            (false, true, false),
            (false, true, true),
        ] {
            c(d, r, m).check().unwrap();
        }
        assert!(c(true, true, false)
            .check()
            .unwrap_err()
            .message
            .contains("disable_chap"));
        assert!(c(true, false, true)
            .check()
            .unwrap_err()
            .message
            .contains("mutual_chap"));
        assert!(c(false, false, true)
            .check()
            .unwrap_err()
            .message
            .contains("needs require_chap"));
    }
}
