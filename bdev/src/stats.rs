//! Per-bdev I/O statistics, one cache-line-aligned slot per reactor so reactors
//! never write the same line; readers sum the slots.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::io::{IoStatus, IoType};

const SLOTS: usize = 64;

#[derive(Default)]
#[repr(align(128))]
struct Slot {
    ops: [AtomicU64; 8],
    bytes: [AtomicU64; 8],
    ticks: [AtomicU64; 8],
    max_ticks: [AtomicU64; 8],
    failed: [AtomicU64; 8],
}

/// The slots of one bdev.
pub(crate) struct IoStatSlots {
    slots: Box<[Slot]>,
}

/// Totals for one I/O type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeStat {
    pub ops: u64,
    pub bytes: u64,
    pub latency_ticks: u64,
    pub max_latency_ticks: u64,
    pub failed: u64,
}

/// Totals for a bdev, indexed like [`IoType::ALL`].
#[derive(Debug, Clone, Default)]
pub struct IoStat {
    pub by_type: [TypeStat; 8],
}

impl IoStat {
    pub fn get(&self, t: IoType) -> TypeStat {
        self.by_type[t as usize]
    }
}

impl IoStatSlots {
    pub(crate) fn new() -> IoStatSlots {
        IoStatSlots {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }

    /// Records a completed I/O. Single writer per slot in practice; relaxed
    /// atomics keep a stray second writer correct.
    #[inline]
    pub(crate) fn record(
        &self,
        reactor: usize,
        t: IoType,
        bytes: u64,
        ticks: u64,
        status: &IoStatus,
    ) {
        let s = &self.slots[reactor % SLOTS];
        let i = t as usize;
        if status.is_err() {
            s.failed[i].fetch_add(1, Relaxed);
            return;
        }
        s.ops[i].fetch_add(1, Relaxed);
        s.bytes[i].fetch_add(bytes, Relaxed);
        s.ticks[i].fetch_add(ticks, Relaxed);
        if ticks > s.max_ticks[i].load(Relaxed) {
            s.max_ticks[i].store(ticks, Relaxed);
        }
    }

    pub(crate) fn sum(&self) -> IoStat {
        let mut out = IoStat::default();
        for s in self.slots.iter() {
            for (i, t) in out.by_type.iter_mut().enumerate() {
                t.ops += s.ops[i].load(Relaxed);
                t.bytes += s.bytes[i].load(Relaxed);
                t.latency_ticks += s.ticks[i].load(Relaxed);
                t.max_latency_ticks = t.max_latency_ticks.max(s.max_ticks[i].load(Relaxed));
                t.failed += s.failed[i].load(Relaxed);
            }
        }
        out
    }
}

impl crate::Bdev {
    /// This bdev's I/O totals since it was registered.
    pub fn iostat(&self) -> IoStat {
        self.stats.sum()
    }
}
