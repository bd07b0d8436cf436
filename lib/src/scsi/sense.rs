//! Sense data: what a CHECK CONDITION tells the initiator (SPC-4 4.4).
//!
//! Sense is built in fixed format (response code 70h), which is what initiators
//! expect by default; the INFORMATION field carries, e.g., the miscompare offset,
//! and the sense-key specific field the byte in error. When the LUN's control
//! mode page has D_SENSE set, the dispatcher converts it to descriptor format
//! (72h) before the task goes back ([`Sense::to_descriptor`]).

/// Sense keys.
pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const RECOVERED_ERROR: u8 = 0x1;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const COPY_ABORTED: u8 = 0xa;
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const MISCOMPARE: u8 = 0xe;
}

/// Additional sense code and qualifier pairs (ASC << 8 | ASCQ).
pub mod asc {
    pub const NO_ADDITIONAL_SENSE: u16 = 0x0000;
    pub const LOGICAL_UNIT_NOT_READY_CAUSE_NOT_REPORTABLE: u16 = 0x0400;
    pub const WRITE_ERROR: u16 = 0x0c00;
    pub const COPY_TARGET_DEVICE_NOT_REACHABLE: u16 = 0x0d02;
    pub const INVALID_FIELD_IN_INFORMATION_UNIT: u16 = 0x0e03;
    pub const LOGICAL_BLOCK_GUARD_CHECK_FAILED: u16 = 0x1001;
    pub const UNRECOVERED_READ_ERROR: u16 = 0x1100;
    pub const PARAMETER_LIST_LENGTH_ERROR: u16 = 0x1a00;
    pub const MISCOMPARE_DURING_VERIFY: u16 = 0x1d00;
    pub const INVALID_COMMAND_OPERATION_CODE: u16 = 0x2000;
    pub const LBA_OUT_OF_RANGE: u16 = 0x2100;
    pub const INVALID_FIELD_IN_CDB: u16 = 0x2400;
    pub const LOGICAL_UNIT_NOT_SUPPORTED: u16 = 0x2500;
    pub const INVALID_FIELD_IN_PARAMETER_LIST: u16 = 0x2600;
    pub const WRITE_PROTECTED: u16 = 0x2700;
    pub const POWER_ON_RESET: u16 = 0x2900;
    pub const BUS_DEVICE_RESET: u16 = 0x2903;
    pub const I_T_NEXUS_LOSS: u16 = 0x2907;
    pub const MODE_PARAMETERS_CHANGED: u16 = 0x2a01;
    pub const RESERVATIONS_PREEMPTED: u16 = 0x2a03;
    pub const RESERVATIONS_RELEASED: u16 = 0x2a04;
    pub const REGISTRATIONS_PREEMPTED: u16 = 0x2a05;
    pub const CAPACITY_DATA_HAS_CHANGED: u16 = 0x2a09;
    pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: u16 = 0x2f00;
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: u16 = 0x3900;
    pub const MEDIUM_NOT_PRESENT: u16 = 0x3a00;
    pub const REPORTED_LUNS_DATA_HAS_CHANGED: u16 = 0x3f0e;
    pub const INTERNAL_TARGET_FAILURE: u16 = 0x4400;
    pub const INSUFFICIENT_REGISTRATION_RESOURCES: u16 = 0x5504;
}

/// The largest sense data we build.
pub const MAX_SENSE: usize = 96;

/// Sense data, built in place (fixed format unless converted).
#[derive(Clone, Copy)]
pub struct Sense {
    buf: [u8; MAX_SENSE],
    len: u8,
}

impl Default for Sense {
    fn default() -> Self {
        Sense {
            buf: [0; MAX_SENSE],
            len: 0,
        }
    }
}

impl std::fmt::Debug for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.len == 0 {
            return write!(f, "Sense(none)");
        }
        write!(
            f,
            "Sense(key {:#x}, asc/ascq {:#06x}{})",
            self.key(),
            self.asc_ascq(),
            if self.is_descriptor() {
                ", descriptor"
            } else {
                ""
            }
        )
    }
}

impl Sense {
    /// Fixed-format current sense with `key` and `asc_ascq`.
    pub fn new(key: u8, asc_ascq: u16) -> Sense {
        let mut s = Sense::default();
        s.buf[0] = 0x70;
        s.buf[2] = key & 0x0f;
        s.buf[7] = 10; // additional length: bytes 8..18
        s.buf[12] = (asc_ascq >> 8) as u8;
        s.buf[13] = asc_ascq as u8;
        s.len = 18;
        s
    }

    /// Sets the INFORMATION field (VALID bit on), e.g. a miscompare offset.
    /// Only for fixed-format sense (convert afterwards).
    pub fn with_information(mut self, info: u32) -> Sense {
        self.buf[0] |= 0x80;
        self.buf[3..7].copy_from_slice(&info.to_be_bytes());
        self
    }

    /// Sets the sense-key specific field: the byte (and bit) in the CDB or
    /// parameter list at fault (SPC-4 4.4.1.2, field pointer). Only for
    /// fixed-format sense.
    pub fn with_field_pointer(mut self, in_cdb: bool, byte: u16, bit: Option<u8>) -> Sense {
        let mut b15 = 0x80; // SKSV
        if in_cdb {
            b15 |= 0x40; // C/D
        }
        if let Some(bit) = bit {
            b15 |= 0x08 | (bit & 0x7); // BPV and bit pointer
        }
        self.buf[15] = b15;
        self.buf[16..18].copy_from_slice(&byte.to_be_bytes());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// Whether this is descriptor-format sense (response code 72h/73h).
    pub fn is_descriptor(&self) -> bool {
        matches!(self.buf[0] & 0x7f, 0x72 | 0x73)
    }

    pub fn key(&self) -> u8 {
        if self.is_descriptor() {
            self.buf[1] & 0x0f
        } else {
            self.buf[2] & 0x0f
        }
    }

    pub fn asc_ascq(&self) -> u16 {
        if self.is_descriptor() {
            u16::from_be_bytes([self.buf[2], self.buf[3]])
        } else {
            u16::from_be_bytes([self.buf[12], self.buf[13]])
        }
    }

    /// The INFORMATION field, if valid (either format).
    pub fn information(&self) -> Option<u64> {
        if self.is_descriptor() {
            let mut at = 8;
            while at + 2 <= self.len as usize {
                let (ty, len) = (self.buf[at], self.buf[at + 1] as usize);
                if ty == 0x00 && len >= 0x0a && self.buf[at + 2] & 0x80 != 0 {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&self.buf[at + 4..at + 12]);
                    return Some(u64::from_be_bytes(v));
                }
                at += 2 + len;
            }
            None
        } else if self.buf[0] & 0x80 != 0 {
            let mut v = [0u8; 4];
            v.copy_from_slice(&self.buf[3..7]);
            Some(u32::from_be_bytes(v) as u64)
        } else {
            None
        }
    }

    /// The sense-key specific bytes (SKSV set), if any (either format).
    pub fn key_specific(&self) -> Option<[u8; 3]> {
        if self.is_descriptor() {
            let mut at = 8;
            while at + 2 <= self.len as usize {
                let (ty, len) = (self.buf[at], self.buf[at + 1] as usize);
                if ty == 0x02 && len >= 6 && self.buf[at + 4] & 0x80 != 0 {
                    return Some([self.buf[at + 4], self.buf[at + 5], self.buf[at + 6]]);
                }
                at += 2 + len;
            }
            None
        } else if self.len >= 18 && self.buf[15] & 0x80 != 0 {
            Some([self.buf[15], self.buf[16], self.buf[17]])
        } else {
            None
        }
    }

    /// The same sense in descriptor format (SPC-4 4.4.2): key, ASC/ASCQ, an
    /// information descriptor when INFORMATION is valid and a sense-key specific
    /// descriptor when SKSV is set. Descriptor sense is returned unchanged.
    pub fn to_descriptor(&self) -> Sense {
        if self.is_empty() || self.is_descriptor() {
            return *self;
        }
        let mut s = Sense::default();
        s.buf[0] = if self.buf[0] & 0x7f == 0x71 {
            0x73
        } else {
            0x72
        };
        s.buf[1] = self.key();
        let [a, q] = self.asc_ascq().to_be_bytes();
        s.buf[2] = a;
        s.buf[3] = q;
        let mut n = 8;
        if let Some(info) = self.information() {
            s.buf[n] = 0x00;
            s.buf[n + 1] = 0x0a;
            s.buf[n + 2] = 0x80; // VALID
            s.buf[n + 4..n + 12].copy_from_slice(&info.to_be_bytes());
            n += 12;
        }
        if let Some(sks) = self.key_specific() {
            s.buf[n] = 0x02;
            s.buf[n + 1] = 0x06;
            s.buf[n + 4..n + 7].copy_from_slice(&sks);
            n += 8;
        }
        s.buf[7] = (n - 8) as u8;
        s.len = n as u8;
        s
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_conversion_keeps_everything() {
        let f = Sense::new(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY)
            .with_information(1234)
            .with_field_pointer(true, 7, Some(3));
        assert_eq!(f.information(), Some(1234));
        let d = f.to_descriptor();
        assert!(d.is_descriptor());
        assert_eq!(d.as_bytes()[0], 0x72);
        assert_eq!(d.key(), key::MISCOMPARE);
        assert_eq!(d.asc_ascq(), asc::MISCOMPARE_DURING_VERIFY);
        assert_eq!(d.information(), Some(1234));
        assert_eq!(d.key_specific(), Some([0xcb, 0, 7]));
        assert_eq!(d.as_bytes().len(), 8 + 12 + 8);
        assert_eq!(d.as_bytes()[7] as usize, d.as_bytes().len() - 8);

        let plain = Sense::new(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE).to_descriptor();
        assert_eq!(plain.as_bytes(), &[0x72, 5, 0x21, 0, 0, 0, 0, 0]);
    }
}
