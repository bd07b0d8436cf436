//! The tables of supported commands, and the commands that report them:
//! REPORT SUPPORTED OPERATION CODES and REPORT SUPPORTED TASK MANAGEMENT
//! FUNCTIONS (SPC-4 6.35, 6.36).
//!
//! One row per operation code (and service action): its CDB length, its CDB
//! usage data, flags other checks use, and its handler. The dispatcher executes
//! exactly these rows (see [`exec::TABLES`](super::exec)), so what is reported
//! is what runs.

use super::cdb::{be16, be32};
use super::dev::LunView;
use super::exec::{self, Ctx, Done};
use super::opcode::{self as op, mi, sai};
use super::task::Task;
use super::{mode, sbc, spc, vpd};

/// Flags of a command row.
pub(crate) mod flags {
    /// Reads the medium.
    pub const MEDIUM_READ: u16 = 1 << 0;
    /// Changes the medium (refused while the LUN is write protected).
    pub const MEDIUM_WRITE: u16 = 1 << 1;
    /// Runs even with a unit attention pending, and does not report it
    /// (INQUIRY, REPORT LUNS, REQUEST SENSE; SAM-5 5.14).
    pub const UA_EXEMPT: u16 = 1 << 2;
}

/// How a command runs.
#[derive(Clone, Copy)]
pub(crate) enum Handler {
    /// Answers at once; the dispatcher finishes the task.
    Now(fn(&mut Ctx<'_>, &mut Task)),
    /// Takes the task and finishes it through [`Done`] when it is over
    /// (block I/O).
    Later(fn(&mut Ctx<'_>, Task, Done)),
}

/// One supported command.
pub(crate) struct Command {
    pub opcode: u8,
    /// The service action, for operation codes that have them.
    pub service_action: Option<u16>,
    pub name: &'static str,
    /// CDB usage data (SPC-4 6.35.3): as long as the CDB, byte 0 the operation
    /// code; a bit is set where the device server looks at the CDB.
    pub usage: &'static [u8],
    pub flags: u16,
    pub handler: Handler,
    /// Whether this LUN offers the command (e.g. UNMAP only where the bdev
    /// unmaps). `None`: always.
    pub offered: Option<fn(&LunView) -> bool>,
}

impl Command {
    pub(crate) fn available(&self, view: &LunView) -> bool {
        match self.offered {
            Some(f) => f(view),
            None => true,
        }
    }
}

/// Nominal and recommended command timeouts reported with RCTD, in seconds.
const NOMINAL_TIMEOUT: u32 = 0;
const RECOMMENDED_TIMEOUT: u32 = 30;

/// The task management functions the transports support (REPORT SUPPORTED
/// TASK MANAGEMENT FUNCTIONS bytes 0 and 1): ABORT TASK, ABORT TASK SET, CLEAR
/// TASK SET, LOGICAL UNIT RESET, TARGET RESET.
pub(crate) const SUPPORTED_TMF: [u8; 2] = [0x80 | 0x40 | 0x10 | 0x08 | 0x02, 0x00];

macro_rules! cmd {
    ($op:expr, $sa:expr, $name:expr, $usage:expr, $flags:expr, $handler:expr) => {
        cmd!($op, $sa, $name, $usage, $flags, $handler, None)
    };
    ($op:expr, $sa:expr, $name:expr, $usage:expr, $flags:expr, $handler:expr, $offered:expr) => {
        Command {
            opcode: $op,
            service_action: $sa,
            name: $name,
            usage: $usage,
            flags: $flags,
            handler: $handler,
            offered: $offered,
        }
    };
}

use flags::{MEDIUM_READ as RD, MEDIUM_WRITE as WR, UA_EXEMPT as UAX};
use Handler::{Later, Now};

/// Primary commands (SPC-4).
#[rustfmt::skip]
pub(crate) const SPC: &[Command] = &[
    cmd!(op::TEST_UNIT_READY, None, "TEST UNIT READY", &[0x00, 0, 0, 0, 0, 0], 0, Now(spc::test_unit_ready)),
    cmd!(op::REQUEST_SENSE, None, "REQUEST SENSE", &[0x03, 0x01, 0, 0, 0xff, 0], UAX, Now(spc::request_sense)),
    cmd!(op::INQUIRY, None, "INQUIRY", &[0x12, 0x01, 0xff, 0xff, 0xff, 0], UAX, Now(spc::inquiry)),
    cmd!(op::MODE_SELECT_6, None, "MODE SELECT(6)", &[0x15, 0x11, 0, 0, 0xff, 0], 0, Now(mode::mode_select)),
    cmd!(op::MODE_SENSE_6, None, "MODE SENSE(6)", &[0x1a, 0x08, 0xff, 0xff, 0xff, 0], 0, Now(mode::mode_sense)),
    cmd!(op::MODE_SELECT_10, None, "MODE SELECT(10)", &[0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0], 0, Now(mode::mode_select)),
    cmd!(op::MODE_SENSE_10, None, "MODE SENSE(10)", &[0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0], 0, Now(mode::mode_sense)),
    cmd!(op::REPORT_LUNS, None, "REPORT LUNS", &[0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], UAX, Now(spc::report_luns)),
    cmd!(op::MAINTENANCE_IN, Some(mi::REPORT_TARGET_PORT_GROUPS), "REPORT TARGET PORT GROUPS", &[0xa3, 0xe0 | mi::REPORT_TARGET_PORT_GROUPS as u8, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], 0, Now(spc::report_target_port_groups)),
    cmd!(op::MAINTENANCE_IN, Some(mi::REPORT_SUPPORTED_OPERATION_CODES), "REPORT SUPPORTED OPERATION CODES", &[0xa3, mi::REPORT_SUPPORTED_OPERATION_CODES as u8, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], 0, Now(report_supported_operation_codes)),
    cmd!(op::MAINTENANCE_IN, Some(mi::REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS), "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", &[0xa3, mi::REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS as u8, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], 0, Now(report_supported_tmf)),
];

fn unmap_offered(view: &LunView) -> bool {
    vpd::thin(view)
}

/// Block commands (SBC-3).
#[rustfmt::skip]
pub(crate) const SBC: &[Command] = &[
    cmd!(op::READ_6, None, "READ(6)", &[0x08, 0x1f, 0xff, 0xff, 0xff, 0], RD, Later(sbc::read)),
    cmd!(op::WRITE_6, None, "WRITE(6)", &[0x0a, 0x1f, 0xff, 0xff, 0xff, 0], WR, Later(sbc::write)),
    cmd!(op::START_STOP_UNIT, None, "START STOP UNIT", &[0x1b, 0x01, 0, 0x0f, 0xf7, 0], 0, Now(sbc::start_stop_unit)),
    cmd!(op::READ_CAPACITY_10, None, "READ CAPACITY(10)", &[0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0], 0, Now(sbc::read_capacity_10)),
    cmd!(op::READ_10, None, "READ(10)", &[0x28, 0x1a, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0], RD, Later(sbc::read)),
    cmd!(op::WRITE_10, None, "WRITE(10)", &[0x2a, 0x1a, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0], WR, Later(sbc::write)),
    cmd!(op::WRITE_AND_VERIFY_10, None, "WRITE AND VERIFY(10)", &[0x2e, 0x12, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0], WR, Later(sbc::write_and_verify)),
    cmd!(op::VERIFY_10, None, "VERIFY(10)", &[0x2f, 0x16, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0], RD, Later(sbc::verify)),
    cmd!(op::READ_DEFECT_DATA_10, None, "READ DEFECT DATA(10)", &[0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0], 0, Now(sbc::read_defect_data)),
    cmd!(op::PRE_FETCH_10, None, "PRE-FETCH(10)", &[0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0], RD, Now(sbc::pre_fetch)),
    cmd!(op::SYNCHRONIZE_CACHE_10, None, "SYNCHRONIZE CACHE(10)", &[0x35, 0x02, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0], 0, Later(sbc::synchronize_cache)),
    cmd!(op::WRITE_SAME_10, None, "WRITE SAME(10)", &[0x41, 0x08, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0], WR, Later(sbc::write_same)),
    cmd!(op::UNMAP, None, "UNMAP", &[0x42, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0], WR, Later(sbc::unmap), Some(unmap_offered)),
    cmd!(op::READ_16, None, "READ(16)", &[0x88, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], RD, Later(sbc::read)),
    cmd!(op::COMPARE_AND_WRITE, None, "COMPARE AND WRITE", &[0x89, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0, 0], RD | WR, Later(sbc::compare_and_write)),
    cmd!(op::WRITE_16, None, "WRITE(16)", &[0x8a, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], WR, Later(sbc::write)),
    cmd!(op::ORWRITE_16, None, "ORWRITE(16)", &[0x8b, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], RD | WR, Later(sbc::orwrite)),
    cmd!(op::WRITE_AND_VERIFY_16, None, "WRITE AND VERIFY(16)", &[0x8e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], WR, Later(sbc::write_and_verify)),
    cmd!(op::VERIFY_16, None, "VERIFY(16)", &[0x8f, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], RD, Later(sbc::verify)),
    cmd!(op::PRE_FETCH_16, None, "PRE-FETCH(16)", &[0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], RD, Now(sbc::pre_fetch)),
    cmd!(op::SYNCHRONIZE_CACHE_16, None, "SYNCHRONIZE CACHE(16)", &[0x91, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], 0, Later(sbc::synchronize_cache)),
    cmd!(op::WRITE_SAME_16, None, "WRITE SAME(16)", &[0x93, 0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], WR, Later(sbc::write_same)),
    cmd!(op::WRITE_ATOMIC_16, None, "WRITE ATOMIC(16)", &[0x9c, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0], WR, Later(sbc::write_atomic)),
    cmd!(op::SERVICE_ACTION_IN_16, Some(sai::READ_CAPACITY_16), "READ CAPACITY(16)", &[0x9e, sai::READ_CAPACITY_16 as u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0], 0, Now(sbc::read_capacity_16)),
    cmd!(op::SERVICE_ACTION_IN_16, Some(sai::GET_LBA_STATUS), "GET LBA STATUS", &[0x9e, sai::GET_LBA_STATUS as u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], 0, Now(sbc::get_lba_status)),
    cmd!(op::READ_12, None, "READ(12)", &[0xa8, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], RD, Later(sbc::read)),
    cmd!(op::WRITE_12, None, "WRITE(12)", &[0xaa, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], WR, Later(sbc::write)),
    cmd!(op::WRITE_AND_VERIFY_12, None, "WRITE AND VERIFY(12)", &[0xae, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], WR, Later(sbc::write_and_verify)),
    cmd!(op::READ_DEFECT_DATA_12, None, "READ DEFECT DATA(12)", &[0xb7, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], 0, Now(sbc::read_defect_data)),
    cmd!(op::VERIFY_12, None, "VERIFY(12)", &[0xaf, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], RD, Later(sbc::verify)),
];

/// Whether this LUN executes `opcode` (any service action).
pub(crate) fn supports(view: &LunView, opcode: u8) -> bool {
    exec::rows(opcode).iter().any(|c| c.available(view))
}

/// A command timeouts descriptor (SPC-4 6.35.4).
fn timeouts() -> [u8; 12] {
    let mut t = [0u8; 12];
    t[1] = 0x0a;
    t[4..8].copy_from_slice(&NOMINAL_TIMEOUT.to_be_bytes());
    t[8..12].copy_from_slice(&RECOMMENDED_TIMEOUT.to_be_bytes());
    t
}

/// Largest REPORT SUPPORTED OPERATION CODES reply we build: a header and a
/// 20-byte descriptor per command.
const RSOC_MAX: usize = 4 + 20 * 96;

/// REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN, service action 0Ch).
pub(crate) fn report_supported_operation_codes(ctx: &mut Ctx<'_>, task: &mut Task) {
    let cdb = task.cdb;
    let rctd = cdb[2] & 0x80 != 0;
    let option = cdb[2] & 0x07;
    let req_op = cdb[3];
    let req_sa = be16(&cdb[4..]);
    let alloc = be32(&cdb[6..]) as usize;
    let view = &ctx.view;
    let mut r = [0u8; RSOC_MAX];
    match option {
        0 => {
            let mut n = 4;
            for c in exec::commands().iter().filter(|c| c.available(view)) {
                if n + 20 > r.len() {
                    break;
                }
                r[n] = c.opcode;
                r[n + 2..n + 4].copy_from_slice(&c.service_action.unwrap_or(0).to_be_bytes());
                if c.service_action.is_some() {
                    r[n + 5] |= 0x01; // SERVACTV
                }
                r[n + 6..n + 8].copy_from_slice(&(c.usage.len() as u16).to_be_bytes());
                n += 8;
                if rctd {
                    r[n - 3] |= 0x02; // CTDP
                    r[n..n + 12].copy_from_slice(&timeouts());
                    n += 12;
                }
            }
            r[0..4].copy_from_slice(&((n - 4) as u32).to_be_bytes());
            task.reply(&r[..n], alloc);
        }
        1..=3 => {
            let rows = exec::rows(req_op);
            let has_sa = rows.first().is_some_and(|c| c.service_action.is_some());
            // Option 1 names an operation code without service actions, option
            // 2 one with; option 3 either (the service action is then ignored
            // for codes without).
            if (option == 1 && has_sa) || (option == 2 && !rows.is_empty() && !has_sa) {
                task.invalid_field(2, Some(2));
                return;
            }
            let found = rows
                .iter()
                .find(|c| !has_sa || c.service_action == Some(req_sa))
                .filter(|c| c.available(view));
            let n = match found {
                None => {
                    r[1] = 0x01; // not supported
                    4
                }
                Some(c) => {
                    r[1] = 0x03; // supported as the standard says
                    let len = c.usage.len();
                    r[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                    r[4..4 + len].copy_from_slice(c.usage);
                    let mut n = 4 + len;
                    if rctd {
                        r[1] |= 0x80; // CTDP
                        r[n..n + 12].copy_from_slice(&timeouts());
                        n += 12;
                    }
                    n
                }
            };
            task.reply(&r[..n], alloc);
        }
        _ => task.invalid_field(2, Some(2)),
    }
}

/// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (MAINTENANCE IN, service action 0Dh).
pub(crate) fn report_supported_tmf(_ctx: &mut Ctx<'_>, task: &mut Task) {
    let repd = task.cdb[2] & 0x80 != 0;
    let alloc = be32(&task.cdb[6..]) as usize;
    let mut r = [0u8; 16];
    r[0] = SUPPORTED_TMF[0];
    r[1] = SUPPORTED_TMF[1];
    if repd {
        r[3] = 0x0c; // additional data length
        task.reply(&r, alloc);
    } else {
        task.reply(&r[..4], alloc);
    }
}
