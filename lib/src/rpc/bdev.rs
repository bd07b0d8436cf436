//! The `bdev_*` JSON-RPC methods and the bdev subsystem (save_config, shutdown).
//!
//! Parameters are the modules' own typed structs, so a name SPDK's rpc.py sends is
//! exactly a field here and anything else is refused with the field named.

use std::sync::Arc;

use ferrite_bdev::modules::{delay, error, malloc, null, nvme, split, uring};
use ferrite_bdev::{self as bdev, Bdev, BdevError, IoType};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::jsonrpc::{parse_params, Methods, Responder, RpcError};

impl From<BdevError> for RpcError {
    fn from(e: BdevError) -> RpcError {
        RpcError::from_errno(e.errno(), e.to_string())
    }
}

/// Runs a synchronous create/delete-style call and answers with its result.
fn answer<T: serde::Serialize>(resp: Responder, result: Result<T, BdevError>) {
    resp.reply(result.map_err(RpcError::from));
}

/// Parses params, or answers the error and returns `None`.
fn params<T: serde::de::DeserializeOwned>(
    p: Option<Value>,
    resp: Responder,
) -> Option<(T, Responder)> {
    match parse_params::<T>(p) {
        Ok(t) => Some((t, resp)),
        Err(e) => {
            resp.err(e);
            None
        }
    }
}

/// Hands `resp` back unless an iSCSI target node exports one of `names` as a
/// LUN: deleting it is then refused (EBUSY, naming the target node).
fn not_exported<'a>(
    names: impl IntoIterator<Item = &'a str>,
    resp: Responder,
) -> Option<Responder> {
    match names
        .into_iter()
        .find_map(|n| crate::target::bdev_in_use(n).or_else(|| crate::srp::bdev_in_use(n)))
    {
        Some(why) => {
            resp.err(RpcError::from_errno(
                libc::EBUSY,
                format!("{why}: delete the target first"),
            ));
            None
        }
        None => Some(resp),
    }
}

/// The parts of the split of `base`.
fn split_parts(base: &str) -> Vec<String> {
    bdev::list()
        .iter()
        .filter(|b| b.module() == "split" && b.backend().info()["split"]["base_bdev"] == base)
        .map(|b| b.name().to_string())
        .collect()
}

/// An async delete: answers `true` once the bdev is gone.
fn delete_answer(resp: Responder) -> impl FnOnce(Result<(), BdevError>) + Send + 'static {
    move |r| answer(resp, r.map(|()| true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBdevsParams {
    #[serde(default)]
    name: Option<String>,
    /// Accepted for SPDK compatibility: we never wait for a bdev to appear.
    #[serde(default)]
    #[allow(dead_code)]
    timeout: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetIostatParams {
    #[serde(default)]
    name: Option<String>,
}

fn selected(name: Option<&str>) -> Result<Vec<Arc<Bdev>>, RpcError> {
    match name {
        Some(n) => bdev::get(n)
            .map(|b| vec![b])
            .ok_or_else(|| RpcError::from_errno(libc::ENODEV, format!("bdev {n} does not exist"))),
        None => Ok(bdev::list()),
    }
}

fn iostat(b: &Bdev) -> Value {
    let s = b.iostat();
    let t = |t: IoType| s.get(t);
    let failed: u64 = IoType::ALL.iter().map(|&x| s.get(x).failed).sum();
    let mut errors = serde_json::Map::new();
    for ty in IoType::ALL {
        if s.get(ty).failed > 0 {
            errors.insert(ty.name().into(), json!(s.get(ty).failed));
        }
    }
    json!({
        "name": b.name(),
        "bytes_read": t(IoType::Read).bytes,
        "num_read_ops": t(IoType::Read).ops,
        "bytes_written": t(IoType::Write).bytes,
        "num_write_ops": t(IoType::Write).ops,
        "bytes_unmapped": t(IoType::Unmap).bytes,
        "num_unmap_ops": t(IoType::Unmap).ops,
        "num_flush_ops": t(IoType::Flush).ops,
        "num_write_zeroes_ops": t(IoType::WriteZeroes).ops,
        "bytes_write_zeroed": t(IoType::WriteZeroes).bytes,
        "num_compare_ops": t(IoType::Compare).ops,
        "num_compare_and_write_ops": t(IoType::CompareAndWrite).ops,
        "num_reset_ops": t(IoType::Reset).ops,
        "read_latency_ticks": t(IoType::Read).latency_ticks,
        "max_read_latency_ticks": t(IoType::Read).max_latency_ticks,
        "write_latency_ticks": t(IoType::Write).latency_ticks,
        "max_write_latency_ticks": t(IoType::Write).max_latency_ticks,
        "unmap_latency_ticks": t(IoType::Unmap).latency_ticks,
        "max_unmap_latency_ticks": t(IoType::Unmap).max_latency_ticks,
        "num_failed_ops": failed,
        "io_error": errors,
    })
}

/// `bdev_uring_rescan`: picks up the file's new size and, when it changed, gives
/// every nexus of every LUN exporting the bdev CAPACITY DATA HAS CHANGED (so
/// initiators read the capacity again). Returns the block count.
pub fn uring_rescan(name: &str) -> Result<u64, BdevError> {
    let before = bdev::get(name).map(|b| b.num_blocks());
    let now = uring::rescan(name)?;
    if before.is_some_and(|b| b != now) {
        let told = crate::scsi::ua::bdev_capacity_changed(name);
        tracing::info!("bdev {name}: capacity changed; {told} LUN(s) told");
    }
    Ok(now)
}

/// `bdev_nvme_send_cmd` parameters, SPDK's: the command as a 64-byte NVMe SQE
/// and the data, both in URL-safe base64.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendCmdParams {
    name: String,
    /// `admin` or `io`.
    cmd_type: String,
    /// `c2h` (data comes from the device) or `h2c`.
    data_direction: String,
    cmdbuf: String,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    metadata: Option<String>,
    #[serde(default)]
    data_len: Option<u32>,
    #[serde(default)]
    metadata_len: Option<u32>,
    #[serde(default)]
    timeout_ms: Option<u32>,
}

/// URL-safe base64 as SPDK writes it (padded); padding optional on input.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

fn send_nvme_cmd(p: SendCmdParams) -> Result<Value, RpcError> {
    use base64::Engine;
    let invalid = |m: String| RpcError::from_errno(libc::EINVAL, m);
    let queue = match p.cmd_type.as_str() {
        "admin" => nvme::Queue::Admin,
        "io" => nvme::Queue::Io,
        t => return Err(invalid(format!("cmd_type {t:?} is neither admin nor io"))),
    };
    let to_device = match p.data_direction.as_str() {
        "h2c" => true,
        "c2h" => false,
        d => {
            return Err(invalid(format!(
                "data_direction {d:?} is neither c2h nor h2c"
            )))
        }
    };
    if p.metadata.is_some() || p.metadata_len.unwrap_or(0) != 0 {
        return Err(invalid("metadata is not supported by nvme bdevs".into()));
    }
    let cmd = B64
        .decode(&p.cmdbuf)
        .map_err(|e| invalid(format!("cmdbuf is not URL-safe base64: {e}")))?;
    let sqe: [u8; 64] = cmd.try_into().map_err(|c: Vec<u8>| {
        invalid(format!(
            "cmdbuf is {} bytes; an NVMe command is 64",
            c.len()
        ))
    })?;
    let data = match &p.data {
        Some(d) if to_device => B64
            .decode(d)
            .map_err(|e| invalid(format!("data is not URL-safe base64: {e}")))?,
        Some(_) => {
            return Err(invalid(
                "data is for h2c commands; c2h takes data_len".into(),
            ))
        }
        None => Vec::new(),
    };
    let data_len = p.data_len.unwrap_or(0) as usize;
    let a = nvme::send_cmd(
        &p.name,
        queue,
        &sqe,
        to_device,
        data,
        data_len,
        p.timeout_ms.unwrap_or(0),
    )?;
    let mut out = json!({ "cpl": B64.encode(a.cpl) });
    if !to_device && data_len > 0 {
        out["data"] = Value::String(B64.encode(&a.data));
    }
    Ok(out)
}

/// Registers every `bdev_*` method.
pub fn register_bdev_methods(m: &mut Methods) {
    m.register("bdev_malloc_create", |p, resp| {
        if let Some((p, resp)) = params::<malloc::CreateParams>(p, resp) {
            answer(resp, malloc::create(p));
        }
    });
    m.register("bdev_malloc_delete", |p, resp| {
        if let Some((p, resp)) = params::<malloc::DeleteParams>(p, resp) {
            if let Some(resp) = not_exported([p.name.as_str()], resp) {
                malloc::delete(&p.name, delete_answer(resp));
            }
        }
    });
    m.register("bdev_null_create", |p, resp| {
        if let Some((p, resp)) = params::<null::CreateParams>(p, resp) {
            answer(resp, null::create(p));
        }
    });
    m.register("bdev_null_delete", |p, resp| {
        if let Some((p, resp)) = params::<null::DeleteParams>(p, resp) {
            if let Some(resp) = not_exported([p.name.as_str()], resp) {
                null::delete(&p.name, delete_answer(resp));
            }
        }
    });
    m.register("bdev_uring_create", |p, resp| {
        if let Some((p, resp)) = params::<uring::CreateParams>(p, resp) {
            answer(resp, uring::create(p));
        }
    });
    m.register("bdev_uring_delete", |p, resp| {
        if let Some((p, resp)) = params::<uring::NameParams>(p, resp) {
            if let Some(resp) = not_exported([p.name.as_str()], resp) {
                uring::delete(&p.name, delete_answer(resp));
            }
        }
    });
    m.register("bdev_uring_rescan", |p, resp| {
        if let Some((p, resp)) = params::<uring::NameParams>(p, resp) {
            answer(resp, uring_rescan(&p.name));
        }
    });
    m.register("bdev_nvme_create", |p, resp| {
        if let Some((p, resp)) = params::<nvme::CreateParams>(p, resp) {
            answer(resp, nvme::create(p));
        }
    });
    m.register("bdev_nvme_delete", |p, resp| {
        if let Some((p, resp)) = params::<nvme::NameParams>(p, resp) {
            if let Some(resp) = not_exported([p.name.as_str()], resp) {
                nvme::delete(&p.name, delete_answer(resp));
            }
        }
    });
    m.register("bdev_nvme_send_cmd", |p, resp| {
        if let Some((p, resp)) = params::<SendCmdParams>(p, resp) {
            resp.reply(send_nvme_cmd(p));
        }
    });
    m.register("bdev_split_create", |p, resp| {
        if let Some((p, resp)) = params::<split::CreateParams>(p, resp) {
            answer(resp, split::create(p));
        }
    });
    m.register("bdev_split_delete", |p, resp| {
        if let Some((p, resp)) = params::<split::DeleteParams>(p, resp) {
            let parts = split_parts(&p.base_bdev);
            if let Some(resp) = not_exported(parts.iter().map(String::as_str), resp) {
                split::delete(&p.base_bdev, delete_answer(resp));
            }
        }
    });
    m.register("bdev_delay_create", |p, resp| {
        if let Some((p, resp)) = params::<delay::CreateParams>(p, resp) {
            answer(resp, delay::create(p));
        }
    });
    m.register("bdev_delay_delete", |p, resp| {
        if let Some((p, resp)) = params::<delay::DeleteParams>(p, resp) {
            if let Some(resp) = not_exported([p.name.as_str()], resp) {
                delay::delete(&p.name, delete_answer(resp));
            }
        }
    });
    m.register("bdev_delay_update_latency", |p, resp| {
        if let Some((p, resp)) = params::<delay::UpdateLatencyParams>(p, resp) {
            answer(resp, delay::update_latency(p).map(|()| true));
        }
    });
    m.register("bdev_error_create", |p, resp| {
        if let Some((p, resp)) = params::<error::CreateParams>(p, resp) {
            answer(resp, error::create(p));
        }
    });
    m.register("bdev_error_delete", |p, resp| {
        if let Some((p, resp)) = params::<error::DeleteParams>(p, resp) {
            if let Some(resp) = not_exported([p.name.as_str()], resp) {
                error::delete(&p.name, delete_answer(resp));
            }
        }
    });
    m.register("bdev_error_inject_error", |p, resp| {
        if let Some((p, resp)) = params::<error::InjectErrorParams>(p, resp) {
            answer(resp, error::inject_error(p).map(|()| true));
        }
    });
    m.register("bdev_get_bdevs", |p, resp| {
        if let Some((p, resp)) = params::<GetBdevsParams>(p, resp) {
            resp.reply(
                selected(p.name.as_deref()).map(|v| v.iter().map(|b| b.info()).collect::<Vec<_>>()),
            );
        }
    });
    m.register("bdev_get_iostat", |p, resp| {
        if let Some((p, resp)) = params::<GetIostatParams>(p, resp) {
            resp.reply(selected(p.name.as_deref()).map(|v| {
                json!({
                    "tick_rate": ferrite_reactor::tick_rate(),
                    "ticks": ferrite_reactor::ticks(),
                    "bdevs": v.iter().map(|b| iostat(b)).collect::<Vec<_>>(),
                })
            }));
        }
    });
}

/// The calls that recreate every bdev, oldest first (bases before what stacks on
/// them).
pub fn bdev_config() -> Vec<Value> {
    bdev::list()
        .iter()
        .filter_map(|b| b.backend().config(b))
        .collect()
}

/// Removes every bdev, newest first, one after the other; then `done`.
pub fn remove_all_bdevs(done: Box<dyn FnOnce() + Send>) {
    match bdev::list().pop() {
        None => done(),
        Some(b) => {
            let name = b.name().to_string();
            let target = name.clone();
            bdev::unregister(&target, move |r| {
                if let Err(e) = r {
                    tracing::error!("shutdown: removing bdev {name}: {e}");
                }
                remove_all_bdevs(done);
            });
        }
    }
}

/// The bdev subsystem: saves every bdev's create call and removes them all on
/// shutdown.
pub struct BdevSubsystem;

impl crate::subsystem::Subsystem for BdevSubsystem {
    fn name(&self) -> &'static str {
        "bdev"
    }

    fn write_config(&self) -> Vec<Value> {
        bdev_config()
    }

    fn fini(&self, done: crate::subsystem::FiniDone) {
        remove_all_bdevs(done);
    }
}
