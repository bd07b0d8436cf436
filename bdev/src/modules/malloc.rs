//! malloc: a RAM disk in the buffer arena's heap. Reads and writes copy between
//! the arena region and the I/O buffers; unmap and write-zeroes zero the blocks.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{BdevBackend, BdevError, BdevIo, BdevParams, ChannelBackend, IoError, IoType};
use ferrite_reactor::mem::{arena, Region};

pub const MODULE: &str = "malloc";

/// `bdev_malloc_create` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub num_blocks: u64,
    pub block_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
}

/// `bdev_malloc_delete` parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    pub name: String,
}

struct Malloc {
    region: Region,
}

/// Makes a malloc bdev; returns its name.
pub fn create(p: CreateParams) -> Result<String, BdevError> {
    crate::check_block_size(p.block_size)?;
    let name = p
        .name
        .clone()
        .unwrap_or_else(|| super::next_free_name("Malloc"));
    if crate::get(&name).is_some() {
        return Err(BdevError::Exists(format!("bdev {name} already exists")));
    }
    let bytes = p
        .num_blocks
        .checked_mul(p.block_size as u64)
        .filter(|&b| b > 0 && b <= usize::MAX as u64)
        .ok_or_else(|| {
            BdevError::Invalid(format!("num_blocks {} is not a usable size", p.num_blocks))
        })?;
    let region = arena().alloc_region(bytes as usize).ok_or_else(|| {
        BdevError::NoMemory(format!(
            "no room for {} MiB in the memory arena ({} MiB free; start ferrite-tgt with a larger -s)",
            bytes >> 20,
            arena().heap_free() >> 20
        ))
    })?;
    // Like SPDK's zeroed DMA memory: every page exists before the first I/O, so
    // writes never stop for a page fault.
    region.populate();
    let bdev = crate::register(
        BdevParams {
            name,
            uuid: p.uuid,
            product_name: "Malloc disk".into(),
            block_size: p.block_size,
            num_blocks: p.num_blocks,
        },
        Box::new(Malloc { region }),
    )?;
    Ok(bdev.name().to_string())
}

/// Deletes a malloc bdev once every user has closed it.
pub fn delete(name: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    super::delete_of_module(name, MODULE, done)
}

impl BdevBackend for Malloc {
    fn module(&self) -> &'static str {
        MODULE
    }

    fn unmap_reads_zeroes(&self) -> bool {
        true // zeroed memory
    }

    fn supports(&self, t: IoType) -> bool {
        matches!(
            t,
            IoType::Read
                | IoType::Write
                | IoType::Flush
                | IoType::Unmap
                | IoType::WriteZeroes
                | IoType::Reset
        )
    }

    fn create_channel(&self, bdev: &Arc<crate::Bdev>) -> Box<dyn ChannelBackend> {
        Box::new(MallocChannel {
            base: self.region.as_ptr(),
            block_size: bdev.block_size() as usize,
            _bdev: bdev.clone(),
        })
    }

    fn config(&self, bdev: &crate::Bdev) -> Option<Value> {
        Some(json!({
            "method": "bdev_malloc_create",
            "params": {
                "name": bdev.name(),
                "num_blocks": bdev.num_blocks(),
                "block_size": bdev.block_size(),
                "uuid": bdev.uuid().to_string(),
            }
        }))
    }
}

struct MallocChannel {
    base: *mut u8,
    block_size: usize,
    /// Keeps the region (owned by the bdev's backend) alive while this channel is.
    _bdev: Arc<crate::Bdev>,
}

impl ChannelBackend for MallocChannel {
    fn submit(&mut self, io: BdevIo) {
        let p = io.params();
        let at = p.offset_blocks as usize * self.block_size;
        let len = p.num_blocks as usize * self.block_size;
        // SAFETY (all blocks below): the generic layer checked offset + length
        // against the bdev's size, which is within the region; `_bdev` keeps the
        // region mapped. Concurrent I/O to the same blocks from other reactors races
        // like DMA to a disk would; SCSI leaves that outcome unspecified.
        let disk = unsafe { self.base.add(at) };
        match p.io_type {
            IoType::Read => io.with_request(|r| {
                let mut off = 0;
                for seg in r.data.segments_mut() {
                    let n = seg.len();
                    unsafe { std::ptr::copy_nonoverlapping(disk.add(off), seg.as_mut_ptr(), n) };
                    off += n;
                }
            }),
            IoType::Write => io.with_request(|r| {
                let mut off = 0;
                for seg in r.data.segments() {
                    let n = seg.len();
                    unsafe { std::ptr::copy_nonoverlapping(seg.as_ptr(), disk.add(off), n) };
                    off += n;
                }
            }),
            IoType::Unmap | IoType::WriteZeroes => unsafe { std::ptr::write_bytes(disk, 0, len) },
            IoType::Flush | IoType::Reset => {}
            _ => {
                io.complete(Err(IoError::Unsupported));
                return;
            }
        }
        io.complete(Ok(()));
    }
}
