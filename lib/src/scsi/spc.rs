//! Primary commands (SPC-4): INQUIRY, REPORT LUNS, REQUEST SENSE, TEST UNIT
//! READY, REPORT TARGET PORT GROUPS. Mode pages are in [`mode`](super::mode),
//! VPD pages in [`vpd`](super::vpd).

use super::cdb::{be16, be32, encode_lun};
use super::dev::ScsiPort;
use super::exec::{self, Ctx};
use super::opcode;
use super::opcodes;
use super::sense::{asc, key, Sense};
use super::task::Task;
use super::vpd;

pub const VENDOR: &[u8; 8] = b"FERRITE ";
pub const REVISION: &[u8; 4] = b"0001";

/// Version descriptors (SPC-4 table 29).
const VERSION_SAM5: u16 = 0x00a0;
const VERSION_SPC4: u16 = 0x0460;
const VERSION_SBC3: u16 = 0x04c0;
const VERSION_ISCSI: u16 = 0x0960;
const VERSION_SRP: u16 = 0x0940;

/// INQUIRY or REQUEST SENSE for a LUN that is not there: peripheral qualifier
/// 011b, or LOGICAL UNIT NOT SUPPORTED as sense data.
pub(crate) fn no_lun(task: &mut Task) {
    if task.opcode() == opcode::INQUIRY {
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
        r[3] = 0x12;
        r[4] = 31;
        r[8..16].copy_from_slice(VENDOR);
        r[16..32].fill(b' ');
        r[32..36].copy_from_slice(REVISION);
        let alloc = be16(&task.cdb[3..]) as usize;
        task.reply(&r, alloc);
    } else {
        let s = Sense::new(key::ILLEGAL_REQUEST, asc::LOGICAL_UNIT_NOT_SUPPORTED);
        let s = if task.cdb[1] & 0x01 != 0 {
            s.to_descriptor()
        } else {
            s
        };
        let alloc = task.cdb[4] as usize;
        task.reply(s.as_bytes(), alloc);
    }
}

pub(crate) fn test_unit_ready(_ctx: &mut Ctx<'_>, task: &mut Task) {
    task.good();
}

pub(crate) fn inquiry(ctx: &mut Ctx<'_>, task: &mut Task) {
    let evpd = task.cdb[1] & 0x01 != 0;
    let cmddt = task.cdb[1] & 0x02 != 0;
    let page = task.cdb[2];
    let alloc = be16(&task.cdb[3..]) as usize;
    if cmddt {
        task.invalid_field(1, Some(1));
        return;
    }
    if evpd {
        let mut r = [0u8; vpd::VPD_MAX];
        match vpd::page(page, ctx.port, &ctx.view, &mut r) {
            Some(n) => task.reply(&r[..n], alloc),
            None => task.invalid_field(2, None),
        }
        return;
    }
    if page != 0 {
        task.invalid_field(2, None);
        return;
    }
    let mut r = [0u8; 96];
    r[0] = 0x00; // connected direct-access block device
    r[2] = 0x06; // SPC-4
    r[3] = 0x10 | 0x02; // HiSup, response data format 2
    r[4] = (r.len() - 5) as u8;
    r[5] = 0x10; // TPGS 01b: implicit asymmetric access (REPORT TARGET PORT GROUPS)
    if opcodes::supports(&ctx.view, opcode::EXTENDED_COPY) {
        r[5] |= 0x08; // 3PC
    }
    r[7] = 0x02; // CmdQue
    r[8..16].copy_from_slice(VENDOR);
    let mut product = [b' '; 16];
    let name = ctx.view.lun.bdev().product_name().as_bytes();
    for (d, s) in product.iter_mut().zip(name) {
        *d = if (0x20..0x7f).contains(s) { *s } else { b' ' };
    }
    r[16..32].copy_from_slice(&product);
    r[32..36].copy_from_slice(REVISION);
    let transport = match vpd::protocol(ctx.port) {
        Some(5) => VERSION_ISCSI,
        Some(4) => VERSION_SRP,
        _ => 0,
    };
    let versions = [VERSION_SAM5, transport, VERSION_SPC4, VERSION_SBC3];
    let mut at = 58;
    for v in versions.into_iter().filter(|&v| v != 0) {
        r[at..at + 2].copy_from_slice(&v.to_be_bytes());
        at += 2;
    }
    task.reply(&r, alloc);
}

pub(crate) fn report_luns(ctx: &mut Ctx<'_>, task: &mut Task) {
    report_luns_for(ctx.port, task);
}

/// REPORT LUNS, addressed to any LUN (or none).
pub(crate) fn report_luns_for(port: &mut ScsiPort, task: &mut Task) {
    let alloc = be32(&task.cdb[6..]) as usize;
    let select = task.cdb[2];
    if alloc < 16 {
        task.invalid_field(6, None);
        return;
    }
    // 00h: the logical units; 01h: well-known LUNs only (we have none);
    // 02h: all.
    let count = match select {
        0x00 | 0x02 => port.lun_count(),
        0x01 => 0,
        _ => {
            task.invalid_field(2, None);
            return;
        }
    };
    let mut r = vec![0u8; 8 + 8 * count];
    r[0..4].copy_from_slice(&((8 * count) as u32).to_be_bytes());
    for i in 0..count {
        r[8 + 8 * i..16 + 8 * i].copy_from_slice(&encode_lun(port.lun_id_at(i)));
    }
    task.reply(&r, alloc);
}

/// REQUEST SENSE: the pending sense of this nexus if any, else NO SENSE; in
/// descriptor format when DESC is set.
pub(crate) fn request_sense(ctx: &mut Ctx<'_>, task: &mut Task) {
    let desc = task.cdb[1] & 0x01 != 0;
    let alloc = task.cdb[4] as usize;
    let lun = ctx.view.lun.clone();
    let s = exec::take_pending_sense(ctx.port, &lun)
        .unwrap_or_else(|| Sense::new(key::NO_SENSE, asc::NO_ADDITIONAL_SENSE));
    let s = if desc { s.to_descriptor() } else { s };
    task.reply(s.as_bytes(), alloc);
}

/// REPORT TARGET PORT GROUPS (MAINTENANCE IN 0Ah): one group, 1, active and
/// optimized, holding this port.
pub(crate) fn report_target_port_groups(ctx: &mut Ctx<'_>, task: &mut Task) {
    let extended = task.cdb[1] >> 5 == 0x01;
    let alloc = be32(&task.cdb[6..]) as usize;
    let mut r = [0u8; 20];
    let hdr = if extended { 8 } else { 4 };
    let d = &mut r[hdr..hdr + 12];
    d[0] = 0x80; // PREF, asymmetric access state 0h: active/optimized
    d[1] = 0x01; // AO_SUP
    d[2..4].copy_from_slice(&1u16.to_be_bytes());
    d[7] = 1; // target port count
    let rtp = ctx.port.nexus().relative_target_port;
    d[10..12].copy_from_slice(&rtp.to_be_bytes());
    let n = hdr + 12;
    r[0..4].copy_from_slice(&((n - 4) as u32).to_be_bytes());
    if extended {
        r[4] = 0x10; // FORMAT TYPE 001b
    }
    task.reply(&r[..n], alloc);
}
