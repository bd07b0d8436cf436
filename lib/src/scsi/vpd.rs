//! INQUIRY vital product data pages (SPC-4 7.8, SBC-3 6.6) and the limits of a
//! logical unit they advertise.
//!
//! Pages: supported pages (00h), unit serial number (80h), device
//! identification (83h), extended INQUIRY data (86h), block limits (B0h), block
//! device characteristics (B1h) and logical block provisioning (B2h). A new
//! page is a row in [`PAGES`]; page 00h lists the rows.

use ferrite_bdev::{IoType, MAX_IO_BYTES};

use super::dev::{LunView, ScsiPort};

/// The largest READ/WRITE transfer accepted (the block limits page's MAXIMUM
/// TRANSFER LENGTH); longer ones end with INVALID FIELD IN CDB.
pub const MAX_TRANSFER_BYTES: u64 = 8 << 20;

/// Most blocks one WRITE SAME may cover (MAXIMUM WRITE SAME LENGTH). Below
/// 65536 on purpose: libiscsi's WriteSame16.Unmap then checks the limit rather
/// than a 65536-block WRITE(16) beyond MAXIMUM TRANSFER LENGTH.
pub const MAX_WRITE_SAME_BLOCKS: u64 = 0xffff;

/// Most block descriptors in one UNMAP parameter list.
pub const MAX_UNMAP_DESCRIPTORS: usize = 256;

/// Most blocks one UNMAP descriptor may cover: 1 GiB, at most 2^20 blocks.
pub fn max_unmap_blocks(block_size: u32) -> u64 {
    ((1u64 << 30) / block_size as u64).min(1 << 20)
}

pub fn max_transfer_blocks(block_size: u32) -> u64 {
    MAX_TRANSFER_BYTES / block_size as u64
}

/// Most blocks one COMPARE AND WRITE may cover: its compare and write data
/// travel in one bdev I/O.
pub fn max_compare_and_write_blocks(block_size: u32) -> u64 {
    (MAX_IO_BYTES as u64 / (2 * block_size as u64)).min(255)
}

/// Most blocks one WRITE ATOMIC(16) may cover (MAXIMUM ATOMIC TRANSFER LENGTH):
/// what was there and the new data travel in one compare-and-write.
pub fn max_atomic_blocks(block_size: u32) -> u64 {
    MAX_IO_BYTES as u64 / (2 * block_size as u64)
}

/// The LUN is thin provisioned: its bdev unmaps.
pub(crate) fn thin(view: &LunView) -> bool {
    view.lun.bdev().supports(IoType::Unmap)
}

/// Unmapped blocks read back as zeros (LBPRZ), as the bdev's module says.
pub(crate) fn unmap_reads_zeroes(view: &LunView) -> bool {
    thin(view) && view.lun.bdev().backend().unmap_reads_zeroes()
}

/// A VPD page: its code and what builds its body (after the 4-byte header)
/// into the buffer, returning the body's length.
pub(crate) struct VpdPage {
    pub code: u8,
    pub build: fn(&ScsiPort, &LunView, &mut [u8]) -> usize,
}

/// The pages we have, ascending.
pub(crate) const PAGES: &[VpdPage] = &[
    VpdPage {
        code: 0x00,
        build: supported_pages,
    },
    VpdPage {
        code: 0x80,
        build: unit_serial_number,
    },
    VpdPage {
        code: 0x83,
        build: device_identification,
    },
    VpdPage {
        code: 0x86,
        build: extended_inquiry,
    },
    VpdPage {
        code: 0x8f,
        build: super::xcopy::third_party_copy_page,
    },
    VpdPage {
        code: 0xb0,
        build: block_limits,
    },
    VpdPage {
        code: 0xb1,
        build: block_device_characteristics,
    },
    VpdPage {
        code: 0xb2,
        build: logical_block_provisioning,
    },
];

/// Largest page we build.
pub(crate) const VPD_MAX: usize = 1024;

/// Builds page `code` with its header into `out`; returns its length, or
/// `None` for a page we do not have.
pub(crate) fn page(code: u8, port: &ScsiPort, view: &LunView, out: &mut [u8]) -> Option<usize> {
    let p = PAGES.iter().find(|p| p.code == code)?;
    out[..4].fill(0);
    out[1] = code;
    let body = (p.build)(port, view, &mut out[4..]);
    out[2..4].copy_from_slice(&(body as u16).to_be_bytes());
    Some(4 + body)
}

fn supported_pages(_: &ScsiPort, _: &LunView, out: &mut [u8]) -> usize {
    for (i, p) in PAGES.iter().enumerate() {
        out[i] = p.code;
    }
    PAGES.len()
}

/// The unit serial number: the bdev UUID in hex.
pub(crate) fn serial(view: &LunView) -> [u8; 32] {
    let hex = b"0123456789abcdef";
    let mut s = [0u8; 32];
    for (i, b) in view.lun.bdev().uuid().as_bytes().iter().enumerate() {
        s[2 * i] = hex[(b >> 4) as usize];
        s[2 * i + 1] = hex[(b & 0xf) as usize];
    }
    s
}

fn unit_serial_number(_: &ScsiPort, view: &LunView, out: &mut [u8]) -> usize {
    let s = serial(view);
    out[..s.len()].copy_from_slice(&s);
    s.len()
}

/// The SCSI transport protocol of this port's nexus (SPC-4 7.6.1), from the
/// first byte of its TransportID: iSCSI 5h, SRP 4h.
pub(crate) fn protocol(port: &ScsiPort) -> Option<u8> {
    port.nexus().transport_id.first().map(|b| b & 0x0f)
}

/// Writes a SCSI name string designator (UTF-8, NUL-terminated, padded to a
/// multiple of 4) with `assoc_type` (PIV, association and type byte).
fn name_designator(out: &mut [u8], proto: Option<u8>, assoc_type: u8, name: &str) -> usize {
    let name = &name.as_bytes()[..name.len().min(251)];
    let len = (name.len() + 1).next_multiple_of(4);
    out[0] = (proto.unwrap_or(0) << 4) | 0x03;
    out[1] = if proto.is_some() {
        assoc_type
    } else {
        assoc_type & 0x7f
    };
    out[2] = 0;
    out[3] = len as u8;
    out[4..4 + len].fill(0);
    out[4..4 + name.len()].copy_from_slice(name);
    4 + len
}

/// Device identification: for the logical unit an NAA and a T10 vendor ID
/// designator; for the target port its relative port, its target port group
/// and its SCSI name; for the target device its SCSI name.
fn device_identification(port: &ScsiPort, view: &LunView, out: &mut [u8]) -> usize {
    let uuid = *view.lun.bdev().uuid().as_bytes();
    let mut n = 0;
    // NAA 6 (IEEE registered extended) from the UUID, binary, LU association.
    out[n..n + 4].copy_from_slice(&[0x01, 0x03, 0x00, 16]);
    let d = &mut out[n + 4..n + 20];
    d.copy_from_slice(&uuid);
    d[0] = 0x60 | (d[0] & 0x0f);
    n += 20;
    // T10 vendor ID, ASCII: vendor identification + serial number.
    let serial = serial(view);
    out[n..n + 4].copy_from_slice(&[0x02, 0x01, 0x00, (8 + serial.len()) as u8]);
    out[n + 4..n + 12].copy_from_slice(super::spc::VENDOR);
    out[n + 12..n + 12 + serial.len()].copy_from_slice(&serial);
    n += 12 + serial.len();
    // Target port designators carry the protocol (PIV) when we know it.
    let proto = protocol(port);
    let (b0, piv) = match proto {
        Some(p) => ((p << 4) | 0x01, 0x80),
        None => (0x01, 0x00),
    };
    let rtp = port.nexus().relative_target_port.to_be_bytes();
    out[n..n + 8].copy_from_slice(&[b0, piv | 0x14, 0, 4, 0, 0, rtp[0], rtp[1]]);
    n += 8;
    out[n..n + 8].copy_from_slice(&[b0, piv | 0x15, 0, 4, 0, 0, 0, 1]);
    n += 8;
    let target_port = &port.nexus().target_port;
    if !target_port.is_empty() {
        n += name_designator(&mut out[n..], proto, 0x80 | 0x18, target_port);
    }
    let device = port.dev().name();
    if !device.is_empty() {
        n += name_designator(&mut out[n..], proto, 0x80 | 0x28, device);
    }
    n
}

/// Extended INQUIRY data: simple task attributes; a volatile cache (V_SUP).
fn extended_inquiry(_: &ScsiPort, _: &LunView, out: &mut [u8]) -> usize {
    out[..60].fill(0);
    out[1] = 0x01; // SIMPSUP
    out[2] = 0x01; // V_SUP
    60
}

/// Block limits (SBC-3 6.6.4).
fn block_limits(_: &ScsiPort, view: &LunView, out: &mut [u8]) -> usize {
    let bs = view.lun.bdev().block_size();
    out[..60].fill(0);
    // Byte 4 of the page (out[0]): WSNZ 0, WRITE SAME with 0 blocks reaches the end.
    out[1] = max_compare_and_write_blocks(bs) as u8;
    let gran = (4096 / bs).max(1) as u16;
    out[2..4].copy_from_slice(&gran.to_be_bytes());
    out[4..8].copy_from_slice(&(max_transfer_blocks(bs) as u32).to_be_bytes());
    out[8..12].copy_from_slice(&((MAX_IO_BYTES as u32) / bs).to_be_bytes());
    // MAXIMUM PREFETCH LENGTH (out[12..16]) 0: no limit reported.
    if thin(view) {
        out[16..20].copy_from_slice(&(max_unmap_blocks(bs) as u32).to_be_bytes());
        out[20..24].copy_from_slice(&(MAX_UNMAP_DESCRIPTORS as u32).to_be_bytes());
        out[24..28].copy_from_slice(&1u32.to_be_bytes()); // OPTIMAL UNMAP GRANULARITY
    }
    out[32..40].copy_from_slice(&MAX_WRITE_SAME_BLOCKS.to_be_bytes());
    // WRITE ATOMIC: any alignment and granularity, no atomic boundaries.
    out[40..44].copy_from_slice(&(max_atomic_blocks(bs) as u32).to_be_bytes());
    60
}

/// Block device characteristics: non-rotating medium.
fn block_device_characteristics(_: &ScsiPort, _: &LunView, out: &mut [u8]) -> usize {
    out[..60].fill(0);
    out[0..2].copy_from_slice(&1u16.to_be_bytes()); // MEDIUM ROTATION RATE: non-rotating
    60
}

/// Logical block provisioning: thin (UNMAP, WRITE SAME(16)/(10) with UNMAP) when
/// the bdev unmaps, with LBPRZ when unmapped blocks read back as zeros.
fn logical_block_provisioning(_: &ScsiPort, view: &LunView, out: &mut [u8]) -> usize {
    out[..4].fill(0);
    if thin(view) {
        out[1] = 0x80 | 0x40 | 0x20; // LBPU, LBPWS, LBPWS10
        if unmap_reads_zeroes(view) {
            out[1] |= 0x04; // LBPRZ
        }
        out[2] = 0x02; // PROVISIONING TYPE: thin
    }
    4
}
