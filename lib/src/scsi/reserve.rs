//! SPC-2 reservations: RESERVE(6)/(10) and RELEASE(6)/(10), logical unit scope
//! only, with SPC-4's rules for logical units that also have persistent
//! reservations (5.13.3: the "compatible reservation handling" LIO calls CRH).
//!
//! The holder is an I_T nexus. A reservation ends with RELEASE from its holder,
//! the holder's I_T nexus loss, LUN reset and target reset. While it is held,
//! other nexuses get RESERVATION CONFLICT for everything but INQUIRY, REQUEST
//! SENSE, REPORT LUNS and RELEASE (which then does nothing); see
//! [`state::admit`](super::state::admit).

use super::exec::Ctx;
use super::opcode;
use super::opcodes::{Command, Handler};
use super::task::Task;

/// The commands of this module, for the dispatcher's tables.
pub(crate) const COMMANDS: &[Command] = &[
    row(opcode::RESERVE_6, "RESERVE(6)", &[0x16, 0, 0, 0, 0, 0]),
    row(opcode::RELEASE_6, "RELEASE(6)", &[0x17, 0, 0, 0, 0, 0]),
    row(
        opcode::RESERVE_10,
        "RESERVE(10)",
        &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ),
    row(
        opcode::RELEASE_10,
        "RELEASE(10)",
        &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ),
];

const fn row(op: u8, name: &'static str, usage: &'static [u8]) -> Command {
    Command {
        opcode: op,
        service_action: None,
        name,
        usage,
        flags: 0,
        handler: Handler::Now(execute),
        offered: None,
    }
}

/// Runs RESERVE(6)/(10) or RELEASE(6)/(10).
pub(crate) fn execute(ctx: &mut Ctx<'_>, task: &mut Task) {
    let view = &ctx.view;
    let op = task.opcode();
    let b1 = task.cdb[1];
    // Third-party reservations (3RDPTY, LONGID) and extents are not supported.
    let bad = match op {
        opcode::RESERVE_6 | opcode::RELEASE_6 => {
            if b1 & 0x10 != 0 {
                Some(4)
            } else if b1 & 0x01 != 0 {
                Some(0)
            } else if b1 & 0x0e != 0 {
                Some(1)
            } else {
                None
            }
        }
        _ => {
            if b1 & 0x10 != 0 {
                Some(4)
            } else if b1 & 0x02 != 0 {
                Some(1)
            } else if b1 & 0x01 != 0 {
                Some(0)
            } else {
                None
            }
        }
    };
    if let Some(bit) = bad {
        task.invalid_field(1, Some(bit));
        return;
    }
    let nx = &view.nx;
    let state = &view.lun.state;
    let g = state.lock();
    // SPC-4 5.13.3: with persistent reservations around, RESERVE and RELEASE
    // succeed without effect for a holder or a registrant under a registrants-
    // only or all-registrants reservation, and conflict otherwise.
    if g.pr.has_registrations() {
        let ok = g.pr.spc2_exempt(&nx.port, nx.rtp());
        drop(g);
        if ok {
            task.good();
        } else {
            task.reservation_conflict();
        }
        return;
    }
    let reserve = matches!(op, opcode::RESERVE_6 | opcode::RESERVE_10);
    if reserve {
        if state.spc2_reserve(nx.nexus.id) {
            task.good();
        } else {
            task.reservation_conflict();
        }
    } else {
        // Releasing a reservation one does not hold is no error.
        state.spc2_release(nx.nexus.id);
        task.good();
    }
    drop(g);
}
