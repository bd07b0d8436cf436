//! uring: a bdev on a regular file or a block device, through the reactor's
//! io_uring (see [`ring`]).
//!
//! Reads and writes are `ReadFixed`/`WriteFixed` on the registered arena, with
//! O_DIRECT whenever a block-sized direct read works (else buffered, said once in
//! the log); FUA writes carry `RWF_DSYNC`; flush is `fdatasync`; unmap punches a
//! hole (so unmapped blocks read back as zeros, and the bdev says so); write
//! zeroes is fallocate ZERO_RANGE (a punched hole where the file system has no
//! ZERO_RANGE, as tmpfs); compare and compare-and-write are the bdev layer's
//! read-and-compare. `bdev_uring_rescan` picks up a grown file.

mod file;
mod ring;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{Bdev, BdevBackend, BdevError, BdevIo, BdevParams, ChannelBackend, IoError, IoType};
use file::Zeroing;
use ring::{FileSlot, Ring};

pub const MODULE: &str = "uring";

/// `bdev_uring_create` parameters (SPDK's, plus `sqpoll`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    pub name: String,
    pub filename: String,
    /// Default: the device's logical block size, or 512 for a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    /// Submit through an SQPOLL ring (a kernel thread polls the submission
    /// queue, saving the submit syscall at the price of a busy kernel thread).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sqpoll: bool,
}

/// `bdev_uring_delete` and `bdev_uring_rescan` parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameParams {
    pub name: String,
}

struct Uring {
    path: PathBuf,
    backing: file::Backing,
    zeroing: Zeroing,
    sqpoll: bool,
}

/// Makes a uring bdev on `filename`; returns its name.
pub fn create(p: CreateParams) -> Result<String, BdevError> {
    super::check_new_name(&p.name)?;
    let path = PathBuf::from(&p.filename);
    let kind = file::kind(&path).map_err(BdevError::Invalid)?;
    let block_size = match (kind, p.block_size) {
        (file::Kind::Regular, bs) => bs.unwrap_or(512),
        (file::Kind::BlockDevice { logical_block_size }, None) => logical_block_size,
        (file::Kind::BlockDevice { logical_block_size }, Some(bs)) => {
            if bs % logical_block_size != 0 {
                return Err(BdevError::Invalid(format!(
                    "block_size {bs} does not match {}: its logical block size is {logical_block_size}",
                    p.filename
                )));
            }
            bs
        }
    };
    crate::check_block_size(block_size)?;
    let backing = file::open_backing(&path, block_size)
        .map_err(|e| BdevError::Invalid(format!("cannot open {}: {e}", p.filename)))?;
    let bytes = file::size(&backing.main)
        .map_err(|e| BdevError::Invalid(format!("cannot size {}: {e}", p.filename)))?;
    if bytes % block_size as u64 != 0 {
        return Err(BdevError::Invalid(format!(
            "{} is {bytes} bytes, not a multiple of block_size {block_size}",
            p.filename
        )));
    }
    if bytes == 0 {
        return Err(BdevError::Invalid(format!("{} is empty", p.filename)));
    }
    if let Some(why) = &backing.no_direct_reason {
        tracing::warn!(
            "uring bdev {}: O_DIRECT is off for {} ({why}); using buffered I/O",
            p.name,
            p.filename
        );
    }
    let zeroing = file::zeroing(&path, &backing.main, block_size);
    let bdev = crate::register(
        BdevParams {
            name: p.name,
            uuid: p.uuid,
            product_name: "URING bdev".into(),
            block_size,
            num_blocks: bytes / block_size as u64,
        },
        Box::new(Uring {
            path,
            backing,
            zeroing,
            sqpoll: p.sqpoll,
        }),
    )?;
    Ok(bdev.name().to_string())
}

/// Deletes a uring bdev once every user has closed it.
pub fn delete(name: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    super::delete_of_module(name, MODULE, done)
}

/// Picks up a new size of the bdev's file or device. A smaller size is taken
/// only while nothing has the bdev open. Returns the new block count.
pub fn rescan(name: &str) -> Result<u64, BdevError> {
    let bdev = super::find_of_module(name, MODULE)?;
    let Some(u) = uring_of(&bdev) else {
        return Err(BdevError::NotFound(format!(
            "bdev {name} is not a uring bdev"
        )));
    };
    let bytes = file::size(&u.backing.main)
        .map_err(|e| BdevError::Invalid(format!("cannot size {}: {e}", u.path.display())))?;
    let blocks = bytes / bdev.block_size() as u64;
    let old = bdev.num_blocks();
    if blocks == old {
        return Ok(old);
    }
    if blocks < old && bdev.open_count() > 0 {
        return Err(BdevError::Busy(format!(
            "{} shrank to {blocks} blocks from {old} while bdev {name} is open",
            u.path.display()
        )));
    }
    if blocks == 0 {
        return Err(BdevError::Invalid(format!("{} is empty", u.path.display())));
    }
    bdev.set_num_blocks(blocks);
    Ok(blocks)
}

fn uring_of(bdev: &Bdev) -> Option<&Uring> {
    // The module name was checked: the backend is ours.
    let any: &dyn std::any::Any = bdev.backend().as_any()?;
    any.downcast_ref::<Uring>()
}

impl BdevBackend for Uring {
    fn module(&self) -> &'static str {
        MODULE
    }

    fn supports(&self, t: IoType) -> bool {
        match t {
            IoType::Read | IoType::Write | IoType::Flush => true,
            IoType::Unmap => self.zeroing.punch_hole,
            IoType::WriteZeroes => self.zeroing.zero_range || self.zeroing.punch_hole,
            _ => false,
        }
    }

    fn unmap_reads_zeroes(&self) -> bool {
        self.zeroing.punch_hole
    }

    fn create_channel(&self, bdev: &Arc<Bdev>) -> Box<dyn ChannelBackend> {
        match UringChannel::new(self, bdev) {
            Ok(c) => Box::new(c),
            Err(e) => {
                tracing::error!(
                    "uring bdev {}: no io_uring on reactor {:?}: {e}; its I/O fails here",
                    bdev.name(),
                    ferrite_reactor::current_index()
                );
                Box::new(FailingChannel)
            }
        }
    }

    fn info(&self) -> Value {
        json!({
            "uring": {
                "filename": self.path.display().to_string(),
                "block_device": self.backing.block_device,
                "o_direct": self.backing.no_direct_reason.is_none(),
                "sqpoll": self.sqpoll,
                "punch_hole": self.zeroing.punch_hole,
                "zero_range": self.zeroing.zero_range,
            }
        })
    }

    fn config(&self, bdev: &Bdev) -> Option<Value> {
        let p = CreateParams {
            name: bdev.name().to_string(),
            filename: self.path.display().to_string(),
            block_size: Some(bdev.block_size()),
            uuid: Some(bdev.uuid()),
            sqpoll: self.sqpoll,
        };
        Some(json!({ "method": "bdev_uring_create", "params": p }))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// A reactor's half of a uring bdev: its files registered with the reactor's
/// ring.
struct UringChannel {
    ring: Rc<Ring>,
    main: FileSlot,
    /// The buffered descriptor beside an O_DIRECT main one.
    buffered: Option<FileSlot>,
    block_size: usize,
    zero_by_punch: bool,
    /// Keeps the files open while this channel has them registered.
    _bdev: Arc<Bdev>,
}

impl UringChannel {
    fn new(u: &Uring, bdev: &Arc<Bdev>) -> std::io::Result<UringChannel> {
        let ring = ring::ring(u.sqpoll)?;
        let main = ring.add_file(u.backing.main.as_raw_fd())?;
        let buffered = match u.backing.buffered.as_ref().map(File::as_raw_fd) {
            Some(fd) => match ring.add_file(fd) {
                Ok(s) => Some(s),
                Err(e) => {
                    ring.remove_file(main);
                    return Err(e);
                }
            },
            None => None,
        };
        Ok(UringChannel {
            ring,
            main,
            buffered,
            block_size: bdev.block_size() as usize,
            zero_by_punch: !u.zeroing.zero_range,
            _bdev: bdev.clone(),
        })
    }

    /// O_DIRECT takes buffers whose lengths are multiples of the block size
    /// (their addresses always are: arena buffers are 8 KiB aligned); other
    /// I/O goes through the buffered descriptor.
    fn file_for(&self, io: &BdevIo) -> FileSlot {
        match self.buffered {
            Some(b) => {
                let bs = self.block_size;
                let aligned =
                    io.with_request(|r| r.data.segments().iter().all(|s| s.len() % bs == 0));
                if aligned {
                    self.main
                } else {
                    b
                }
            }
            None => self.main,
        }
    }
}

impl ChannelBackend for UringChannel {
    fn submit(&mut self, io: BdevIo) {
        let p = io.params();
        let Some(op) = ring::op_for(p.io_type, p.fua, self.zero_by_punch) else {
            io.complete(Err(IoError::Unsupported));
            return;
        };
        let file = match p.io_type {
            IoType::Read | IoType::Write => self.file_for(&io),
            _ => self.main,
        };
        self.ring.submit(file, io, op);
    }
}

impl Drop for UringChannel {
    fn drop(&mut self) {
        // The channel goes only once no I/O of it is in flight (each holds the
        // channel), so the slots are free to reuse.
        self.ring.remove_file(self.main);
        if let Some(b) = self.buffered {
            self.ring.remove_file(b);
        }
    }
}

/// The channel of a reactor that could not set up a ring.
struct FailingChannel;

impl ChannelBackend for FailingChannel {
    fn submit(&mut self, io: BdevIo) {
        io.complete(Err(IoError::Device(libc::ENXIO)));
    }
}

/// The path of a uring bdev's file, for tests and logs.
pub fn filename(name: &str) -> Option<String> {
    let bdev = super::find_of_module(name, MODULE).ok()?;
    uring_of(&bdev).map(|u| u.path.display().to_string())
}
