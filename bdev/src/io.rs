//! What a bdev I/O is: its type, its range, its data, and how it ends.

use arrayvec::ArrayVec;
use ferrite_reactor::mem::{Buffer, MAX_BUF_SIZE};
use std::fmt;

/// Most buffers one I/O carries (16 x 128 KiB = 2 MiB).
pub const MAX_SEGMENTS: usize = 16;
/// The largest I/O in bytes.
pub const MAX_IO_BYTES: usize = MAX_SEGMENTS * MAX_BUF_SIZE;

/// The I/O types a bdev may support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoType {
    Read,
    Write,
    Flush,
    Unmap,
    WriteZeroes,
    Compare,
    CompareAndWrite,
    Reset,
}

impl IoType {
    pub const ALL: [IoType; 8] = [
        IoType::Read,
        IoType::Write,
        IoType::Flush,
        IoType::Unmap,
        IoType::WriteZeroes,
        IoType::Compare,
        IoType::CompareAndWrite,
        IoType::Reset,
    ];

    /// The name SPDK's RPCs use for this type.
    pub fn name(self) -> &'static str {
        match self {
            IoType::Read => "read",
            IoType::Write => "write",
            IoType::Flush => "flush",
            IoType::Unmap => "unmap",
            IoType::WriteZeroes => "write_zeroes",
            IoType::Compare => "compare",
            IoType::CompareAndWrite => "compare_and_write",
            IoType::Reset => "reset",
        }
    }

    pub fn from_name(name: &str) -> Option<IoType> {
        IoType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Bytes of data an I/O of this type carries for `num_blocks` blocks.
    pub fn data_len(self, num_blocks: u64, block_size: u32) -> Option<u64> {
        let one = num_blocks.checked_mul(block_size as u64)?;
        match self {
            IoType::Read | IoType::Write | IoType::Compare => Some(one),
            IoType::CompareAndWrite => one.checked_mul(2),
            _ => Some(0),
        }
    }
}

impl fmt::Display for IoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an I/O failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoError {
    /// offset + length lies beyond the end of the bdev.
    OutOfRange,
    /// The data length does not match the block count, or the count is zero.
    BadLength,
    /// The bdev does not support this I/O type.
    Unsupported,
    /// Compare found different data; `offset` is the first differing byte.
    Miscompare { offset: u64 },
    /// The device's own compare found different data and does not say where.
    DeviceMiscompare,
    /// No request slot or buffer was available: back-pressure, retry later.
    NoResources,
    /// The I/O was aborted (by a reset, or because the bdev went away).
    Aborted,
    /// The bdev is being removed.
    Removed,
    /// The device reported an error (errno).
    Device(i32),
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::OutOfRange => write!(f, "I/O beyond the end of the bdev"),
            IoError::BadLength => write!(f, "data length does not match the block count"),
            IoError::Unsupported => write!(f, "I/O type not supported by this bdev"),
            IoError::Miscompare { offset } => write!(f, "miscompare at byte {offset}"),
            IoError::DeviceMiscompare => write!(f, "miscompare"),
            IoError::NoResources => write!(f, "out of I/O resources"),
            IoError::Aborted => write!(f, "I/O aborted"),
            IoError::Removed => write!(f, "bdev removed"),
            IoError::Device(e) => write!(f, "device error {e}"),
        }
    }
}

impl std::error::Error for IoError {}

/// The result an I/O completes with.
pub type IoStatus = Result<(), IoError>;

/// An I/O's data: up to [`MAX_SEGMENTS`] arena buffers, used in order.
#[derive(Default)]
pub struct IoData {
    segs: ArrayVec<Buffer, MAX_SEGMENTS>,
}

impl IoData {
    pub fn new() -> IoData {
        IoData {
            segs: ArrayVec::new(),
        }
    }

    /// Data in one buffer.
    pub fn single(buf: Buffer) -> IoData {
        let mut d = IoData::new();
        d.segs.push(buf);
        d
    }

    /// Allocates `len` bytes of buffers (the fewest that hold it), or `None` when
    /// the pool is empty or `len` is too large.
    pub fn alloc(len: usize) -> Option<IoData> {
        if len > MAX_IO_BYTES {
            return None;
        }
        let mut d = IoData::new();
        let mut left = len;
        while left > 0 {
            let n = left.min(MAX_BUF_SIZE);
            d.segs.push(Buffer::alloc(n)?);
            left -= n;
        }
        Some(d)
    }

    /// Adds a buffer at the end; gives it back when the list is full.
    pub fn push(&mut self, buf: Buffer) -> Result<(), Buffer> {
        self.segs.try_push(buf).map_err(|e| e.element())
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.segs.iter().map(|b| b.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn segments(&self) -> &[Buffer] {
        &self.segs
    }

    pub fn segments_mut(&mut self) -> &mut [Buffer] {
        &mut self.segs
    }

    /// Takes the buffers out, leaving this empty.
    pub fn take(&mut self) -> IoData {
        std::mem::take(self)
    }

    /// Copies `src` into the data starting at byte `at`. Panics if it does not fit.
    pub fn copy_from_slice(&mut self, at: usize, src: &[u8]) {
        let mut done = 0;
        self.for_each_range_mut(at, src.len(), |chunk| {
            chunk.copy_from_slice(&src[done..done + chunk.len()]);
            done += chunk.len();
        });
    }

    /// Copies bytes starting at `at` into `dst`. Panics if out of range.
    pub fn copy_to_slice(&self, at: usize, dst: &mut [u8]) {
        let mut done = 0;
        self.for_each_range(at, dst.len(), |chunk| {
            let n = chunk.len();
            dst[done..done + n].copy_from_slice(chunk);
            done += n;
        });
    }

    /// Fills the whole data with `byte`.
    pub fn fill(&mut self, byte: u8) {
        for s in self.segs.iter_mut() {
            s.fill(byte);
        }
    }

    /// Calls `f` on each contiguous piece of bytes `at..at+len`.
    pub fn for_each_range(&self, mut at: usize, mut len: usize, mut f: impl FnMut(&[u8])) {
        for s in self.segs.iter() {
            if len == 0 {
                break;
            }
            if at >= s.len() {
                at -= s.len();
                continue;
            }
            let n = (s.len() - at).min(len);
            f(&s[at..at + n]);
            at = 0;
            len -= n;
        }
        assert_eq!(len, 0, "range beyond the end of the I/O data");
    }

    /// Mutable form of [`for_each_range`](Self::for_each_range).
    pub fn for_each_range_mut(
        &mut self,
        mut at: usize,
        mut len: usize,
        mut f: impl FnMut(&mut [u8]),
    ) {
        for s in self.segs.iter_mut() {
            if len == 0 {
                break;
            }
            if at >= s.len() {
                at -= s.len();
                continue;
            }
            let n = (s.len() - at).min(len);
            f(&mut s[at..at + n]);
            at = 0;
            len -= n;
        }
        assert_eq!(len, 0, "range beyond the end of the I/O data");
    }

    /// The first byte at which `self[at..at+len]` and `other[0..len]` differ.
    pub fn first_difference(&self, at: usize, other: &IoData, len: usize) -> Option<usize> {
        let mut pos = 0;
        while pos < len {
            let a = self.chunk_at(at + pos);
            let b = other.chunk_at(pos);
            let n = a.len().min(b.len()).min(len - pos);
            assert!(n > 0, "compare beyond the end of the I/O data");
            if let Some(i) = a[..n].iter().zip(&b[..n]).position(|(x, y)| x != y) {
                return Some(pos + i);
            }
            pos += n;
        }
        None
    }

    /// The contiguous bytes from `at` to the end of the buffer holding it.
    fn chunk_at(&self, mut at: usize) -> &[u8] {
        for s in self.segs.iter() {
            if at < s.len() {
                return &s[at..];
            }
            at -= s.len();
        }
        &[]
    }
}

impl IntoIterator for IoData {
    type Item = Buffer;
    type IntoIter = arrayvec::IntoIter<Buffer, MAX_SEGMENTS>;

    /// The buffers, in order.
    fn into_iter(self) -> Self::IntoIter {
        self.segs.into_iter()
    }
}

impl fmt::Debug for IoData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IoData({} bytes in {} buffers)",
            self.len(),
            self.segs.len()
        )
    }
}

/// One I/O as its submitter describes it. The submitter gets it (and its data)
/// back on completion.
#[derive(Debug)]
pub struct IoRequest {
    pub io_type: IoType,
    pub offset_blocks: u64,
    pub num_blocks: u64,
    /// Force unit access: the write is durable when it completes.
    pub fua: bool,
    /// Read: where the data goes. Write: the data. Compare: the expected data.
    /// Compare-and-write: the expected data followed by the new data.
    pub data: IoData,
}

impl IoRequest {
    fn new(io_type: IoType, offset_blocks: u64, num_blocks: u64, data: IoData) -> IoRequest {
        IoRequest {
            io_type,
            offset_blocks,
            num_blocks,
            fua: false,
            data,
        }
    }

    pub fn read(offset_blocks: u64, num_blocks: u64, data: IoData) -> IoRequest {
        IoRequest::new(IoType::Read, offset_blocks, num_blocks, data)
    }

    pub fn write(offset_blocks: u64, num_blocks: u64, data: IoData, fua: bool) -> IoRequest {
        let mut r = IoRequest::new(IoType::Write, offset_blocks, num_blocks, data);
        r.fua = fua;
        r
    }

    pub fn flush(offset_blocks: u64, num_blocks: u64) -> IoRequest {
        IoRequest::new(IoType::Flush, offset_blocks, num_blocks, IoData::new())
    }

    pub fn unmap(offset_blocks: u64, num_blocks: u64) -> IoRequest {
        IoRequest::new(IoType::Unmap, offset_blocks, num_blocks, IoData::new())
    }

    pub fn write_zeroes(offset_blocks: u64, num_blocks: u64) -> IoRequest {
        IoRequest::new(
            IoType::WriteZeroes,
            offset_blocks,
            num_blocks,
            IoData::new(),
        )
    }

    pub fn compare(offset_blocks: u64, num_blocks: u64, expected: IoData) -> IoRequest {
        IoRequest::new(IoType::Compare, offset_blocks, num_blocks, expected)
    }

    /// `data` holds the expected blocks, then the blocks to write.
    pub fn compare_and_write(
        offset_blocks: u64,
        num_blocks: u64,
        data: IoData,
        fua: bool,
    ) -> IoRequest {
        let mut r = IoRequest::new(IoType::CompareAndWrite, offset_blocks, num_blocks, data);
        r.fua = fua;
        r
    }

    pub fn reset() -> IoRequest {
        IoRequest::new(IoType::Reset, 0, 0, IoData::new())
    }

    /// Whether this I/O touches blocks (reset does not).
    pub fn has_range(&self) -> bool {
        self.io_type != IoType::Reset
    }

    pub(crate) fn overlaps(&self, offset: u64, num: u64) -> bool {
        self.has_range()
            && self.offset_blocks < offset + num
            && offset < self.offset_blocks + self.num_blocks
    }
}

/// Receives completed I/O. The `tag` is whatever the submitter passed; the request
/// comes back with its data.
pub trait IoCallback {
    fn io_done(&self, tag: u64, status: IoStatus, req: IoRequest);
}
