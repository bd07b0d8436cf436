//! Sense data: what a CHECK CONDITION tells the initiator (SPC-4 4.4).
//!
//! Fixed-format sense (response code 0x70) is what initiators expect by default;
//! the INFORMATION field carries, e.g., the miscompare offset.

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
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const MISCOMPARE: u8 = 0xe;
}

/// Additional sense code and qualifier pairs (ASC << 8 | ASCQ).
pub mod asc {
    pub const NO_ADDITIONAL_SENSE: u16 = 0x0000;
    pub const LOGICAL_UNIT_NOT_SUPPORTED: u16 = 0x2500;
    pub const INVALID_COMMAND_OPERATION_CODE: u16 = 0x2000;
    pub const LBA_OUT_OF_RANGE: u16 = 0x2100;
    pub const INVALID_FIELD_IN_CDB: u16 = 0x2400;
    pub const INVALID_FIELD_IN_PARAMETER_LIST: u16 = 0x2600;
    pub const PARAMETER_LIST_LENGTH_ERROR: u16 = 0x1a00;
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: u16 = 0x3900;
    pub const MISCOMPARE_DURING_VERIFY: u16 = 0x1d00;
    pub const WRITE_ERROR: u16 = 0x0c00;
    pub const UNRECOVERED_READ_ERROR: u16 = 0x1100;
    pub const INTERNAL_TARGET_FAILURE: u16 = 0x4400;
    pub const POWER_ON_RESET: u16 = 0x2900;
    pub const BUS_DEVICE_RESET: u16 = 0x2903;
    pub const I_T_NEXUS_LOSS: u16 = 0x2907;
    pub const MODE_PARAMETERS_CHANGED: u16 = 0x2a01;
    pub const RESERVATIONS_PREEMPTED: u16 = 0x2a03;
    pub const RESERVATIONS_RELEASED: u16 = 0x2a04;
    pub const REGISTRATIONS_PREEMPTED: u16 = 0x2a05;
    pub const CAPACITY_DATA_HAS_CHANGED: u16 = 0x2a09;
    pub const REPORTED_LUNS_DATA_HAS_CHANGED: u16 = 0x3f0e;
    pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: u16 = 0x2f00;
    pub const LOGICAL_UNIT_NOT_READY_CAUSE_NOT_REPORTABLE: u16 = 0x0400;
    pub const MEDIUM_NOT_PRESENT: u16 = 0x3a00;
    pub const INSUFFICIENT_REGISTRATION_RESOURCES: u16 = 0x5504;
    pub const COPY_TARGET_DEVICE_NOT_REACHABLE: u16 = 0x0d02;
}

/// The largest sense data we build.
pub const MAX_SENSE: usize = 96;

/// Sense data in fixed format, built in place.
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
            "Sense(key {:#x}, asc/ascq {:#06x})",
            self.key(),
            self.asc_ascq()
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
    pub fn with_information(mut self, info: u32) -> Sense {
        self.buf[0] |= 0x80;
        self.buf[3..7].copy_from_slice(&info.to_be_bytes());
        self
    }

    /// Sets the sense-key specific field: the byte (and bit) in the CDB or
    /// parameter list at fault (SPC-4 4.4.1.2, field pointer).
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

    pub fn key(&self) -> u8 {
        self.buf[2] & 0x0f
    }

    pub fn asc_ascq(&self) -> u16 {
        u16::from_be_bytes([self.buf[12], self.buf[13]])
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}
