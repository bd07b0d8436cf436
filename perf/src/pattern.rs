//! The data `verify` writes: every block stamped with its LBA, the write's
//! generation and the job's seed, followed by pseudo-random words derived from
//! those three, so a block written to the wrong place, a stale block or a torn
//! one all read back different.

use ferrite_bdev::IoData;

use crate::rng::mix64;

/// Bytes at the start of each block holding (lba, generation, seed).
pub const STAMP_BYTES: usize = 24;

/// Fills `data` (whole blocks of `block_size`) for a write at `first_lba`.
pub fn fill(data: &mut IoData, block_size: usize, first_lba: u64, generation: u64, seed: u64) {
    let mut lba = first_lba;
    for seg in data.segments_mut() {
        for block in seg.chunks_exact_mut(block_size) {
            fill_block(block, lba, generation, seed);
            lba += 1;
        }
    }
}

/// Fills `buf` (whole blocks of `block_size`) for a write at `first_lba`: the
/// same data [`fill`] writes, for a plain byte buffer.
pub fn fill_slice(buf: &mut [u8], block_size: usize, first_lba: u64, generation: u64, seed: u64) {
    for (i, block) in buf.chunks_exact_mut(block_size).enumerate() {
        fill_block(block, first_lba + i as u64, generation, seed);
    }
}

/// The LBA stamped in the block of `buf` that holds byte `at`.
pub fn stamped_lba_in(buf: &[u8], block_size: usize, at: usize) -> u64 {
    let start = at / block_size * block_size;
    let mut b = [0u8; 8];
    if let Some(s) = buf.get(start..start + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

#[inline]
fn fill_block(block: &mut [u8], lba: u64, generation: u64, seed: u64) {
    block[0..8].copy_from_slice(&lba.to_le_bytes());
    block[8..16].copy_from_slice(&generation.to_le_bytes());
    block[16..24].copy_from_slice(&seed.to_le_bytes());
    let mut x = mix64(lba ^ mix64(generation ^ seed.rotate_left(23))) | 1;
    for w in block[STAMP_BYTES..].chunks_exact_mut(8) {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
}

/// The LBA stamped in the block that holds byte `at` of `data`.
pub fn stamped_lba(data: &IoData, block_size: usize, at: usize) -> u64 {
    let start = at / block_size * block_size;
    let mut b = [0u8; 8];
    data.copy_to_slice(start, &mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_differ_by_lba_generation_and_seed() {
        let mut a = IoData::alloc(8192).unwrap();
        let mut b = IoData::alloc(8192).unwrap();
        fill(&mut a, 4096, 10, 1, 7);
        fill(&mut b, 4096, 10, 1, 7);
        assert_eq!(a.first_difference(0, &b, 8192), None);
        assert_eq!(stamped_lba(&a, 4096, 5000), 11);
        fill(&mut b, 4096, 10, 2, 7);
        assert!(a.first_difference(0, &b, 8192).is_some());
        fill(&mut b, 4096, 11, 1, 7);
        assert_eq!(a.first_difference(0, &b, 8192), Some(0));
        fill(&mut b, 4096, 10, 1, 8);
        assert_eq!(a.first_difference(0, &b, 8192), Some(16));
    }

    #[test]
    fn slices_get_the_same_data() {
        let mut a = IoData::alloc(8192).unwrap();
        fill(&mut a, 512, 3, 4, 5);
        let mut s = vec![0u8; 8192];
        fill_slice(&mut s, 512, 3, 4, 5);
        let mut from_io = vec![0u8; 8192];
        a.copy_to_slice(0, &mut from_io);
        assert_eq!(s, from_io);
        assert_eq!(stamped_lba_in(&s, 512, 1030), 5);
    }
}
