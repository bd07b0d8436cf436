//! Header and data digests: CRC32C (Castagnoli), RFC 7143 §11.2.3 and
//! Appendix B.4, computed by the `crc32c` crate (SSE 4.2 / ARMv8 CRC when the
//! CPU has them).
//!
//! On the wire a digest is the CRC32C value in little-endian byte order (the
//! RFC's test vector for 32 zero bytes reads `aa 36 91 8a`). The header digest
//! covers the BHS and the AHSs; the data digest covers the data segment and its
//! padding. Scatter lists are digested without copying: feed each piece in turn.
//!
//! What to do on a mismatch at ErrorRecoveryLevel 0 (RFC 7143 §7.8):
//! - header digest error: the length fields cannot be trusted, so the only
//!   safe resynchronisation is to close the connection;
//! - data digest error: discard the PDU and send a Reject with reason
//!   [`RejectReason::DataDigestError`](super::pdu::RejectReason::DataDigestError).
//!   For a Data-Out PDU the task must then end with CHECK CONDITION
//!   ("protocol service CRC error") once all its data has arrived; for a
//!   command with immediate data, the command is dropped and the initiator
//!   retries it.

use super::pdu::{pad_len, Bhs};

/// Length of a digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// A digest as it is on the wire.
pub type Digest = [u8; DIGEST_LEN];

/// Which digest did not match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestError {
    /// Close the connection (ERL 0).
    Header,
    /// Discard the PDU and answer with a Reject, reason Data Digest Error.
    Data,
}

impl std::fmt::Display for DigestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DigestError::Header => f.write_str("header digest mismatch"),
            DigestError::Data => f.write_str("data digest mismatch"),
        }
    }
}

impl std::error::Error for DigestError {}

/// CRC32C of one buffer.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// CRC32C of several buffers taken as one (a scatter list).
#[inline]
pub fn crc32c_of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    parts.into_iter().fold(0, crc32c::crc32c_append)
}

/// The header digest of a BHS and its AHSs.
#[inline]
pub fn header_digest(bhs: &Bhs, ahs: &[u8]) -> Digest {
    crc32c::crc32c_append(crc32c::crc32c(bhs), ahs).to_le_bytes()
}

/// Checks a received header digest.
#[inline]
pub fn check_header_digest(bhs: &Bhs, ahs: &[u8], received: &Digest) -> Result<(), DigestError> {
    if header_digest(bhs, ahs) == *received {
        Ok(())
    } else {
        Err(DigestError::Header)
    }
}

/// A data digest computed piece by piece; the padding is added by
/// [`DataDigest::finish`], so feed only the payload.
#[derive(Clone, Copy, Debug, Default)]
pub struct DataDigest {
    crc: u32,
    len: usize,
}

impl DataDigest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next piece of the data segment.
    #[inline]
    pub fn update(&mut self, part: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, part);
        self.len += part.len();
    }

    /// The digest of everything fed so far plus the zero padding.
    #[inline]
    pub fn finish(&self) -> Digest {
        const ZEROS: [u8; 3] = [0; 3];
        crc32c::crc32c_append(self.crc, &ZEROS[..pad_len(self.len)]).to_le_bytes()
    }

    /// Compares with a received digest.
    #[inline]
    pub fn check(&self, received: &Digest) -> Result<(), DigestError> {
        if self.finish() == *received {
            Ok(())
        } else {
            Err(DigestError::Data)
        }
    }
}

/// The data digest of a data segment given as a scatter list (padding added).
#[inline]
pub fn data_digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Digest {
    let mut digest = DataDigest::new();
    for part in parts {
        digest.update(part);
    }
    digest.finish()
}

/// Checks a received data digest over a scatter list.
#[inline]
pub fn check_data_digest<'a>(
    parts: impl IntoIterator<Item = &'a [u8]>,
    received: &Digest,
) -> Result<(), DigestError> {
    if data_digest(parts) == *received {
        Ok(())
    } else {
        Err(DigestError::Data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 3720 Appendix B.4 (kept in RFC 7143): CRC32C test vectors, bytes as
    // they appear on the wire.
    #[test]
    fn rfc_vectors() {
        assert_eq!(crc32c(&[0u8; 32]).to_le_bytes(), [0xaa, 0x36, 0x91, 0x8a]);
        assert_eq!(
            crc32c(&[0xffu8; 32]).to_le_bytes(),
            [0x43, 0xab, 0xa8, 0x62]
        );
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&inc).to_le_bytes(), [0x4e, 0x79, 0xdd, 0x46]);
        let dec: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c(&dec).to_le_bytes(), [0x5c, 0xdb, 0x3f, 0x11]);
    }

    // The RFC's iSCSI Read(10) command PDU vector.
    #[test]
    fn rfc_read10_pdu_vector() {
        let pdu: [u8; 48] = [
            0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14,
            0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(header_digest(&pdu, &[]), [0x56, 0x3a, 0x96, 0xd9]);
        assert!(check_header_digest(&pdu, &[], &[0x56, 0x3a, 0x96, 0xd9]).is_ok());
        assert_eq!(
            check_header_digest(&pdu, &[], &[0x56, 0x3a, 0x96, 0xd8]),
            Err(DigestError::Header)
        );
    }

    #[test]
    fn scatter_lists_match_one_buffer() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let whole = crc32c(&data);
        assert_eq!(
            crc32c_of([&data[..1], &data[1..500], &[][..], &data[500..]]),
            whole
        );
        // Header digest over BHS + AHS equals the CRC of the concatenation.
        let mut bhs = [0u8; 48];
        bhs.copy_from_slice(&data[..48]);
        assert_eq!(
            header_digest(&bhs, &data[48..56]),
            crc32c(&data[..56]).to_le_bytes()
        );
    }

    #[test]
    fn data_digest_includes_padding() {
        let data = [1u8, 2, 3, 4, 5];
        let padded = [1u8, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(data_digest([&data[..]]), crc32c(&padded).to_le_bytes());
        assert_eq!(
            data_digest([&data[..2], &data[2..]]),
            crc32c(&padded).to_le_bytes()
        );
        // A multiple of four needs no padding; nothing at all digests to 0.
        assert_eq!(data_digest([&padded[..]]), crc32c(&padded).to_le_bytes());
        assert_eq!(data_digest([]), [0; 4]);
        let received = crc32c(&padded).to_le_bytes();
        assert!(check_data_digest([&data[..]], &received).is_ok());
        assert_eq!(
            check_data_digest([&data[..4]], &received),
            Err(DigestError::Data)
        );
    }
}
