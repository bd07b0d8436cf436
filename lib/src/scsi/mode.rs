//! Mode parameters (SPC-4 7.5, SBC-3 6.4): MODE SENSE(6)/(10), MODE SELECT(6)/(10)
//! and the state they change.
//!
//! Pages: caching (08h, WCE changeable), control (0Ah, D_SENSE, SWP and TAS
//! changeable) and informational exceptions control (1Ch); no subpages. The
//! state lives in the [`Lun`](super::dev::Lun), shared by every I_T nexus on
//! any reactor, in atomics (TAS with the task management state, which acts on
//! it). Saved pages are not implemented.

use std::sync::atomic::{AtomicBool, Ordering};

use super::cdb::{be16, be32, be64};
use super::dev::Lun;
use super::exec::{self, Ctx};
use super::opcode;
use super::sense::{asc, key, Sense};
use super::task::Task;
use super::tmf;

/// A logical unit's changeable mode parameters.
#[derive(Debug)]
pub struct ModeState {
    /// Caching page WCE: writes may complete before they are durable.
    wce: AtomicBool,
    /// Control page D_SENSE: sense data in descriptor format.
    d_sense: AtomicBool,
    /// Control page SWP: the medium is write protected.
    swp: AtomicBool,
}

impl Default for ModeState {
    fn default() -> Self {
        ModeState {
            wce: AtomicBool::new(true),
            d_sense: AtomicBool::new(false),
            swp: AtomicBool::new(false),
        }
    }
}

impl ModeState {
    pub fn wce(&self) -> bool {
        self.wce.load(Ordering::Relaxed)
    }

    pub fn d_sense(&self) -> bool {
        self.d_sense.load(Ordering::Relaxed)
    }

    pub fn swp(&self) -> bool {
        self.swp.load(Ordering::Relaxed)
    }

    pub fn set_wce(&self, on: bool) {
        self.wce.store(on, Ordering::Relaxed);
    }

    pub fn set_d_sense(&self, on: bool) {
        self.d_sense.store(on, Ordering::Relaxed);
    }

    pub fn set_swp(&self, on: bool) {
        self.swp.store(on, Ordering::Relaxed);
    }
}

/// Page control values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pc {
    Current,
    Changeable,
    Default,
}

const CACHING: u8 = 0x08;
const CONTROL: u8 = 0x0a;
const INFO_EXCEPTIONS: u8 = 0x1c;
const ALL_PAGES: u8 = 0x3f;

/// The pages we have, in the order MODE SENSE returns them, with their lengths.
const PAGES: [(u8, usize); 3] = [(CACHING, 20), (CONTROL, 12), (INFO_EXCEPTIONS, 12)];

/// Bits of the caching and control pages.
const WCE: u8 = 0x04;
const D_SENSE: u8 = 0x04;
const GLTSD: u8 = 0x02;
const SWP: u8 = 0x08;
const TAS: u8 = 0x40;

/// Builds page `code` as `pc` asks into `out`; returns its length.
fn page(code: u8, pc: Pc, lun: &Lun, out: &mut [u8]) -> usize {
    let st = &lun.mode;
    let len = PAGES.iter().find(|p| p.0 == code).map_or(0, |p| p.1);
    out[..len].fill(0);
    out[0] = code;
    out[1] = (len - 2) as u8;
    match (code, pc) {
        (CACHING, Pc::Changeable) => out[2] = WCE,
        (CACHING, Pc::Default) => out[2] = WCE,
        (CACHING, Pc::Current) => out[2] = if st.wce() { WCE } else { 0 },
        (CONTROL, Pc::Changeable) => {
            out[2] = D_SENSE;
            out[4] = SWP;
            out[5] = TAS;
        }
        (CONTROL, _) => {
            // TST 000b (one task set), GLTSD (no saved log parameters),
            // QUEUE ALGORITHM MODIFIER 1 (commands may be reordered), QERR 00b.
            out[2] = GLTSD;
            out[3] = 0x10;
            if pc == Pc::Current {
                if st.d_sense() {
                    out[2] |= D_SENSE;
                }
                if st.swp() {
                    out[4] |= SWP;
                }
                if lun.state.tas() {
                    out[5] |= TAS;
                }
            }
        }
        (INFO_EXCEPTIONS, Pc::Changeable) => {}
        (INFO_EXCEPTIONS, _) => out[2] = 0x08, // DEXCPT: no exceptions reported
        _ => {}
    }
    len
}

/// MODE SENSE(6) and MODE SENSE(10).
pub(crate) fn mode_sense(ctx: &mut Ctx<'_>, task: &mut Task) {
    let cdb = task.cdb;
    let ten = cdb[0] == opcode::MODE_SENSE_10;
    let dbd = cdb[1] & 0x08 != 0;
    let llbaa = ten && cdb[1] & 0x10 != 0;
    let pc = match cdb[2] >> 6 {
        0 => Pc::Current,
        1 => Pc::Changeable,
        2 => Pc::Default,
        _ => {
            task.check(
                Sense::new(key::ILLEGAL_REQUEST, asc::SAVING_PARAMETERS_NOT_SUPPORTED)
                    .with_field_pointer(true, 2, Some(7)),
            );
            return;
        }
    };
    let code = cdb[2] & 0x3f;
    let subpage = cdb[3];
    let alloc = if ten {
        be16(&cdb[7..]) as usize
    } else {
        cdb[4] as usize
    };
    if code != ALL_PAGES && !PAGES.iter().any(|p| p.0 == code) {
        task.invalid_field(2, Some(5));
        return;
    }
    // We have no subpages: 00h is the page itself, FFh the page and its
    // (no) subpages.
    if subpage != 0x00 && subpage != 0xff {
        task.invalid_field(3, None);
        return;
    }
    let view = &ctx.view;
    let bdev = view.lun.bdev();
    let st = &view.lun.mode;
    let hdr = if ten { 8 } else { 4 };
    let mut r = [0u8; 128];
    let mut n = hdr;
    let mut bd_len = 0;
    if !dbd {
        let (blocks, bs) = if pc == Pc::Changeable {
            (0, 0) // nothing in the block descriptor can be changed
        } else {
            (bdev.num_blocks(), bdev.block_size())
        };
        if llbaa {
            r[n..n + 8].copy_from_slice(&blocks.to_be_bytes());
            r[n + 12..n + 16].copy_from_slice(&bs.to_be_bytes());
            bd_len = 16;
        } else {
            let short = blocks.min(0xffff_ffff) as u32;
            r[n..n + 4].copy_from_slice(&short.to_be_bytes());
            r[n + 5..n + 8].copy_from_slice(&bs.to_be_bytes()[1..]);
            bd_len = 8;
        }
        n += bd_len;
    }
    for (c, _) in PAGES {
        if code == ALL_PAGES || code == c {
            n += page(c, pc, &view.lun, &mut r[n..]);
        }
    }
    // Device-specific parameter: WP and DPOFUA (DPO and FUA are supported).
    let mut dsp = 0x10;
    if st.swp() {
        dsp |= 0x80;
    }
    if ten {
        r[0..2].copy_from_slice(&((n - 2) as u16).to_be_bytes());
        r[3] = dsp;
        if bd_len == 16 {
            r[4] = 0x01; // LONGLBA
        }
        r[6..8].copy_from_slice(&(bd_len as u16).to_be_bytes());
    } else {
        r[0] = (n - 1) as u8;
        r[2] = dsp;
        r[3] = bd_len as u8;
    }
    task.reply(&r[..n], alloc);
}

/// The most parameter data MODE SELECT takes: header, a long block descriptor
/// and every page, with room to spare.
const SELECT_MAX: usize = 256;

/// MODE SELECT(6) and MODE SELECT(10).
pub(crate) fn mode_select(ctx: &mut Ctx<'_>, task: &mut Task) {
    let cdb = task.cdb;
    let ten = cdb[0] == opcode::MODE_SELECT_10;
    let pf = cdb[1] & 0x10 != 0;
    let sp = cdb[1] & 0x01 != 0;
    let len = if ten {
        be16(&cdb[7..]) as usize
    } else {
        cdb[4] as usize
    };
    task.cmd_len = len as u32;
    if sp {
        // No saved pages.
        task.invalid_field(1, Some(0));
        return;
    }
    if len == 0 {
        return;
    }
    if !pf {
        // Only the page format of SPC is understood.
        task.invalid_field(1, Some(4));
        return;
    }
    let hdr = if ten { 8 } else { 4 };
    if len > SELECT_MAX || task.data.len() < len || len < hdr {
        task.param_list_length_error();
        return;
    }
    let mut p = [0u8; SELECT_MAX];
    task.data.copy_to_slice(0, &mut p[..len]);
    let p = &p[..len];
    let view = ctx.view.clone();
    let bdev = view.lun.bdev();
    let st = &view.lun.mode;

    // Header: the mode data length is reserved, the medium type must be 0 and
    // the device-specific parameter is ignored (WP is set through SWP).
    let (medium_at, bd_len, long) = if ten {
        (2, be16(&p[6..]) as usize, p[4] & 0x01 != 0)
    } else {
        (1, p[3] as usize, false)
    };
    if p[medium_at] != 0 {
        task.invalid_param(medium_at as u16, None);
        return;
    }
    if hdr + bd_len > len {
        task.param_list_length_error();
        return;
    }
    // At most one block descriptor, and it may not change the format.
    if bd_len != 0 {
        let bd = &p[hdr..hdr + bd_len];
        let (ok_len, blocks, bs) = if long {
            (
                bd_len == 16,
                if bd_len == 16 { be64(bd) } else { 0 },
                if bd_len == 16 { be32(&bd[12..]) } else { 0 },
            )
        } else {
            (
                bd_len == 8,
                if bd_len == 8 { be32(bd) as u64 } else { 0 },
                if bd_len == 8 {
                    u32::from_be_bytes([0, bd[5], bd[6], bd[7]])
                } else {
                    0
                },
            )
        };
        let bd_len_at = if ten { 6 } else { 3 };
        if !ok_len {
            task.invalid_param(bd_len_at, None);
            return;
        }
        let current = if long {
            bdev.num_blocks()
        } else {
            bdev.num_blocks().min(0xffff_ffff)
        };
        if blocks != 0 && blocks != current {
            task.invalid_param(hdr as u16, None);
            return;
        }
        if bs != bdev.block_size() {
            let at = if long { hdr + 12 } else { hdr + 5 };
            task.invalid_param(at as u16, None);
            return;
        }
    }

    // Pages: check them all before changing anything.
    let mut seen: [(u8, usize); 8] = [(0, 0); 8];
    let mut count = 0;
    let mut pos = hdr + bd_len;
    while pos < len {
        if pos + 2 > len {
            task.param_list_length_error();
            return;
        }
        if p[pos] & 0x40 != 0 {
            // SPF: no subpages here.
            task.invalid_param(pos as u16, Some(6));
            return;
        }
        let code = p[pos] & 0x3f;
        let Some(&(_, plen)) = PAGES.iter().find(|pg| pg.0 == code) else {
            task.invalid_param(pos as u16, Some(5));
            return;
        };
        if p[pos + 1] as usize + 2 != plen {
            task.invalid_param(pos as u16 + 1, None);
            return;
        }
        if pos + plen > len {
            task.param_list_length_error();
            return;
        }
        let mut cur = [0u8; 32];
        let mut mask = [0u8; 32];
        page(code, Pc::Current, &view.lun, &mut cur);
        page(code, Pc::Changeable, &view.lun, &mut mask);
        for i in 2..plen {
            let bad = (p[pos + i] ^ cur[i]) & !mask[i];
            if bad != 0 {
                let bit = 7 - bad.leading_zeros() as u8;
                task.invalid_param((pos + i) as u16, Some(bit));
                return;
            }
        }
        if count == seen.len() {
            task.param_list_length_error();
            return;
        }
        seen[count] = (code, pos);
        count += 1;
        pos += plen;
    }

    let lun = &view.lun;
    let state = || (st.wce(), st.d_sense(), st.swp(), lun.state.tas());
    let before = state();
    for &(code, at) in &seen[..count] {
        match code {
            CACHING => st.set_wce(p[at + 2] & WCE != 0),
            CONTROL => {
                st.set_d_sense(p[at + 2] & D_SENSE != 0);
                st.set_swp(p[at + 4] & SWP != 0);
                tmf::set_tas(lun, p[at + 5] & TAS != 0);
            }
            _ => {}
        }
    }
    if state() != before {
        exec::mode_parameters_changed(ctx.port, &view.lun);
    }
    // D_SENSE applies from this command's own status on.
    task.desc_sense = st.d_sense();
}
