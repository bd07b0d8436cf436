//! Big-endian field helpers for CDBs and parameter data, and LUN encoding.

pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Encodes a LUN number as SAM's 8-byte LUN field: peripheral device addressing
/// below 256, flat space addressing up to 16383.
pub fn encode_lun(lun: u64) -> [u8; 8] {
    let mut out = [0u8; 8];
    if lun < 256 {
        out[1] = lun as u8;
    } else {
        out[0] = 0x40 | ((lun >> 8) & 0x3f) as u8;
        out[1] = lun as u8;
    }
    out
}

/// Decodes an 8-byte LUN field (peripheral or flat space addressing; other
/// methods decode to a number no LUN has).
pub fn decode_lun(field: &[u8; 8]) -> u64 {
    match field[0] >> 6 {
        0b00 if field[0] & 0x3f == 0 => field[1] as u64,
        0b01 => (((field[0] & 0x3f) as u64) << 8) | field[1] as u64,
        _ => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luns_round_trip() {
        for lun in [0u64, 1, 255, 256, 1000, 16383] {
            assert_eq!(decode_lun(&encode_lun(lun)), lun);
        }
        assert_eq!(encode_lun(5), [0, 5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_lun(300), [0x41, 44, 0, 0, 0, 0, 0, 0]);
    }
}
