//! The buffer arena: one mapping of hugepages (or normal pages with
//! `MADV_HUGEPAGE` when none are reserved), carved into
//!
//! * the I/O region: fixed-size data buffers in two classes, handed out through
//!   per-thread caches in front of lock-free global pools. This region is what an
//!   RDMA device registers as a memory region and io_uring as fixed buffers, once.
//! * the heap: large, long-lived regions (malloc bdevs' backing store), allocated
//!   on the control path.
//!
//! The arena is process-wide and made once ([`init`]); buffers refer to it by
//! `'static` reference, so handing one out or back never touches a reference count.

use std::cell::RefCell;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};

use crossbeam_queue::ArrayQueue;

/// Size of a small buffer.
pub const SMALL_BUF_SIZE: usize = 8 * 1024;
/// Size of a large buffer.
pub const LARGE_BUF_SIZE: usize = 128 * 1024;
/// The largest single buffer; bigger transfers use several.
pub const MAX_BUF_SIZE: usize = LARGE_BUF_SIZE;

const HUGEPAGE: usize = 2 * 1024 * 1024;
/// Buffers moved between a thread cache and the global pool at once.
const CACHE_BATCH: usize = 32;

/// Sizes of the arena's parts.
#[derive(Debug, Clone)]
pub struct MemConfig {
    /// Heap for long-lived regions such as malloc bdevs, in MiB.
    pub heap_mb: usize,
    /// Number of 8 KiB buffers.
    pub small_count: usize,
    /// Number of 128 KiB buffers.
    pub large_count: usize,
    /// Try hugepages first (fall back to normal pages when none are reserved).
    pub hugepages: bool,
}

impl Default for MemConfig {
    fn default() -> Self {
        MemConfig {
            heap_mb: 2048,
            small_count: 8192,
            large_count: 1024,
            hugepages: true,
        }
    }
}

/// Buffer size classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufClass {
    Small = 0,
    Large = 1,
}

impl BufClass {
    pub fn size(self) -> usize {
        match self {
            BufClass::Small => SMALL_BUF_SIZE,
            BufClass::Large => LARGE_BUF_SIZE,
        }
    }

    /// The smallest class that holds `len` bytes.
    pub fn for_len(len: usize) -> Option<BufClass> {
        if len <= SMALL_BUF_SIZE {
            Some(BufClass::Small)
        } else if len <= LARGE_BUF_SIZE {
            Some(BufClass::Large)
        } else {
            None
        }
    }
}

struct Pool {
    /// Offset of the first buffer from the arena base.
    offset: usize,
    count: usize,
    free: ArrayQueue<u32>,
}

/// The process-wide arena.
pub struct Arena {
    base: NonNull<u8>,
    len: usize,
    io_len: usize,
    hugepages: bool,
    pools: [Pool; 2],
    heap: Mutex<Vec<(usize, usize)>>,
    heap_offset: usize,
    heap_len: usize,
}

// SAFETY: the arena is a fixed mapping that lives for the whole process. Its
// mutable bookkeeping is behind lock-free queues or a Mutex; the bytes themselves
// are handed out as disjoint buffers and regions.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

static ARENA: OnceLock<Arena> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Maps the arena with `config`, once per process. A later call returns the
/// arena already made (its sizes are those of the first call).
pub fn init(config: &MemConfig) -> io::Result<&'static Arena> {
    let _g = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(a) = ARENA.get() {
        return Ok(a);
    }
    let arena = Arena::map(config)?;
    Ok(ARENA.get_or_init(|| arena))
}

/// The arena, made with default sizes if [`init`] was not called.
#[inline]
pub fn arena() -> &'static Arena {
    if let Some(a) = ARENA.get() {
        return a;
    }
    init(&MemConfig::default()).expect("cannot map the buffer arena")
}

fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

impl Arena {
    fn map(config: &MemConfig) -> io::Result<Arena> {
        let small_len = config.small_count * SMALL_BUF_SIZE;
        let large_len = config.large_count * LARGE_BUF_SIZE;
        let io_len = round_up(small_len + large_len, HUGEPAGE);
        let heap_len = round_up(config.heap_mb * 1024 * 1024, HUGEPAGE);
        let len = (io_len + heap_len).max(HUGEPAGE);
        let (base, hugepages) = map_memory(len, config.hugepages)?;
        let pool = |offset: usize, count: usize| {
            let free = ArrayQueue::new(count.max(1));
            for i in 0..count {
                let _ = free.push(i as u32);
            }
            Pool {
                offset,
                count,
                free,
            }
        };
        Ok(Arena {
            base,
            len,
            io_len,
            hugepages,
            pools: [
                pool(0, config.small_count),
                pool(small_len, config.large_count),
            ],
            heap: Mutex::new(if heap_len > 0 {
                vec![(0, heap_len)]
            } else {
                Vec::new()
            }),
            heap_offset: io_len,
            heap_len,
        })
    }

    /// The whole mapping: base address and length.
    pub fn region(&self) -> (*mut u8, usize) {
        (self.base.as_ptr(), self.len)
    }

    /// The I/O buffer region (what RDMA and io_uring register): base and length.
    pub fn io_region(&self) -> (*mut u8, usize) {
        (self.base.as_ptr(), self.io_len)
    }

    /// Whether the arena is backed by reserved hugepages.
    pub fn is_hugepage(&self) -> bool {
        self.hugepages
    }

    /// Free buffers of `class` in the global pool (not counting thread caches).
    pub fn free_buffers(&self, class: BufClass) -> usize {
        self.pools[class as usize].free.len()
    }

    /// Total buffers of `class`.
    pub fn total_buffers(&self, class: BufClass) -> usize {
        self.pools[class as usize].count
    }

    /// Heap bytes not yet handed out.
    pub fn heap_free(&self) -> usize {
        self.heap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|&(_, l)| l)
            .sum()
    }

    /// Heap size in bytes.
    pub fn heap_size(&self) -> usize {
        self.heap_len
    }

    /// Allocates a zeroed, hugepage-aligned region of at least `len` bytes from the
    /// heap, or `None` when the heap has no room. Control path.
    pub fn alloc_region(&'static self, len: usize) -> Option<Region> {
        let want = round_up(len.max(1), HUGEPAGE);
        let mut free = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        let i = free.iter().position(|&(_, l)| l >= want)?;
        let (off, l) = free[i];
        if l == want {
            free.remove(i);
        } else {
            free[i] = (off + want, l - want);
        }
        // SAFETY: off + want lies within the heap part of the mapping.
        let ptr = unsafe { self.base.as_ptr().add(self.heap_offset + off) };
        Some(Region {
            arena: self,
            ptr: NonNull::new(ptr).expect("arena pointer is not null"),
            offset: off,
            len: want,
        })
    }

    fn free_region(&self, offset: usize, ptr: NonNull<u8>, len: usize) {
        zero_pages(ptr, len);
        let mut free = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        let i = free.partition_point(|&(o, _)| o < offset);
        free.insert(i, (offset, len));
        // Coalesce with neighbours.
        if i + 1 < free.len() && free[i].0 + free[i].1 == free[i + 1].0 {
            free[i].1 += free[i + 1].1;
            free.remove(i + 1);
        }
        if i > 0 && free[i - 1].0 + free[i - 1].1 == free[i].0 {
            free[i - 1].1 += free[i].1;
            free.remove(i);
        }
    }

    #[inline]
    fn buffer_ptr(&self, class: BufClass, index: u32) -> NonNull<u8> {
        let pool = &self.pools[class as usize];
        // SAFETY: index < pool.count, so the buffer lies inside the I/O region.
        let p = unsafe {
            self.base
                .as_ptr()
                .add(pool.offset + index as usize * class.size())
        };
        NonNull::new(p).expect("arena pointer is not null")
    }
}

/// Maps `len` bytes, hugepages first. Returns the base and whether hugepages are used.
fn map_memory(len: usize, try_huge: bool) -> io::Result<(NonNull<u8>, bool)> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    if try_huge {
        // SAFETY: anonymous mapping with no address hint; checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                flags | libc::MAP_HUGETLB,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return Ok((NonNull::new(p as *mut u8).expect("mmap gave null"), true));
        }
        tracing::warn!(
            "no hugepages reserved for a {} MiB buffer arena ({}); using normal pages with MADV_HUGEPAGE \
             (reserve some with: echo N > /proc/sys/vm/nr_hugepages)",
            len >> 20,
            io::Error::last_os_error()
        );
    }
    // SAFETY: as above; MAP_NORESERVE so untouched heap costs no memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            flags | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: p..p+len is the mapping just made; the advice is only a hint.
    unsafe {
        libc::madvise(p, len, libc::MADV_HUGEPAGE);
    }
    Ok((NonNull::new(p as *mut u8).expect("mmap gave null"), false))
}

/// Returns pages to the kernel so they read back as zeros; writes zeros where the
/// kernel cannot do that.
fn zero_pages(ptr: NonNull<u8>, len: usize) {
    // SAFETY: ptr..ptr+len is a heap region no longer handed out; discarding its
    // private anonymous pages makes them read back as zeros.
    let rc = unsafe { libc::madvise(ptr.as_ptr() as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if rc != 0 {
        // SAFETY: as above; we own the region exclusively here.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, len) };
    }
}

/// A long-lived region of the arena's heap, returned (and zeroed) on drop.
pub struct Region {
    arena: &'static Arena,
    ptr: NonNull<u8>,
    offset: usize,
    len: usize,
}

// SAFETY: a Region is exclusive ownership of its bytes, like a Box<[u8]>.
unsafe impl Send for Region {}
// SAFETY: shared access hands out only raw pointers; callers of those own the
// discipline (a bdev treats the region as device memory).
unsafe impl Sync for Region {}

impl Region {
    /// Faults every page in now, so I/O to the region never waits for the
    /// kernel to find and clear a page. Best effort: without
    /// `MADV_POPULATE_WRITE` (Linux < 5.14) pages come on first touch.
    pub fn populate(&self) {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        // SAFETY: the range is this region's, mapped read-write; the advice only
        // allocates its pages (their contents stay zero).
        let rc = unsafe {
            libc::madvise(
                self.ptr.as_ptr() as *mut libc::c_void,
                self.len,
                MADV_POPULATE_WRITE,
            )
        };
        if rc != 0 {
            tracing::debug!(
                "populating {} MiB of the arena: {}",
                self.len >> 20,
                io::Error::last_os_error()
            );
        }
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.arena.free_region(self.offset, self.ptr, self.len);
    }
}

/// One I/O buffer from the arena. Dereferences to its first `len` bytes; goes
/// back to the calling thread's cache on drop.
///
/// Eight bytes: the class and index locate it in the arena, so lists of buffers
/// (an I/O's data travels by value through the bdev layer) stay small to move.
pub struct Buffer {
    len: u32,
    /// The class in the top bit, the index in its pool below.
    slot: u32,
}

const LARGE_BIT: u32 = 1 << 31;

impl Buffer {
    /// A buffer of at least `len` bytes (at most [`MAX_BUF_SIZE`]), or `None` when
    /// the pool of that class is empty (back-pressure) or `len` is too large.
    #[inline]
    pub fn alloc(len: usize) -> Option<Buffer> {
        let class = BufClass::for_len(len)?;
        let index = CACHE
            .try_with(|c| c.borrow_mut().get(class))
            .unwrap_or_else(|_| arena().pools[class as usize].free.pop())?;
        let slot = match class {
            BufClass::Small => index,
            BufClass::Large => index | LARGE_BIT,
        };
        Some(Buffer {
            len: len as u32,
            slot,
        })
    }

    pub fn class(&self) -> BufClass {
        if self.slot & LARGE_BIT != 0 {
            BufClass::Large
        } else {
            BufClass::Small
        }
    }

    fn index(&self) -> u32 {
        self.slot & !LARGE_BIT
    }

    pub fn capacity(&self) -> usize {
        self.class().size()
    }

    /// Sets the logical length (at most the capacity).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "buffer length beyond its capacity");
        self.len = len as u32;
    }

    #[inline]
    fn ptr(&self) -> *mut u8 {
        arena().buffer_ptr(self.class(), self.index()).as_ptr()
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr()
    }

    /// Offset from the start of the I/O region (for RDMA keys and fixed-buffer indices).
    pub fn arena_offset(&self) -> usize {
        self.ptr() as usize - arena().base.as_ptr() as usize
    }
}

impl Deref for Buffer {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: the buffer's bytes lie within the arena's I/O region, and this
        // Buffer owns them exclusively; len never exceeds the capacity.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len as usize) }
    }
}

impl DerefMut for Buffer {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len as usize) }
    }
}

impl Drop for Buffer {
    #[inline]
    fn drop(&mut self) {
        let (class, index) = (self.class(), self.index());
        if CACHE
            .try_with(|c| c.borrow_mut().put(class, index))
            .is_err()
        {
            let _ = arena().pools[class as usize].free.push(index);
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("class", &self.class())
            .field("index", &self.index())
            .field("len", &self.len)
            .finish()
    }
}

/// A thread's stash of free buffer indices, refilled from and flushed to the
/// global pools in batches.
struct ThreadCache {
    free: [Vec<u32>; 2],
}

thread_local! {
    static CACHE: RefCell<ThreadCache> = RefCell::new(ThreadCache {
        free: [Vec::with_capacity(CACHE_BATCH * 2), Vec::with_capacity(CACHE_BATCH * 2)],
    });
}

impl ThreadCache {
    #[inline]
    fn get(&mut self, class: BufClass) -> Option<u32> {
        let list = &mut self.free[class as usize];
        if list.is_empty() {
            let pool = &arena().pools[class as usize];
            for _ in 0..CACHE_BATCH {
                match pool.free.pop() {
                    Some(i) => list.push(i),
                    None => break,
                }
            }
        }
        list.pop()
    }

    #[inline]
    fn put(&mut self, class: BufClass, index: u32) {
        let list = &mut self.free[class as usize];
        if list.len() >= CACHE_BATCH * 2 {
            let pool = &arena().pools[class as usize];
            for i in list.drain(CACHE_BATCH..) {
                let _ = pool.free.push(i);
            }
        }
        list.push(index);
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        if let Some(a) = ARENA.get() {
            for (c, list) in self.free.iter_mut().enumerate() {
                for i in list.drain(..) {
                    let _ = a.pools[c].free.push(i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Buffer>(), 8);
    }

    #[test]
    fn buffers_come_back() {
        let a = arena();
        let total = a.total_buffers(BufClass::Small);
        let mut bufs = Vec::new();
        for _ in 0..100 {
            let mut b = Buffer::alloc(4096).expect("buffer");
            b[0] = 0xab;
            b[4095] = 0xcd;
            bufs.push(b);
        }
        let big = Buffer::alloc(LARGE_BUF_SIZE).expect("large buffer");
        assert_eq!(big.class(), BufClass::Large);
        assert!(Buffer::alloc(LARGE_BUF_SIZE + 1).is_none());
        let (base, len) = a.io_region();
        for b in &bufs {
            let p = b.as_ptr() as usize;
            assert!(p >= base as usize && p + b.capacity() <= base as usize + len);
        }
        drop(bufs);
        drop(big);
        assert!(a.free_buffers(BufClass::Small) <= total);
    }

    #[test]
    fn regions_are_zeroed_and_reused() {
        let a = arena();
        let before = a.heap_free();
        let r = a.alloc_region(3 << 20).expect("region");
        assert_eq!(r.len(), 4 << 20);
        // SAFETY: the region is ours and 4 MiB long.
        unsafe {
            assert_eq!(*r.as_ptr().add(12345), 0);
            *r.as_ptr().add(12345) = 7;
        }
        drop(r);
        assert_eq!(a.heap_free(), before);
        let r = a.alloc_region(1).expect("region");
        // SAFETY: as above.
        unsafe { assert_eq!(*r.as_ptr().add(12345), 0) };
        assert!(a.alloc_region(a.heap_size() * 2).is_none());
    }
}
