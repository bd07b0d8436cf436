//! Primary commands (SPC-4): INQUIRY and its VPD pages, REPORT LUNS, REQUEST
//! SENSE, MODE SENSE.

use super::cdb::{be16, be32, encode_lun};
use super::dev::{LunView, ScsiPort};
use super::sense::{asc, key, Sense};
use super::task::Task;

pub const VENDOR: &[u8; 8] = b"FERRITE ";
pub const REVISION: &[u8; 4] = b"0001";

/// INQUIRY or REQUEST SENSE for a LUN that is not there: peripheral qualifier 011b.
pub(crate) fn no_lun(task: &mut Task) {
    if task.opcode() == super::opcode::INQUIRY {
        if task.cdb[1] & 0x01 != 0 {
            task.check(Sense::new(
                key::ILLEGAL_REQUEST,
                asc::LOGICAL_UNIT_NOT_SUPPORTED,
            ));
            return;
        }
        let mut r = [0u8; 36];
        r[0] = 0x7f; // qualifier 011b, device type 1fh: no LUN here
        r[2] = 0x06;
        r[3] = 0x02;
        r[4] = 31;
        let alloc = be16(&task.cdb[3..]) as usize;
        task.reply(&r, alloc);
    } else {
        let s = Sense::new(key::ILLEGAL_REQUEST, asc::LOGICAL_UNIT_NOT_SUPPORTED);
        let alloc = task.cdb[4] as usize;
        task.reply(s.as_bytes(), alloc);
    }
}

/// 16 hex digits of the bdev's UUID, the base of its identifiers.
fn uuid_bytes(view: &LunView) -> [u8; 16] {
    *view.lun.bdev().uuid().as_bytes()
}

pub(crate) fn inquiry(view: &LunView, port: &ScsiPort, task: &mut Task) {
    let evpd = task.cdb[1] & 0x01 != 0;
    let page = task.cdb[2];
    let alloc = be16(&task.cdb[3..]) as usize;
    if !evpd {
        if page != 0 {
            task.invalid_field(2, None);
            return;
        }
        let mut r = [0u8; 96];
        r[0] = 0x00; // connected direct-access block device
        r[2] = 0x06; // SPC-4
        r[3] = 0x02 | 0x10; // response data format 2, HiSup
        r[4] = (r.len() - 5) as u8;
        r[5] = 0x10 | 0x08; // TPGS implicit (ALUA) and 3PC (third-party copy)
        r[7] = 0x02; // CmdQue
        r[8..16].copy_from_slice(VENDOR);
        let mut product = [b' '; 16];
        let name = view.lun.bdev().product_name().as_bytes();
        product[..name.len().min(16)].copy_from_slice(&name[..name.len().min(16)]);
        r[16..32].copy_from_slice(&product);
        r[32..36].copy_from_slice(REVISION);
        task.reply(&r, alloc);
        return;
    }
    let mut r = [0u8; 256];
    r[1] = page;
    let body = match page {
        0x00 => {
            let pages = [0x00u8, 0x80, 0x83];
            r[4..4 + pages.len()].copy_from_slice(&pages);
            pages.len()
        }
        0x80 => {
            let serial = serial(view);
            r[4..4 + serial.len()].copy_from_slice(&serial);
            serial.len()
        }
        0x83 => device_identification(view, port, &mut r[4..]),
        _ => {
            task.invalid_field(2, None);
            return;
        }
    };
    r[2..4].copy_from_slice(&(body as u16).to_be_bytes());
    task.reply(&r[..4 + body], alloc);
}

/// The unit serial number: the bdev UUID in hex.
pub(crate) fn serial(view: &LunView) -> [u8; 32] {
    let mut s = [0u8; 32];
    for (i, b) in uuid_bytes(view).iter().enumerate() {
        let hex = b"0123456789abcdef";
        s[2 * i] = hex[(b >> 4) as usize];
        s[2 * i + 1] = hex[(b & 0xf) as usize];
    }
    s
}

/// VPD page 83h designators: NAA (registered extended, from the UUID), T10
/// vendor ID, relative target port and target port group. Returns the length.
fn device_identification(view: &LunView, port: &ScsiPort, out: &mut [u8]) -> usize {
    let uuid = uuid_bytes(view);
    let mut n = 0;
    // NAA 6 (IEEE registered extended) designator, binary, LU association.
    out[n..n + 4].copy_from_slice(&[0x01, 0x03, 0x00, 16]);
    let d = &mut out[n + 4..n + 20];
    d.copy_from_slice(&uuid);
    d[0] = 0x60 | (d[0] & 0x0f);
    n += 20;
    // T10 vendor ID designator, ASCII: vendor + serial.
    let serial = serial(view);
    out[n..n + 4].copy_from_slice(&[0x02, 0x01, 0x00, (8 + serial.len()) as u8]);
    out[n + 4..n + 12].copy_from_slice(VENDOR);
    out[n + 12..n + 12 + serial.len()].copy_from_slice(&serial);
    n += 12 + serial.len();
    // Relative target port (target port association, with PIV and protocol iSCSI).
    let rtp = port.nexus().relative_target_port;
    out[n..n + 8].copy_from_slice(&[0x51, 0x94, 0x00, 4, 0, 0, (rtp >> 8) as u8, rtp as u8]);
    n += 8;
    // Target port group 1.
    out[n..n + 8].copy_from_slice(&[0x51, 0x95, 0x00, 4, 0, 0, 0, 1]);
    n += 8;
    n
}

pub(crate) fn report_luns(port: &mut ScsiPort, task: &mut Task) {
    let alloc = be32(&task.cdb[6..]) as usize;
    if alloc < 16 {
        task.invalid_field(6, None);
        return;
    }
    if task.cdb[2] > 2 {
        task.invalid_field(2, None);
        return;
    }
    let count = port.lun_count();
    let mut r = vec![0u8; 8 + 8 * count];
    r[0..4].copy_from_slice(&((8 * count) as u32).to_be_bytes());
    for i in 0..count {
        r[8 + 8 * i..16 + 8 * i].copy_from_slice(&encode_lun(port.lun_id_at(i)));
    }
    task.reply(&r, alloc);
}

pub(crate) fn request_sense(task: &mut Task) {
    let alloc = task.cdb[4] as usize;
    let s = Sense::new(key::NO_SENSE, asc::NO_ADDITIONAL_SENSE);
    task.reply(s.as_bytes(), alloc);
}

/// MODE SENSE (6)/(10) with the caching, control and informational exceptions pages.
pub(crate) fn mode_sense(view: &LunView, task: &mut Task) {
    let ten = task.opcode() == super::opcode::MODE_SENSE_10;
    let dbd = task.cdb[1] & 0x08 != 0;
    let pc = task.cdb[2] >> 6;
    let page = task.cdb[2] & 0x3f;
    let subpage = task.cdb[3];
    let alloc = if ten {
        be16(&task.cdb[7..]) as usize
    } else {
        task.cdb[4] as usize
    };
    if pc == 3 {
        task.check(Sense::new(
            key::ILLEGAL_REQUEST,
            asc::SAVING_PARAMETERS_NOT_SUPPORTED,
        ));
        return;
    }
    if subpage != 0 && subpage != 0xff {
        task.invalid_field(3, None);
        return;
    }
    let hdr = if ten { 8 } else { 4 };
    let mut r = [0u8; 256];
    let mut n = hdr;
    if !dbd {
        let b = view.lun.bdev();
        let blocks = b.num_blocks().min(0xffff_ffff) as u32;
        r[n..n + 4].copy_from_slice(&blocks.to_be_bytes());
        r[n + 5..n + 8].copy_from_slice(&b.block_size().to_be_bytes()[1..]);
        n += 8;
    }
    let changeable = pc == 1;
    let mut any = false;
    if page == 0x08 || page == 0x3f {
        // Caching: WCE set (a write-back cache the initiator flushes).
        r[n] = 0x08;
        r[n + 1] = 0x12;
        if !changeable {
            r[n + 2] = 0x04;
        }
        n += 20;
        any = true;
    }
    if page == 0x0a || page == 0x3f {
        r[n] = 0x0a;
        r[n + 1] = 0x0a;
        if !changeable {
            r[n + 2] = 0x02; // GLTSD
        }
        n += 12;
        any = true;
    }
    if page == 0x1c || page == 0x3f {
        r[n] = 0x1c;
        r[n + 1] = 0x0a;
        n += 12;
        any = true;
    }
    if !any {
        task.invalid_field(2, Some(5));
        return;
    }
    if ten {
        r[0..2].copy_from_slice(&((n - 2) as u16).to_be_bytes());
        r[3] = 0x10; // DPOFUA
        r[6..8].copy_from_slice(&(if dbd { 0u16 } else { 8 }).to_be_bytes());
    } else {
        r[0] = (n - 1) as u8;
        r[2] = 0x10; // DPOFUA
        r[3] = if dbd { 0 } else { 8 };
    }
    let _ = be32;
    task.reply(&r[..n], alloc);
}
