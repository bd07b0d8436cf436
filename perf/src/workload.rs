//! The access patterns `ferrite-perf bdev -w` knows.

use ferrite_bdev::IoType;

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
}
