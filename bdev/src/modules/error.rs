//! error: a pass-through vbdev, `EE_{base}`, that fails I/O on demand, to test
//! how initiators and the SCSI layer handle device errors.
//!
//! `bdev_error_inject_error` arms a count per I/O type: the next `num` I/Os of that
//! type fail (with EIO, or as out of resources), then I/O passes through again.
//! The counts are shared by every channel, so exactly `num` fail however many
//! reactors submit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::vbdev;
use crate::{
    Bdev, BdevBackend, BdevError, BdevIo, BdevParams, ChannelBackend, Desc, IoChannel, IoError,
    IoType,
};

pub const MODULE: &str = "error";

/// `bdev_error_create` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    pub base_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
}

/// `bdev_error_delete` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    pub name: String,
}

fn one() -> u32 {
    1
}

/// `bdev_error_inject_error` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InjectErrorParams {
    pub name: String,
    /// An I/O type name (`read`, `write`, `unmap`, `flush`, `write_zeroes`,
    /// `compare`, `compare_and_write`, `reset`), `all`, or `clear` (disarm all).
    pub io_type: String,
    /// `failure` (the I/O fails with EIO) or `nomem` (out of resources).
    pub error_type: String,
    /// How many I/Os to fail; 0 disarms.
    #[serde(default = "one")]
    pub num: u32,
}

/// How an injected error fails an I/O (the upper half of an armed slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Failure = 1,
    NoMem = 2,
}

impl ErrorKind {
    fn parse(s: &str) -> Option<ErrorKind> {
        match s {
            "failure" => Some(ErrorKind::Failure),
            "nomem" => Some(ErrorKind::NoMem),
            _ => None,
        }
    }

    fn from_bits(v: u64) -> ErrorKind {
        if v == ErrorKind::NoMem as u64 {
            ErrorKind::NoMem
        } else {
            ErrorKind::Failure
        }
    }

    fn name(self) -> &'static str {
        match self {
            ErrorKind::Failure => "failure",
            ErrorKind::NoMem => "nomem",
        }
    }

    fn error(self) -> IoError {
        match self {
            ErrorKind::Failure => IoError::Device(libc::EIO),
            ErrorKind::NoMem => IoError::NoResources,
        }
    }
}

const COUNT_MASK: u64 = u32::MAX as u64;

/// Armed errors per I/O type (indexed like [`IoType::ALL`]): the kind in the upper
/// 32 bits, the I/Os left to fail in the lower, so both change in one atomic step.
#[derive(Default)]
struct Injections {
    slots: [AtomicU64; 8],
}

impl Injections {
    fn arm(&self, t: IoType, kind: ErrorKind, num: u32) {
        let v = if num == 0 {
            0
        } else {
            ((kind as u64) << 32) | num as u64
        };
        self.slots[t as usize].store(v, Ordering::Release);
    }

    /// Takes one armed error for an I/O of type `t`, if any is left.
    #[inline]
    fn take(&self, t: IoType) -> Option<IoError> {
        let slot = &self.slots[t as usize];
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            if cur & COUNT_MASK == 0 {
                return None;
            }
            match slot.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(ErrorKind::from_bits(cur >> 32).error()),
                Err(now) => cur = now,
            }
        }
    }

    fn pending(&self) -> Vec<Value> {
        IoType::ALL
            .iter()
            .filter_map(|&t| {
                let v = self.slots[t as usize].load(Ordering::Acquire);
                let left = v & COUNT_MASK;
                (left != 0).then(|| {
                    json!({
                        "io_type": t.name(),
                        "error_type": ErrorKind::from_bits(v >> 32).name(),
                        "num": left,
                    })
                })
            })
            .collect()
    }
}

/// Live error bdevs by name, for `bdev_error_inject_error`.
static DISKS: Mutex<Vec<(String, Arc<Injections>)>> = Mutex::new(Vec::new());

fn disks() -> MutexGuard<'static, Vec<(String, Arc<Injections>)>> {
    DISKS.lock().unwrap_or_else(|e| e.into_inner())
}

struct ErrorDisk {
    base_name: String,
    /// Taken (closing the base) by `destruct`.
    desc: Mutex<Option<Desc>>,
    injections: Arc<Injections>,
    supports: [bool; 8],
}

/// Makes `EE_{base_name}` over `p.base_name`; returns its name.
pub fn create(p: CreateParams) -> Result<String, BdevError> {
    let base = crate::get(&p.base_name)
        .ok_or_else(|| BdevError::NotFound(format!("base bdev {} does not exist", p.base_name)))?;
    let base_name = base.name().to_string();
    let name = format!("EE_{base_name}");
    if crate::get(&name).is_some() {
        return Err(BdevError::Exists(format!("bdev {name} already exists")));
    }
    let n = name.clone();
    let desc = vbdev::open_claimed(&base_name, MODULE, move || {
        vbdev::unregister_if_module(&n, MODULE)
    })?;
    let injections = Arc::new(Injections::default());
    let disk = ErrorDisk {
        base_name,
        desc: Mutex::new(Some(desc)),
        injections: injections.clone(),
        supports: vbdev::supported_types(&base),
    };
    // On failure the disk (and with it the base descriptor) is dropped here.
    let bdev = crate::register(
        BdevParams {
            name,
            uuid: p.uuid,
            product_name: "Error Disk".into(),
            block_size: base.block_size(),
            num_blocks: base.num_blocks(),
        },
        Box::new(disk),
    )?;
    disks().push((bdev.name().to_string(), injections));
    Ok(bdev.name().to_string())
}

/// Deletes an error bdev once every user has closed it, releasing its base.
pub fn delete(name: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    super::delete_of_module(name, MODULE, done)
}

/// Arms (or with `num` 0 or `io_type` "clear", disarms) errors on an error bdev.
pub fn inject_error(p: InjectErrorParams) -> Result<(), BdevError> {
    let types: &[IoType] = match p.io_type.as_str() {
        "all" | "clear" => &IoType::ALL,
        other => match IoType::ALL.iter().find(|t| t.name() == other) {
            Some(t) => std::slice::from_ref(t),
            None => {
                return Err(BdevError::Invalid(format!(
                    "unknown io_type '{other}' (use an I/O type name, all or clear)"
                )))
            }
        },
    };
    let kind = ErrorKind::parse(&p.error_type).ok_or_else(|| {
        BdevError::Invalid(format!(
            "unknown error_type '{}' (use failure or nomem)",
            p.error_type
        ))
    })?;
    let num = if p.io_type == "clear" { 0 } else { p.num };
    let bdev = super::find_of_module(&p.name, MODULE)?;
    let disks = disks();
    let (_, inj) = disks
        .iter()
        .find(|(n, _)| n == bdev.name())
        .ok_or_else(|| BdevError::NotFound(format!("error bdev {} is gone", bdev.name())))?;
    for &t in types {
        inj.arm(t, kind, num);
    }
    tracing::info!(
        "error bdev {}: next {num} {} I/O fail ({})",
        bdev.name(),
        p.io_type,
        p.error_type
    );
    Ok(())
}

impl BdevBackend for ErrorDisk {
    fn module(&self) -> &'static str {
        MODULE
    }

    fn supports(&self, t: IoType) -> bool {
        self.supports[t as usize]
    }

    fn create_channel(&self, _bdev: &Arc<Bdev>) -> Box<dyn ChannelBackend> {
        match self.desc.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(d) => Box::new(ErrorChannel {
                base: d.channel(),
                injections: self.injections.clone(),
            }),
            None => Box::new(vbdev::RemovedChannel),
        }
    }

    fn info(&self) -> Value {
        json!({
            "error": {
                "base_bdev": self.base_name,
                "injections": self.injections.pending(),
            }
        })
    }

    fn config(&self, bdev: &Bdev) -> Option<Value> {
        Some(json!({
            "method": "bdev_error_create",
            "params": {
                "base_name": self.base_name,
                "uuid": bdev.uuid().to_string(),
            }
        }))
    }

    fn destruct(&self) {
        disks().retain(|(_, i)| !Arc::ptr_eq(i, &self.injections));
        let desc = self.desc.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(desc);
    }
}

struct ErrorChannel {
    base: IoChannel,
    injections: Arc<Injections>,
}

impl ChannelBackend for ErrorChannel {
    #[inline]
    fn submit(&mut self, io: BdevIo) {
        if let Some(e) = self.injections.take(io.params().io_type) {
            io.complete(Err(e));
        } else {
            io.forward(&self.base, |_| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armed_counts_run_out_exactly() {
        let inj = Injections::default();
        inj.arm(IoType::Write, ErrorKind::Failure, 2);
        inj.arm(IoType::Read, ErrorKind::NoMem, 1);
        assert_eq!(inj.pending().len(), 2);
        assert_eq!(inj.take(IoType::Write), Some(IoError::Device(libc::EIO)));
        assert_eq!(inj.take(IoType::Flush), None);
        assert_eq!(inj.take(IoType::Read), Some(IoError::NoResources));
        assert_eq!(inj.take(IoType::Read), None);
        assert_eq!(inj.take(IoType::Write), Some(IoError::Device(libc::EIO)));
        assert_eq!(inj.take(IoType::Write), None);
        assert!(inj.pending().is_empty());
    }

    #[test]
    fn counts_are_exact_across_threads() {
        let inj = Arc::new(Injections::default());
        inj.arm(IoType::Write, ErrorKind::Failure, 1000);
        let failed: usize = (0..4)
            .map(|_| {
                let inj = inj.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| inj.take(IoType::Write).is_some())
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(failed, 1000);
    }

    #[test]
    fn params_default_num_to_one() {
        let p: InjectErrorParams = serde_json::from_str(
            r#"{"name":"EE_Malloc0","io_type":"read","error_type":"failure"}"#,
        )
        .unwrap();
        assert_eq!(p.num, 1);
        assert!(serde_json::from_str::<CreateParams>(r#"{"base_name":"a","x":1}"#).is_err());
    }
}
