//! Unit attention conditions (SAM-5 5.14, SPC-4 5.14 ... as LIO reports them).
//!
//! Each nexus keeps a queue per LUN ([`NexusLun`](super::state::NexusLun)).
//! Conditions are queued by: a new I_T nexus (POWER ON, RESET), LUN reset (BUS
//! DEVICE RESET FUNCTION OCCURRED), target reset (POWER ON, RESET), capacity and
//! mode parameter changes, reservations preempted or released, registrations
//! preempted, commands cleared by another initiator, and a change of the
//! device's LUN list (REPORTED LUNS DATA HAS CHANGED).
//!
//! A pending condition ends the next command with CHECK CONDITION, UNIT
//! ATTENTION and is then cleared, except for INQUIRY and REPORT LUNS (which
//! neither see nor clear it) and REQUEST SENSE, which returns it as its
//! parameter data and clears it (UA_INTLCK_CTRL 00b). REPORT LUNS clears
//! REPORTED LUNS DATA HAS CHANGED.

use std::rc::Rc;
use std::sync::Arc;

use super::dev::{Lun, LunView, ScsiPort};
use super::sense::{asc, key, Sense};

/// REQUEST SENSE: the oldest unit attention pending for `port`'s nexus on
/// `lun`, taken off its queue.
pub(crate) fn take_pending_sense(port: &mut ScsiPort, lun: &Arc<Lun>) -> Option<Sense> {
    let view = port.lun(lun.id)?;
    if !view.nx.ua_pending() {
        return None;
    }
    view.nx.pop_ua().map(|a| Sense::new(key::UNIT_ATTENTION, a))
}

/// `bdev` was resized (a rescan): CAPACITY DATA HAS CHANGED for every nexus of
/// every LUN that exports it. Returns how many LUNs were told.
pub fn bdev_capacity_changed(bdev: &str) -> usize {
    let luns = super::xcopy::luns_of_bdev(bdev);
    for lun in &luns {
        capacity_changed(lun);
    }
    luns.len()
}

/// The LUN's capacity changed: CAPACITY DATA HAS CHANGED for every nexus.
pub fn capacity_changed(lun: &Lun) {
    lun.state.ua_all(asc::CAPACITY_DATA_HAS_CHANGED, None);
}

/// Mode parameters shared by all nexuses were changed through `port`: MODE
/// PARAMETERS CHANGED for every other nexus (MODE SELECT calls this).
pub(crate) fn mode_parameters_changed(port: &ScsiPort, lun: &Lun) {
    lun.state
        .ua_all(asc::MODE_PARAMETERS_CHANGED, Some(port.nexus().id));
}

/// The device's LUN list changed and a port refreshed its views: REPORTED LUNS
/// DATA HAS CHANGED for that nexus on every LUN it still sees.
pub(crate) fn luns_changed(views: &[Rc<LunView>]) {
    for v in views {
        v.nx.push_ua(asc::REPORTED_LUNS_DATA_HAS_CHANGED);
    }
}

/// REPORT LUNS went through `port`: its REPORTED LUNS DATA HAS CHANGED
/// conditions are cleared on every LUN.
pub(crate) fn report_luns_done(port: &mut ScsiPort) {
    for id in port.lun_ids() {
        if let Some(v) = port.lun(id) {
            if v.nx.ua_pending() {
                v.nx.clear_ua(Some(asc::REPORTED_LUNS_DATA_HAS_CHANGED));
            }
        }
    }
}

/// Drops every unit attention pending for `port`'s nexus on every LUN (e.g. for
/// a test harness that does not want the POWER ON, RESET of a new nexus).
pub fn clear_unit_attentions(port: &mut ScsiPort) {
    for id in port.lun_ids() {
        if let Some(v) = port.lun(id) {
            v.nx.clear_ua(None);
        }
    }
}

/// The unit attentions pending for `port`'s nexus on LUN `lun`, oldest first.
pub fn pending_unit_attentions(port: &mut ScsiPort, lun: u64) -> Vec<u16> {
    port.lun(lun).map(|v| v.nx.queued_ua()).unwrap_or_default()
}
