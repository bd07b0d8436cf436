//! nvme: a bdev on an NVMe namespace through the kernel's io_uring passthrough
//! (`/dev/ngXnY`, the namespace's generic char device).
//!
//! At create time the namespace is identified through the admin passthrough
//! (Identify Controller and Identify Namespace on the namespace's device, which
//! the kernel sends to its controller): LBA format and block size, capacity,
//! volatile write cache, ONCS (Compare, Dataset Management, Write Zeroes) and
//! the largest transfer. I/O then goes through the reactor's NVMe ring (see
//! [`ring`]): read, write (FUA), flush (only with a volatile write cache),
//! unmap (DSM deallocate), write-zeroes and compare are the NVMe commands;
//! compare-and-write is the bdev layer's, under its range lock (read, compare,
//! write, with overlapping I/O held back). [`send_cmd`] passes raw admin and I/O
//! commands through for `bdev_nvme_send_cmd`.
//!
//! A namespace that goes away under the bdev (controller removed) makes its I/O
//! fail with `ENODEV` (the SCSI layer answers NOT READY, MEDIUM NOT PRESENT);
//! the bdev says `removed` in `bdev_get_bdevs` until it is deleted.

mod cmd;
mod dev;
mod ring;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{Bdev, BdevBackend, BdevError, BdevIo, BdevParams, ChannelBackend, IoError, IoType};
pub use cmd::Command;
pub use dev::{Answer, Queue};

pub const MODULE: &str = "nvme";

/// `bdev_nvme_create` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    pub name: String,
    /// The namespace's generic char device, `/dev/ngXnY`.
    pub filename: String,
    /// Must be the namespace's LBA data size when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
}

/// `bdev_nvme_delete` parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameParams {
    pub name: String,
}

struct Nvme {
    path: PathBuf,
    file: File,
    nsid: u32,
    id: cmd::Identity,
    /// Largest transfer per command in bytes, a block multiple.
    max_transfer: u32,
    /// The namespace answered ENODEV/ENXIO: it is gone.
    removed: AtomicBool,
    /// Whether the last channel made passes fixed buffers (0: no channel yet,
    /// 1: yes, 2: plain addresses).
    fixed_buffers: AtomicU8,
}

/// Makes an nvme bdev on the namespace `filename`; returns its name.
pub fn create(p: CreateParams) -> Result<String, BdevError> {
    super::check_new_name(&p.name)?;
    let path = PathBuf::from(&p.filename);
    let file = dev::open_generic(&path).map_err(BdevError::Invalid)?;
    let nsid = dev::namespace_id(&file).map_err(|e| {
        BdevError::Invalid(format!("{}: cannot get its namespace id: {e}", p.filename))
    })?;
    let ctrl = dev::identify(&file, cmd::CNS_CONTROLLER, 0)
        .map_err(|e| BdevError::Invalid(format!("{}: {e}", p.filename)))?;
    let ns = dev::identify(&file, cmd::CNS_NAMESPACE, nsid)
        .map_err(|e| BdevError::Invalid(format!("{}: {e}", p.filename)))?;
    let id = cmd::parse_identity(&ctrl, &ns)
        .map_err(|e| BdevError::Invalid(format!("{}: {e}", p.filename)))?;
    if id.metadata_size != 0 {
        return Err(BdevError::Invalid(format!(
            "{} is formatted with {} bytes of metadata per block, which nvme bdevs do not \
             support; format it without metadata",
            p.filename, id.metadata_size
        )));
    }
    if let Some(bs) = p.block_size {
        if bs != id.block_size {
            return Err(BdevError::Invalid(format!(
                "block_size {bs} does not match {}: the namespace is formatted with {}-byte blocks",
                p.filename, id.block_size
            )));
        }
    }
    crate::check_block_size(id.block_size).map_err(|_| {
        BdevError::Invalid(format!(
            "{} has {}-byte blocks; nvme bdevs take 512 to 4096",
            p.filename, id.block_size
        ))
    })?;
    if id.num_blocks == 0 {
        return Err(BdevError::Invalid(format!("{} is empty", p.filename)));
    }
    let bs = id.block_size as u64;
    let max_transfer = id
        .max_transfer
        .unwrap_or(u64::MAX)
        .min(cmd::MAX_NLB * bs)
        .min(u32::MAX as u64)
        / bs
        * bs;
    let max_transfer = max_transfer.max(bs) as u32;
    let uuid = p.uuid.or(id.nguid.map(Uuid::from_bytes));
    tracing::info!(
        "nvme bdev {}: {} namespace {nsid} of {} ({}), {} x {} bytes, write cache {}, \
         compare {}, deallocate {}, write zeroes {}, max transfer {} KiB",
        p.name,
        p.filename,
        id.model,
        id.serial,
        id.num_blocks,
        id.block_size,
        id.vwc,
        id.compare,
        id.dsm,
        id.write_zeroes,
        max_transfer / 1024
    );
    let bdev = crate::register(
        BdevParams {
            name: p.name,
            uuid,
            product_name: "NVMe disk".into(),
            block_size: id.block_size,
            num_blocks: id.num_blocks,
        },
        Box::new(Nvme {
            path,
            file,
            nsid,
            id,
            max_transfer,
            removed: AtomicBool::new(false),
            fixed_buffers: AtomicU8::new(0),
        }),
    )?;
    Ok(bdev.name().to_string())
}

/// Deletes an nvme bdev once every user has closed it.
pub fn delete(name: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    super::delete_of_module(name, MODULE, done)
}

fn nvme_of(bdev: &Bdev) -> Option<&Nvme> {
    let any: &dyn std::any::Any = bdev.backend().as_any()?;
    any.downcast_ref::<Nvme>()
}

/// A raw command's answer: the 16-byte completion queue entry as the device
/// would have posted it (DW0/DW1 the result, the status in DW3 bits 31:17) and
/// the data it returned.
#[derive(Debug, Clone)]
pub struct SendCmdAnswer {
    pub cpl: [u8; 16],
    pub data: Vec<u8>,
}

/// Sends a raw NVMe command (a 64-byte SQE) to the namespace's controller
/// (`Queue::Admin`) or to the namespace (`Queue::Io`; NSID 0 means this
/// namespace). `data` is sent to the device when `to_device`, else `data_len`
/// bytes come back. Blocks the calling thread until the device answers or
/// `timeout_ms` (0: the kernel's default) passes: control path only.
pub fn send_cmd(
    name: &str,
    queue: Queue,
    sqe: &[u8; 64],
    to_device: bool,
    data: Vec<u8>,
    data_len: usize,
    timeout_ms: u32,
) -> Result<SendCmdAnswer, BdevError> {
    const MAX_DATA: usize = 1 << 20;
    let bdev = super::find_of_module(name, MODULE)?;
    let n = nvme_of(&bdev)
        .ok_or_else(|| BdevError::NotFound(format!("bdev {name} is not an nvme bdev")))?;
    let mut c = Command::from_sqe(sqe);
    if queue == Queue::Io && c.nsid == 0 {
        c.nsid = n.nsid;
    }
    let mut buf = if to_device { data } else { vec![0u8; data_len] };
    if buf.len() > MAX_DATA {
        return Err(BdevError::Invalid(format!(
            "data of {} bytes is more than the {MAX_DATA} a command may carry here",
            buf.len()
        )));
    }
    let a = dev::passthru(&n.file, queue, &c, &mut buf, timeout_ms).map_err(|e| {
        BdevError::Invalid(format!(
            "{}: the kernel refused the command: {e}",
            n.path.display()
        ))
    })?;
    let mut cpl = [0u8; 16];
    cpl[0..8].copy_from_slice(&a.result.to_le_bytes());
    cpl[12..16].copy_from_slice(&((a.status as u32) << 17).to_le_bytes());
    if to_device {
        buf.clear();
    }
    Ok(SendCmdAnswer { cpl, data: buf })
}

/// Notes that the namespace of `bdev` answered as gone; said once in the log.
fn note_removed(bdev: &Bdev, errno: i32) {
    if let Some(n) = nvme_of(bdev) {
        if !n.removed.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "nvme bdev {}: {} is gone ({}); its I/O fails until the bdev is deleted",
                bdev.name(),
                n.path.display(),
                std::io::Error::from_raw_os_error(errno)
            );
        }
    }
}

impl BdevBackend for Nvme {
    fn module(&self) -> &'static str {
        MODULE
    }

    fn supports(&self, t: IoType) -> bool {
        match t {
            IoType::Read | IoType::Write | IoType::Flush => true,
            IoType::Unmap => self.id.dsm,
            IoType::WriteZeroes => self.id.write_zeroes,
            IoType::Compare => self.id.compare,
            // Emulated by the bdev layer under its range lock.
            IoType::CompareAndWrite | IoType::Reset => false,
        }
    }

    fn unmap_reads_zeroes(&self) -> bool {
        self.id.dsm && self.id.deallocated_reads_zeroes
    }

    fn create_channel(&self, bdev: &Arc<Bdev>) -> Box<dyn ChannelBackend> {
        let made = ring::ring().and_then(|ring| {
            let ns = ring.add_ns(
                self.file.as_raw_fd(),
                self.nsid,
                bdev.block_size(),
                self.max_transfer,
            )?;
            Ok((ring, ns))
        });
        match made {
            Ok((ring, ns)) => {
                let fixed = if ring.fixed_buffers() { 1 } else { 2 };
                self.fixed_buffers.store(fixed, Ordering::Relaxed);
                Box::new(NvmeChannel {
                    ring,
                    ns,
                    vwc: self.id.vwc,
                    bdev: bdev.clone(),
                })
            }
            Err(e) => {
                tracing::error!(
                    "nvme bdev {}: no NVMe ring on reactor {:?}: {e}; its I/O fails here",
                    bdev.name(),
                    ferrite_reactor::current_index()
                );
                Box::new(FailingChannel)
            }
        }
    }

    fn info(&self) -> Value {
        let fixed_buffers = match self.fixed_buffers.load(Ordering::Relaxed) {
            0 => Value::Null,
            f => Value::Bool(f == 1),
        };
        json!({
            "nvme": {
                "filename": self.path.display().to_string(),
                "nsid": self.nsid,
                "model_number": self.id.model,
                "serial_number": self.id.serial,
                "firmware_revision": self.id.firmware,
                "volatile_write_cache": self.id.vwc,
                "oncs": {
                    "compare": self.id.compare,
                    "dsm": self.id.dsm,
                    "write_zeroes": self.id.write_zeroes,
                },
                "deallocated_reads_zeroes": self.id.deallocated_reads_zeroes,
                "max_transfer_bytes": self.max_transfer,
                "fixed_buffers": fixed_buffers,
                "removed": self.removed.load(Ordering::Relaxed),
            }
        })
    }

    fn config(&self, bdev: &Bdev) -> Option<Value> {
        let p = CreateParams {
            name: bdev.name().to_string(),
            filename: self.path.display().to_string(),
            block_size: Some(bdev.block_size()),
            uuid: Some(bdev.uuid()),
        };
        Some(json!({ "method": "bdev_nvme_create", "params": p }))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// A reactor's half of an nvme bdev: its namespace registered with the
/// reactor's NVMe ring.
struct NvmeChannel {
    ring: Rc<ring::Ring>,
    ns: ring::Ns,
    vwc: bool,
    /// Keeps the device open while this channel has it registered.
    bdev: Arc<Bdev>,
}

impl ChannelBackend for NvmeChannel {
    fn submit(&mut self, io: BdevIo) {
        let p = io.params();
        // Without a volatile write cache every completed write is durable.
        if p.io_type == IoType::Flush && !self.vwc {
            io.complete(Ok(()));
            return;
        }
        if nvme_of(&self.bdev).is_some_and(|n| n.removed.load(Ordering::Relaxed)) {
            io.complete(Err(IoError::Device(libc::ENODEV)));
            return;
        }
        self.ring.submit(self.ns, io);
    }
}

impl Drop for NvmeChannel {
    fn drop(&mut self) {
        // The channel goes only once none of its I/O is in flight.
        self.ring.remove_ns(self.ns);
    }
}

/// The channel of a reactor that could not set up a ring.
struct FailingChannel;

impl ChannelBackend for FailingChannel {
    fn submit(&mut self, io: BdevIo) {
        io.complete(Err(IoError::Device(libc::ENXIO)));
    }
}
