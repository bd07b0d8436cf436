//! The access patterns `ferrite-perf bdev -w` knows.

use ferrite_bdev::IoType;

use crate::rng::WyRand;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Read,
    RandRead,
    Write,
    RandWrite,
    /// Sequential mix of reads and writes (`-M` percent reads).
    Rw,
    /// Random mix of reads and writes (`-M` percent reads).
    RandRw,
    /// Write a pattern, read it back, compare.
    Verify,
    Unmap,
    WriteZeroes,
    Flush,
}

impl Workload {
    pub const ALL: [Workload; 10] = [
        Workload::Read,
        Workload::RandRead,
        Workload::Write,
        Workload::RandWrite,
        Workload::Rw,
        Workload::RandRw,
        Workload::Verify,
        Workload::Unmap,
        Workload::WriteZeroes,
        Workload::Flush,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::RandRead => "randread",
            Workload::Write => "write",
            Workload::RandWrite => "randwrite",
            Workload::Rw => "rw",
            Workload::RandRw => "randrw",
            Workload::Verify => "verify",
            Workload::Unmap => "unmap",
            Workload::WriteZeroes => "write_zeroes",
            Workload::Flush => "flush",
        }
    }

    pub fn parse(s: &str) -> Result<Workload, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload '{s}' (one of {})", names.join(", "))
            })
    }

    /// Random offsets (otherwise sequential with wrap).
    pub fn is_random(self) -> bool {
        matches!(
            self,
            Workload::RandRead | Workload::RandWrite | Workload::RandRw
        )
    }

    /// Whether it mixes reads and writes by `-M`.
    pub fn is_mixed(self) -> bool {
        matches!(self, Workload::Rw | Workload::RandRw)
    }

    /// Whether the bdev must be opened for writing.
    pub fn writes(self) -> bool {
        !matches!(self, Workload::Read | Workload::RandRead)
    }

    /// The I/O types the bdev must support.
    pub fn io_types(self) -> &'static [IoType] {
        match self {
            Workload::Read | Workload::RandRead => &[IoType::Read],
            Workload::Write | Workload::RandWrite => &[IoType::Write],
            Workload::Rw | Workload::RandRw | Workload::Verify => &[IoType::Read, IoType::Write],
            Workload::Unmap => &[IoType::Unmap],
            Workload::WriteZeroes => &[IoType::WriteZeroes],
            Workload::Flush => &[IoType::Flush],
        }
    }

    /// Data buffers each queue slot needs (verify keeps the written data and a
    /// separate buffer to read back into).
    pub fn buffers_per_slot(self) -> usize {
        match self {
            Workload::Verify => 2,
            Workload::Unmap | Workload::WriteZeroes | Workload::Flush => 0,
            _ => 1,
        }
    }
}

/// The kind of the next I/O a [`Picker`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Read,
    Write,
    /// verify: write a pattern to the unit (then read it back and compare).
    VerifyWrite,
    Unmap,
    WriteZeroes,
    Flush,
}

/// Chooses each I/O of a closed-loop job: its kind (by workload and read mix) and
/// its unit (an I/O-sized piece of the job's range), random or sequential with
/// wrap. For verify it hands out the next unit that no slot holds, and holds it
/// until [`Picker::release`], so two I/Os in flight never overlap. Shared by the
/// bdev jobs and the iSCSI initiator; never allocates after [`Picker::new`].
#[derive(Debug, Clone)]
pub struct Picker {
    workload: Workload,
    read_pct: u32,
    units: u64,
    rng: WyRand,
    seq: u64,
    /// verify: one bit per unit, set while a slot holds the unit.
    held: Vec<u64>,
    /// I/Os still to hand out (`max_ios`; practically unbounded without).
    left: u64,
}

impl Picker {
    /// A picker over `units` units. verify needs at least as many units as I/Os
    /// in flight (see `job::geometry`).
    pub fn new(
        workload: Workload,
        read_pct: u32,
        units: u64,
        seed: u64,
        max_ios: Option<u64>,
    ) -> Picker {
        let held = if workload == Workload::Verify {
            vec![0u64; units.div_ceil(64) as usize]
        } else {
            Vec::new()
        };
        Picker {
            workload,
            read_pct,
            units,
            rng: WyRand::new(seed),
            seq: 0,
            held,
            left: max_ios.unwrap_or(u64::MAX),
        }
    }

    /// I/Os still to hand out (0: the job is done).
    #[inline]
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The next I/O: its kind and unit.
    #[inline]
    pub fn pick(&mut self) -> (Pick, u64) {
        self.left = self.left.saturating_sub(1);
        let kind = match self.workload {
            Workload::Read | Workload::RandRead => Pick::Read,
            Workload::Write | Workload::RandWrite => Pick::Write,
            Workload::Rw | Workload::RandRw => {
                if self.rng.below(100) < self.read_pct as u64 {
                    Pick::Read
                } else {
                    Pick::Write
                }
            }
            Workload::Verify => Pick::VerifyWrite,
            Workload::Unmap => Pick::Unmap,
            Workload::WriteZeroes => Pick::WriteZeroes,
            Workload::Flush => Pick::Flush,
        };
        let unit = if kind == Pick::VerifyWrite {
            self.next_free_unit()
        } else if self.workload.is_random() {
            self.rng.below(self.units)
        } else {
            let u = self.seq;
            self.seq = if u + 1 >= self.units { 0 } else { u + 1 };
            u
        };
        (kind, unit)
    }

    /// verify: the next unit after the last one handed out that no slot holds.
    /// At most depth - 1 units are held when this runs and the range has at least
    /// depth units, so it ends.
    fn next_free_unit(&mut self) -> u64 {
        loop {
            let u = self.seq;
            self.seq = if u + 1 >= self.units { 0 } else { u + 1 };
            let (w, bit) = ((u / 64) as usize, 1u64 << (u % 64));
            if self.held[w] & bit == 0 {
                self.held[w] |= bit;
                return u;
            }
        }
    }

    /// verify: lets go of a unit (no-op for other workloads).
    #[inline]
    pub fn release(&mut self, unit: u64) {
        if let Some(w) = self.held.get_mut((unit / 64) as usize) {
            *w &= !(1u64 << (unit % 64));
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(Workload::parse(w.name()), Ok(w));
        }
        assert!(Workload::parse("bogus").unwrap_err().contains("randread"));
    }

    #[test]
    fn picker_sequential_wraps_and_verify_skips_held_units() {
        let mut p = Picker::new(Workload::Read, 0, 3, 1, None);
        let units: Vec<u64> = (0..5).map(|_| p.pick().1).collect();
        assert_eq!(units, [0, 1, 2, 0, 1]);
        let mut v = Picker::new(Workload::Verify, 0, 3, 1, Some(4));
        assert_eq!(v.pick(), (Pick::VerifyWrite, 0));
        assert_eq!(v.pick(), (Pick::VerifyWrite, 1));
        v.release(0);
        assert_eq!(v.pick(), (Pick::VerifyWrite, 2));
        assert_eq!(v.pick(), (Pick::VerifyWrite, 0));
        assert_eq!(v.left(), 0);
        let mut m = Picker::new(Workload::RandRw, 30, 100, 7, None);
        let reads = (0..10_000).filter(|_| m.pick().0 == Pick::Read).count();
        assert!((2_500..3_500).contains(&reads), "{reads}");
    }
}
