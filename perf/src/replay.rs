//! Creating the bdevs of a config file: SPDK's format, replayed with
//! `ferrite_conf::replay` through a JSON-RPC method table, as the target does.

use std::sync::Arc;
use std::time::Duration;

use ferrite_lib::jsonrpc::Methods;
use ferrite_reactor::Handle;
use serde_json::Value;

/// The methods a config may call: every `bdev_*` method the target has.
pub fn methods() -> Methods {
    let mut m = Methods::new();
    ferrite_lib::rpc::bdev::register_bdev_methods(&mut m);
    m
}

/// Replays `config` on reactor 0 and waits for it.
pub fn replay(handle: &Handle, config: Value) -> Result<(), String> {
    crate::run_on_async(handle, 0, Duration::from_secs(60), move |tx| {
        let methods = Arc::new(methods());
        ferrite_conf::replay(config, methods, move |r| {
            let _ = tx.send(r);
        });
    })?
}

/// What a config will create, as far as sizing the arena goes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Calls in the bdev subsystem (a bound on the bdevs most configs make).
    pub bdev_calls: usize,
    /// Bytes of malloc bdevs.
    pub malloc_bytes: u64,
}

/// Looks through a config for its bdev calls (shape errors are left to the replay).
pub fn footprint(config: &Value) -> Footprint {
    let mut f = Footprint::default();
    let Some(subsystems) = config.get("subsystems").and_then(Value::as_array) else {
        return f;
    };
    for s in subsystems {
        if s.get("subsystem").and_then(Value::as_str) != Some("bdev") {
            continue;
        }
        let Some(calls) = s.get("config").and_then(Value::as_array) else {
            continue;
        };
        for c in calls {
            f.bdev_calls += 1;
            if c.get("method").and_then(Value::as_str) == Some("bdev_malloc_create") {
                let p = c.get("params");
                let n = p
                    .and_then(|p| p.get("num_blocks"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let bs = p
                    .and_then(|p| p.get("block_size"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                // Regions are rounded up to 2 MiB hugepages.
                let bytes = n.saturating_mul(bs).div_ceil(2 << 20) * (2 << 20);
                f.malloc_bytes = f.malloc_bytes.saturating_add(bytes);
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn footprint_counts_bdev_calls_and_malloc_bytes() {
        let c = json!({"subsystems": [
            {"subsystem": "bdev", "config": [
                {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 1024, "block_size": 512}},
                {"method": "bdev_null_create", "params": {"name": "N0", "num_blocks": 1024, "block_size": 512}},
            ]},
            {"subsystem": "iscsi", "config": [{"method": "x"}]},
        ]});
        assert_eq!(
            footprint(&c),
            Footprint {
                bdev_calls: 2,
                malloc_bytes: 2 << 20
            }
        );
        assert_eq!(footprint(&json!([])), Footprint::default());
    }
}
