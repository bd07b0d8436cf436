//! NVMe commands as data: building the I/O and admin commands the bdev sends,
//! laying them out as the kernel's `struct nvme_uring_cmd`, reading Identify
//! data, and what an NVMe status means for a bdev I/O. No I/O here.

use crate::IoError;

pub(crate) const OPC_FLUSH: u8 = 0x00;
pub(crate) const OPC_WRITE: u8 = 0x01;
pub(crate) const OPC_READ: u8 = 0x02;
pub(crate) const OPC_COMPARE: u8 = 0x05;
pub(crate) const OPC_WRITE_ZEROES: u8 = 0x08;
pub(crate) const OPC_DSM: u8 = 0x09;
const OPC_ADMIN_IDENTIFY: u8 = 0x06;

pub(crate) const CNS_NAMESPACE: u8 = 0x00;
pub(crate) const CNS_CONTROLLER: u8 = 0x01;

/// CDW12 bit 30: force unit access.
const FUA: u32 = 1 << 30;
/// DSM CDW11 bit 2: deallocate.
const DSM_DEALLOCATE: u32 = 1 << 2;
/// Most blocks one read/write/compare/write-zeroes moves (NLB is 16 bits, 0-based).
pub(crate) const MAX_NLB: u64 = 1 << 16;
/// A DSM range covers at most this many blocks; a command has at most 256 ranges.
pub(crate) const DSM_RANGE_MAX_BLOCKS: u64 = u32::MAX as u64;
pub(crate) const DSM_MAX_RANGES: usize = 256;

/// The fields of an NVMe command the kernel's passthrough takes (the data
/// pointer and length are the caller's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Command {
    pub opcode: u8,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    /// CDW10 to CDW15.
    pub cdw: [u32; 6],
}

impl Command {
    /// A command from a raw 64-byte submission queue entry (as
    /// `bdev_nvme_send_cmd` takes it). The identifier, fuse, PSDT, metadata and
    /// data pointers are the kernel's to fill and are ignored.
    pub fn from_sqe(sqe: &[u8; 64]) -> Command {
        let dw = |i: usize| u32::from_le_bytes(sqe[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        Command {
            opcode: sqe[0],
            nsid: dw(1),
            cdw2: dw(2),
            cdw3: dw(3),
            cdw: [dw(10), dw(11), dw(12), dw(13), dw(14), dw(15)],
        }
    }
}

/// Read, write or compare of `nlb` (1..=65536) blocks at `slba`.
pub(crate) fn rw(opcode: u8, nsid: u32, slba: u64, nlb: u64, fua: bool) -> Command {
    debug_assert!((1..=MAX_NLB).contains(&nlb));
    Command {
        opcode,
        nsid,
        cdw: [
            slba as u32,
            (slba >> 32) as u32,
            (nlb - 1) as u32 | if fua { FUA } else { 0 },
            0,
            0,
            0,
        ],
        ..Default::default()
    }
}

pub(crate) fn flush(nsid: u32) -> Command {
    Command {
        opcode: OPC_FLUSH,
        nsid,
        ..Default::default()
    }
}

/// Dataset Management, deallocate, over `ranges` ranges in the data buffer.
pub(crate) fn deallocate(nsid: u32, ranges: usize) -> Command {
    debug_assert!((1..=DSM_MAX_RANGES).contains(&ranges));
    Command {
        opcode: OPC_DSM,
        nsid,
        cdw: [(ranges - 1) as u32, DSM_DEALLOCATE, 0, 0, 0, 0],
        ..Default::default()
    }
}

/// Fills `buf` with the DSM ranges covering `num` blocks from `slba`; returns
/// how many, or `None` when more than 256 would be needed.
pub(crate) fn dsm_ranges(buf: &mut [u8], slba: u64, num: u64) -> Option<usize> {
    let n = num.div_ceil(DSM_RANGE_MAX_BLOCKS) as usize;
    if n == 0 || n > DSM_MAX_RANGES || buf.len() < n * 16 {
        return None;
    }
    for i in 0..n {
        let at = i as u64 * DSM_RANGE_MAX_BLOCKS;
        let len = (num - at).min(DSM_RANGE_MAX_BLOCKS) as u32;
        let r = &mut buf[i * 16..i * 16 + 16];
        r[0..4].copy_from_slice(&0u32.to_le_bytes()); // context attributes
        r[4..8].copy_from_slice(&len.to_le_bytes());
        r[8..16].copy_from_slice(&(slba + at).to_le_bytes());
    }
    Some(n)
}

pub(crate) fn identify(cns: u8, nsid: u32) -> Command {
    Command {
        opcode: OPC_ADMIN_IDENTIFY,
        nsid,
        cdw: [cns as u32, 0, 0, 0, 0, 0],
        ..Default::default()
    }
}

/// `struct nvme_uring_cmd` as the bytes of an SQE's command area: the command
/// with its data buffer (`addr`, `data_len`; for a vectored command, the iovec
/// array and its count).
pub(crate) fn uring_cmd_bytes(c: &Command, addr: u64, data_len: u32) -> [u8; 80] {
    let mut b = [0u8; 80];
    b[0] = c.opcode;
    // flags (1), rsvd1 (2-3) stay 0.
    b[4..8].copy_from_slice(&c.nsid.to_ne_bytes());
    b[8..12].copy_from_slice(&c.cdw2.to_ne_bytes());
    b[12..16].copy_from_slice(&c.cdw3.to_ne_bytes());
    // metadata (16-23) 0.
    b[24..32].copy_from_slice(&addr.to_ne_bytes());
    // metadata_len (32-35) 0.
    b[36..40].copy_from_slice(&data_len.to_ne_bytes());
    for (i, dw) in c.cdw.iter().enumerate() {
        b[40 + i * 4..44 + i * 4].copy_from_slice(&dw.to_ne_bytes());
    }
    // timeout_ms (64-67): the kernel's default; rsvd2 (68-71).
    b
}

/// What the bdev needs from Identify Controller and Identify Namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub model: String,
    pub serial: String,
    pub firmware: String,
    /// Volatile write cache present: flush means something.
    pub vwc: bool,
    pub compare: bool,
    pub dsm: bool,
    pub write_zeroes: bool,
    /// Largest transfer per command in bytes (None: no limit reported).
    pub max_transfer: Option<u64>,
    /// Namespace size in blocks.
    pub num_blocks: u64,
    /// LBA data size of the formatted LBA format.
    pub block_size: u32,
    /// Metadata bytes per block of that format.
    pub metadata_size: u16,
    /// Deallocated blocks read back as zeros (DLFEAT).
    pub deallocated_reads_zeroes: bool,
    /// The namespace's NGUID, when it has one (not all zeros).
    pub nguid: Option<[u8; 16]>,
}

/// An ASCII field: space padded by the spec, NUL padded by some devices.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_string()
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the two Identify structures (4096 bytes each). Memory page size is
/// taken as 4 KiB for MDTS, as Linux does.
pub(crate) fn parse_identity(ctrl: &[u8], ns: &[u8]) -> Result<Identity, String> {
    if ctrl.len() < 4096 || ns.len() < 4096 {
        return Err("short identify data".into());
    }
    let oncs = le16(ctrl, 520);
    let mdts = ctrl[77];
    let nlbaf = ns[25] as usize;
    let flbas = ns[26];
    // Bits 3:0, and bits 6:5 as the upper bits when there are more than 16.
    let index = (flbas & 0xf) as usize | (((flbas >> 5) & 0x3) as usize) << 4;
    if index > nlbaf {
        return Err(format!(
            "namespace reports LBA format {index} of {}",
            nlbaf + 1
        ));
    }
    let lbaf = &ns[128 + index * 4..132 + index * 4];
    let lbads = lbaf[2];
    if !(9..=16).contains(&lbads) {
        return Err(format!("namespace reports an LBA data size of 2^{lbads}"));
    }
    let nguid: [u8; 16] = ns[104..120].try_into().expect("16 bytes");
    Ok(Identity {
        serial: text(&ctrl[4..24]),
        model: text(&ctrl[24..64]),
        firmware: text(&ctrl[64..72]),
        vwc: ctrl[525] & 1 != 0,
        compare: oncs & 1 != 0,
        dsm: oncs & (1 << 2) != 0,
        write_zeroes: oncs & (1 << 3) != 0,
        max_transfer: (mdts != 0 && mdts < 32).then(|| 4096u64 << mdts),
        num_blocks: le64(ns, 0),
        block_size: 1 << lbads,
        metadata_size: le16(lbaf, 0),
        deallocated_reads_zeroes: ns[33] & 0x7 == 1,
        nguid: (nguid != [0; 16]).then_some(nguid),
    })
}

/// Status code type and code of a completion's status field.
fn sct_sc(status: u16) -> (u8, u8) {
    (((status >> 8) & 0x7) as u8, status as u8)
}

/// A readable form of a status, for logs and RPC errors.
pub(crate) fn status_text(status: u16) -> String {
    let (sct, sc) = sct_sc(status);
    let what = match (sct, sc) {
        (0, 0x01) => "invalid command opcode",
        (0, 0x02) => "invalid field in command",
        (0, 0x04) => "data transfer error",
        (0, 0x06) => "internal error",
        (0, 0x07) => "command abort requested",
        (0, 0x0b) => "invalid namespace or format",
        (0, 0x80) => "LBA out of range",
        (0, 0x81) => "capacity exceeded",
        (0, 0x82) => "namespace not ready",
        (2, 0x80) => "write fault",
        (2, 0x81) => "unrecovered read error",
        (2, 0x85) => "compare failure",
        (2, 0x86) => "access denied",
        _ => "error",
    };
    format!("NVMe status {what} (SCT {sct:#x}, SC {sc:#04x})")
}

/// What a failed command means for the bdev I/O it belongs to.
pub(crate) fn io_error(status: u16) -> IoError {
    let (sct, sc) = sct_sc(status);
    match (sct, sc) {
        (0, 0x01 | 0x02) => IoError::Unsupported,
        (0, 0x80) => IoError::OutOfRange,
        // Aborted: by request, SQ deletion, fused failures, power loss.
        (0, 0x05 | 0x07 | 0x08 | 0x09 | 0x0a) => IoError::Aborted,
        (0, 0x0b | 0x82) => IoError::Device(libc::ENODEV),
        (0, 0x81) => IoError::Device(libc::ENOSPC),
        (0, 0x20) => IoError::Device(libc::EROFS),
        (2, 0x85) => IoError::DeviceMiscompare,
        (2, 0x86) => IoError::Device(libc::EACCES),
        // End-to-end guard, application or reference tag check.
        (2, 0x82..=0x84) => IoError::Device(libc::EILSEQ),
        _ => IoError::Device(libc::EIO),
    }
}

/// What a negative CQE result (an errno from the kernel, the command never
/// reached the device or was cancelled) means for the bdev I/O.
pub(crate) fn errno_error(errno: i32) -> IoError {
    match errno {
        // No request tag or memory right now: the initiator retries.
        libc::EAGAIN | libc::ENOMEM | libc::EBUSY => IoError::NoResources,
        // Cancelled: a controller reset or removal in progress.
        libc::EINTR | libc::ECANCELED => IoError::Aborted,
        e => IoError::Device(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_encode_slba_nlb_and_fua() {
        let c = rw(OPC_WRITE, 1, 0x1_2345_6789, 8, true);
        assert_eq!(c.cdw[0], 0x2345_6789);
        assert_eq!(c.cdw[1], 1);
        assert_eq!(c.cdw[2], 7 | 1 << 30);
        let c = rw(OPC_READ, 1, 0, MAX_NLB, false);
        assert_eq!(c.cdw[2], 0xffff);
    }

    #[test]
    fn uring_cmd_layout_is_the_kernels() {
        let c = Command {
            opcode: 2,
            nsid: 7,
            cdw2: 9,
            cdw3: 10,
            cdw: [11, 12, 13, 14, 15, 16],
        };
        let b = uring_cmd_bytes(&c, 0xdead_beef, 4096);
        assert_eq!(b[0], 2);
        assert_eq!(u32::from_ne_bytes(b[4..8].try_into().unwrap()), 7);
        assert_eq!(
            u64::from_ne_bytes(b[24..32].try_into().unwrap()),
            0xdead_beef
        );
        assert_eq!(u32::from_ne_bytes(b[36..40].try_into().unwrap()), 4096);
        assert_eq!(u32::from_ne_bytes(b[40..44].try_into().unwrap()), 11);
        assert_eq!(u32::from_ne_bytes(b[60..64].try_into().unwrap()), 16);
        assert!(b[64..].iter().all(|&x| x == 0));
    }

    #[test]
    fn sqe_from_raw_bytes() {
        let mut sqe = [0u8; 64];
        sqe[0] = 0x06;
        sqe[4..8].copy_from_slice(&1u32.to_le_bytes());
        sqe[40..44].copy_from_slice(&1u32.to_le_bytes());
        let c = Command::from_sqe(&sqe);
        assert_eq!(c, identify(CNS_CONTROLLER, 1));
    }

    #[test]
    fn dsm_ranges_split_at_u32_blocks() {
        let mut buf = [0u8; 4096];
        assert_eq!(dsm_ranges(&mut buf, 100, 8), Some(1));
        assert_eq!(u32::from_le_bytes(buf[4..8].try_into().unwrap()), 8);
        assert_eq!(u64::from_le_bytes(buf[8..16].try_into().unwrap()), 100);
        let big = DSM_RANGE_MAX_BLOCKS + 5;
        assert_eq!(dsm_ranges(&mut buf, 0, big), Some(2));
        assert_eq!(u32::from_le_bytes(buf[20..24].try_into().unwrap()), 5);
        assert_eq!(
            u64::from_le_bytes(buf[24..32].try_into().unwrap()),
            DSM_RANGE_MAX_BLOCKS
        );
        assert_eq!(dsm_ranges(&mut buf, 0, DSM_RANGE_MAX_BLOCKS * 257), None);
        assert_eq!(dsm_ranges(&mut buf, 0, 0), None);
    }

    #[test]
    fn identity_reads_the_fields_the_bdev_uses() {
        let mut ctrl = vec![0u8; 4096];
        let mut ns = vec![0u8; 4096];
        ctrl[4..12].copy_from_slice(b"ferrite0");
        ctrl[24..28].copy_from_slice(b"QEMU");
        ctrl[77] = 7;
        ctrl[520] = 0b1101; // compare, DSM, write zeroes
        ctrl[525] = 1;
        ns[0..8].copy_from_slice(&2048u64.to_le_bytes());
        ns[25] = 1; // two formats
        ns[26] = 1; // the second
        ns[33] = 1;
        ns[128 + 4 + 2] = 12; // 4 KiB
        let id = parse_identity(&ctrl, &ns).unwrap();
        assert_eq!(id.serial, "ferrite0");
        assert_eq!(id.model, "QEMU");
        assert_eq!(id.max_transfer, Some(512 * 1024));
        assert!(id.vwc && id.compare && id.dsm && id.write_zeroes);
        assert_eq!(id.num_blocks, 2048);
        assert_eq!(id.block_size, 4096);
        assert_eq!(id.metadata_size, 0);
        assert!(id.deallocated_reads_zeroes);
        assert_eq!(id.nguid, None);
        ns[26] = 5; // past NLBAF
        assert!(parse_identity(&ctrl, &ns).is_err());
    }

    #[test]
    fn statuses_become_bdev_errors() {
        assert_eq!(io_error(0x0080), IoError::OutOfRange);
        assert_eq!(io_error(0x0002), IoError::Unsupported);
        assert_eq!(io_error(0x0285), IoError::DeviceMiscompare);
        assert_eq!(io_error(0x4281), IoError::Device(libc::EIO)); // DNR set
        assert_eq!(io_error(0x0007), IoError::Aborted);
        assert_eq!(errno_error(libc::EAGAIN), IoError::NoResources);
        assert_eq!(errno_error(libc::ENODEV), IoError::Device(libc::ENODEV));
        assert!(status_text(0x0285).contains("compare failure"));
    }
}
