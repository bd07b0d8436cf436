//! What a uring bdev learns about its file or block device when it is made or
//! rescanned: kind, size, logical block size, and whether O_DIRECT, punching
//! holes and zeroing ranges work on it. Control path only.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use ferrite_reactor::mem::Buffer;

/// A backing file or block device, opened.
pub(crate) struct Backing {
    /// Opened with O_DIRECT when that works at the bdev's block size, else
    /// buffered.
    pub main: File,
    /// A buffered descriptor beside an O_DIRECT `main`, for I/O whose buffers
    /// are not multiples of the block size (O_DIRECT would refuse them).
    pub buffered: Option<File>,
    pub block_device: bool,
    /// Why O_DIRECT is off, when it is.
    pub no_direct_reason: Option<String>,
}

/// The kind of a path: what the RPC error says when it is neither.
pub(crate) enum Kind {
    Regular,
    BlockDevice { logical_block_size: u32 },
}

/// Checks `path` is a regular file or a block device.
pub(crate) fn kind(path: &Path) -> Result<Kind, String> {
    let md = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ft = md.file_type();
    if ft.is_dir() {
        return Err(format!("{} is a directory", path.display()));
    }
    if ft.is_file() {
        return Ok(Kind::Regular);
    }
    if ft.is_block_device() {
        let dev = md.rdev();
        let sysfs = format!(
            "/sys/dev/block/{}:{}/queue/logical_block_size",
            libc::major(dev),
            libc::minor(dev)
        );
        let lbs = std::fs::read_to_string(&sysfs)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(512);
        return Ok(Kind::BlockDevice {
            logical_block_size: lbs,
        });
    }
    Err(format!(
        "{} is neither a regular file nor a block device",
        path.display()
    ))
}

/// The size in bytes (block devices report theirs at the end).
pub(crate) fn size(f: &File) -> io::Result<u64> {
    let md = f.metadata()?;
    if md.file_type().is_block_device() {
        let mut f = f;
        return f.seek(SeekFrom::End(0));
    }
    Ok(md.len())
}

fn open(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// Opens `path` for a bdev of `block_size`-byte blocks: O_DIRECT when a
/// block-sized direct read at offset 0 works, else buffered.
pub(crate) fn open_backing(path: &Path, block_size: u32) -> io::Result<Backing> {
    let buffered = open(path, false)?;
    let block_device = buffered.metadata()?.file_type().is_block_device();
    let why_not = match open(path, true) {
        Ok(direct) => match probe_direct_read(&direct, block_size) {
            Ok(()) => {
                return Ok(Backing {
                    main: direct,
                    buffered: Some(buffered),
                    block_device,
                    no_direct_reason: None,
                })
            }
            Err(e) => format!("a {block_size}-byte O_DIRECT read fails: {e}"),
        },
        Err(e) => format!("cannot open it with O_DIRECT: {e}"),
    };
    Ok(Backing {
        main: buffered,
        buffered: None,
        block_device,
        no_direct_reason: Some(why_not),
    })
}

/// Reads the first block with O_DIRECT into an arena buffer (aligned like every
/// buffer the bdev will use).
fn probe_direct_read(f: &File, block_size: u32) -> io::Result<()> {
    let mut buf = Buffer::alloc(block_size as usize)
        .ok_or_else(|| io::Error::other("no arena buffer free"))?;
    f.read_at(&mut buf[..], 0).map(drop)
}

fn fallocate(f: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate takes no pointers; the fd is open for the call.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, len as i64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a bdev can unmap and zero blocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Zeroing {
    /// fallocate PUNCH_HOLE works: unmap, and unmapped blocks read back as
    /// zeros (a hole in a file reads as zeros; on a block device the kernel
    /// turns it into a guaranteed-zero write-zeroes without fallback).
    pub punch_hole: bool,
    /// fallocate ZERO_RANGE works; else write-zeroes punches a hole.
    pub zero_range: bool,
}

/// Finds out what `f` supports without touching its data: for a file, both
/// modes are tried on one block past its end (and what ZERO_RANGE allocated
/// there is punched away again); for a block device, the queue limits say.
pub(crate) fn zeroing(path: &Path, f: &File, block_size: u32) -> Zeroing {
    let Ok(md) = f.metadata() else {
        return Zeroing {
            punch_hole: false,
            zero_range: false,
        };
    };
    if md.file_type().is_block_device() {
        let dev = md.rdev();
        let wz = std::fs::read_to_string(format!(
            "/sys/dev/block/{}:{}/queue/write_zeroes_max_bytes",
            libc::major(dev),
            libc::minor(dev)
        ))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
        // ZERO_RANGE on a block device falls back to writing zeros.
        return Zeroing {
            punch_hole: wz > 0,
            zero_range: true,
        };
    }
    let end = md.len();
    let bs = block_size as u64;
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    let punch_hole = fallocate(f, keep | libc::FALLOC_FL_PUNCH_HOLE, end, bs).is_ok();
    let zero_range = fallocate(f, keep | libc::FALLOC_FL_ZERO_RANGE, end, bs).is_ok();
    if zero_range && punch_hole {
        let _ = fallocate(f, keep | libc::FALLOC_FL_PUNCH_HOLE, end, bs);
    }
    tracing::debug!(
        "{}: punch hole {punch_hole}, zero range {zero_range}",
        path.display()
    );
    Zeroing {
        punch_hole,
        zero_range,
    }
}
