//! Configuration files: a list of RPC calls per subsystem, replayed at start
//! (`ferrite-tgt --json FILE`) and written back by `save_config`.
//!
//! ```json
//! {"subsystems": [
//!   {"subsystem": "bdev", "config": [
//!     {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 2097152, "block_size": 512}}
//!   ]}
//! ]}
//! ```
//!
//! Replaying calls the same methods a client would, through
//! [`Methods::call`], so anything built by RPC can be saved and restored.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use ferrite_lib::jsonrpc::Methods;
use serde_json::Value;

/// What a target runs with when given neither `--json` nor `--no-default`: one
/// 1 GiB malloc bdev, `Malloc0`, of 512-byte blocks, exported over iSCSI as LUN 0
/// of `iqn.2026-11.io.ferrite:disk0` (alias "ferrite disk0", queue depth 128, no
/// CHAP) on portal 127.0.0.1:3260, to any initiator from 127.0.0.1 only. Safe by
/// default: nothing off the host can reach it. Without the iSCSI transport the
/// portal is accepted but nothing listens.
pub const DEFAULT_CONFIG: &str = r#"{
  "subsystems": [
    {
      "subsystem": "bdev",
      "config": [
        {
          "method": "bdev_malloc_create",
          "params": {"name": "Malloc0", "num_blocks": 2097152, "block_size": 512}
        }
      ]
    },
    {
      "subsystem": "iscsi",
      "config": [
        {
          "method": "iscsi_set_options",
          "params": {"max_queue_depth": 128}
        },
        {
          "method": "iscsi_create_portal_group",
          "params": {"tag": 1, "portals": [{"host": "127.0.0.1", "port": "3260"}]}
        },
        {
          "method": "iscsi_create_initiator_group",
          "params": {"tag": 1, "initiators": ["ANY"], "netmasks": ["127.0.0.1/32"]}
        },
        {
          "method": "iscsi_create_target_node",
          "params": {
            "name": "iqn.2026-11.io.ferrite:disk0",
            "alias_name": "ferrite disk0",
            "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
            "luns": [{"bdev_name": "Malloc0", "lun_id": 0}],
            "queue_depth": 128,
            "disable_chap": true
          }
        }
      ]
    }
  ]
}"#;

/// [`DEFAULT_CONFIG`], parsed.
pub fn default_config() -> Value {
    serde_json::from_str(DEFAULT_CONFIG).expect("the default config is valid JSON")
}

/// Reads a config file. Its shape is checked by [`replay`].
pub fn load(path: impl AsRef<Path>) -> Result<Value, String> {
    let path = path.as_ref();
    let text =
        std::fs::read(path).map_err(|e| format!("config: cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&text)
        .map_err(|e| format!("config: {} is not valid JSON: {e}", path.display()))
}

/// One RPC call of a config.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    subsystem: String,
    method: String,
    params: Option<Value>,
}

/// Runs every call of `config`, subsystem by subsystem, in order, each after the
/// previous one answered. Stops at the first failure; the error names the
/// subsystem, the method and the method's error message. `done` gets the
/// outcome: on the calling reactor when called on one (see [`Methods::call`]).
pub fn replay(
    config: Value,
    methods: Arc<Methods>,
    done: impl FnOnce(Result<(), String>) + Send + 'static,
) {
    match calls(config) {
        Ok(calls) => run(calls, methods, Box::new(done)),
        Err(e) => done(Err(e)),
    }
}

type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

fn run(mut calls: VecDeque<Call>, methods: Arc<Methods>, done: Done) {
    let Some(Call {
        subsystem,
        method,
        params,
    }) = calls.pop_front()
    else {
        return done(Ok(()));
    };
    tracing::debug!("config: {method} ({subsystem})");
    let next = methods.clone();
    methods.call(&method.clone(), params, move |result| match result {
        Ok(_) => run(calls, next, done),
        Err(e) => done(Err(format!(
            "config: subsystem {subsystem}: {method} failed: {}",
            e.message
        ))),
    });
}

/// Checks the shape of a config and lists its calls in replay order.
fn calls(config: Value) -> Result<VecDeque<Call>, String> {
    const SHAPE: &str = r#"config: expected {"subsystems":[{"subsystem":NAME,"config":[{"method":..,"params":{..}},..]},..]}"#;
    let Value::Object(mut top) = config else {
        return Err(SHAPE.to_string());
    };
    let Some(Value::Array(subsystems)) = top.remove("subsystems") else {
        return Err(SHAPE.to_string());
    };
    let mut calls = VecDeque::new();
    for (index, subsystem) in subsystems.into_iter().enumerate() {
        let Value::Object(mut subsystem) = subsystem else {
            return Err(format!("{SHAPE}; subsystem #{index} is not an object"));
        };
        let name = match subsystem.remove("subsystem") {
            Some(Value::String(name)) => name,
            _ => {
                return Err(format!(
                    "{SHAPE}; subsystem #{index} has no \"subsystem\" name"
                ))
            }
        };
        let entries = match subsystem.remove("config") {
            // save_config of a subsystem with nothing to save may write null.
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(entries)) => entries,
            Some(_) => {
                return Err(format!(
                    "{SHAPE}; the \"config\" of subsystem {name} is not a list"
                ))
            }
        };
        for (position, entry) in entries.into_iter().enumerate() {
            let bad_entry = || {
                format!(
                    "config: subsystem {name}: entry #{position} is not {{\"method\":NAME,\"params\":{{..}}}}"
                )
            };
            let Value::Object(mut entry) = entry else {
                return Err(bad_entry());
            };
            let Some(Value::String(method)) = entry.remove("method") else {
                return Err(bad_entry());
            };
            calls.push_back(Call {
                subsystem: name.clone(),
                method,
                params: entry.remove("params"),
            });
        }
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_config_parses() {
        let calls = calls(default_config()).unwrap();
        let methods: Vec<(&str, &str)> = calls
            .iter()
            .map(|c| (c.subsystem.as_str(), c.method.as_str()))
            .collect();
        assert_eq!(
            methods,
            [
                ("bdev", "bdev_malloc_create"),
                ("iscsi", "iscsi_set_options"),
                ("iscsi", "iscsi_create_portal_group"),
                ("iscsi", "iscsi_create_initiator_group"),
                ("iscsi", "iscsi_create_target_node"),
            ]
        );
        assert_eq!(calls[0].params.as_ref().unwrap()["num_blocks"], 2097152);
        let node = calls[4].params.as_ref().unwrap();
        assert_eq!(node["name"], "iqn.2026-11.io.ferrite:disk0");
        assert_eq!(node["luns"][0]["bdev_name"], "Malloc0");
        assert_eq!(node["queue_depth"], 128);
        let ig = calls[3].params.as_ref().unwrap();
        assert_eq!(ig["netmasks"], serde_json::json!(["127.0.0.1/32"]));
    }

    #[test]
    fn shape_errors_are_clear() {
        let shape = |v: Value| calls(v).unwrap_err();
        assert!(shape(json!([])).starts_with("config: expected {\"subsystems\":["));
        assert!(shape(json!({"subsystem": []})).starts_with("config: expected"));
        assert!(shape(json!({"subsystems": [{"config": []}]})).contains("no \"subsystem\" name"));
        assert!(
            shape(json!({"subsystems": [{"subsystem": "bdev", "config": {}}]}))
                .contains("of subsystem bdev is not a list")
        );
        assert_eq!(
            shape(json!({"subsystems": [{"subsystem": "bdev", "config": [{"params": {}}]}]})),
            "config: subsystem bdev: entry #0 is not {\"method\":NAME,\"params\":{..}}"
        );
        let empty = calls(json!({"subsystems": [{"subsystem": "bdev", "config": null}]}));
        assert!(empty.unwrap().is_empty());
    }

    #[test]
    fn load_reports_the_file() {
        let err = load("/nonexistent/ferrite.json").unwrap_err();
        assert!(
            err.starts_with("config: cannot read /nonexistent/ferrite.json"),
            "{err}"
        );
        let path = std::env::temp_dir().join(format!("ferrite-conf-{}.json", std::process::id()));
        std::fs::write(&path, "{\"subsystems\": [").unwrap();
        let err = load(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("is not valid JSON"), "{err}");
    }
}
