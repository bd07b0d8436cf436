//! Command dispatch: every task goes through [`execute`].
//!
//! The dispatcher looks the CDB up in the command tables ([`TABLES`]; one row per
//! operation code and service action, see [`opcodes`](super::opcodes)) and calls
//! the row's handler. REPORT SUPPORTED OPERATION CODES reads the same tables, so
//! what is reported and what is executed cannot disagree.
//!
//! Emulated commands finish synchronously but are completed from this reactor's
//! `scsi_completions` poller, so a transport's callback never runs inside its own
//! `execute` call. Block commands go to the chunked engine in
//! [`blockio`](super::blockio).
//!
//! Other parts of the SCSI layer (unit attentions, reservations, copy offload,
//! task management) plug in here: their command tables go into [`TABLES`], their
//! checks into [`before_command`], and they implement the hooks at the end of
//! this file.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use ferrite_bdev::IoError;
use ferrite_reactor::Poll;

use super::dev::{Lun, LunView, ScsiPort};
use super::opcodes::{self, flags, Command, Handler};
use super::sense::{asc, key, Sense};
use super::task::{status, DataDir, Task, TaskCallback};
use super::{opcode, spc};

/// Every table of commands the dispatcher executes and REPORT SUPPORTED
/// OPERATION CODES reports. Add a part's table here (e.g. `pr::COMMANDS`).
const TABLES: &[&[Command]] = &[
    opcodes::SPC,
    opcodes::SBC,
    super::reserve::COMMANDS,
    super::pr::COMMANDS,
    super::xcopy::COMMANDS,
];

/// What a handler sees besides its task: the port (the I_T nexus) and the LUN.
pub(crate) struct Ctx<'a> {
    pub port: &'a mut ScsiPort,
    pub view: Rc<LunView>,
}

/// Where a task goes when it is finished: hand the task to [`Done::finish`].
pub(crate) struct Done {
    callback: Rc<dyn TaskCallback>,
    tag: u64,
}

impl Done {
    pub(crate) fn finish(self, task: Task) {
        finish(self.callback, self.tag, task);
    }
}

/// A task on its way back, with the task management functions waiting for it.
type Finished = (Rc<dyn TaskCallback>, u64, Task, super::tmf::Released);

thread_local! {
    static FINISHED: RefCell<VecDeque<Finished>> = RefCell::new(VecDeque::with_capacity(1024));
    static POLLER: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn ensure_poller() {
    if !POLLER.with(|p| p.replace(true)) {
        ferrite_reactor::register_poller("scsi_completions", poll_finished);
    }
}

fn poll_finished() -> Poll {
    let mut n = 0;
    while let Some((cb, tag, task, aborts)) = FINISHED.with(|f| f.borrow_mut().pop_front()) {
        cb.task_done(tag, task);
        // Only now: a function waiting on another reactor must not answer
        // before its aborted task has reached the transport.
        super::tmf::release(aborts);
        n += 1;
    }
    Poll::from_work(n > 0)
}

/// Hands `task` back to its transport from the completion poller. Sense goes
/// back in descriptor format when the LUN asks for it (D_SENSE).
/// A task the initiator flagged as a write carries no Data-In: its data-out is
/// dropped here.
pub(crate) fn finish(callback: Rc<dyn TaskCallback>, tag: u64, mut task: Task) {
    if task.dir == DataDir::Write {
        task.data.clear();
    }
    let aborts = super::tmf::untrack(&mut task);
    if task.desc_sense && task.status == status::CHECK_CONDITION {
        task.sense = task.sense.to_descriptor();
    }
    FINISHED.with(|f| f.borrow_mut().push_back((callback, tag, task, aborts)));
}

pub(crate) fn execute(
    port: &mut ScsiPort,
    mut task: Task,
    callback: Rc<dyn TaskCallback>,
    tag: u64,
) {
    ensure_poller();
    task.good();
    task.cmd_len = 0;
    task.desc_sense = false;
    let done = Done { callback, tag };
    let Some(view) = port.lun(task.lun) else {
        // Commands that answer for the device as a whole, LUN or not.
        match task.opcode() {
            opcode::REPORT_LUNS => spc::report_luns_for(port, &mut task),
            opcode::INQUIRY | opcode::REQUEST_SENSE => spc::no_lun(&mut task),
            _ => task.check(Sense::new(
                key::ILLEGAL_REQUEST,
                asc::LOGICAL_UNIT_NOT_SUPPORTED,
            )),
        }
        return done.finish(task);
    };
    task.desc_sense = view.lun.mode.d_sense();
    // No command here moves data both ways (XDWRITEREAD is obsolete and not
    // implemented): a task the transport got as bidirectional is refused
    // before it touches the medium or returns any data.
    if task.dir == DataDir::Bidi {
        task.invalid_opcode();
        return done.finish(task);
    }
    let cmd = match lookup(task.cdb()) {
        Lookup::Found(cmd) if cmd.available(&view) => cmd,
        Lookup::BadServiceAction => {
            task.invalid_field(1, Some(4));
            return done.finish(task);
        }
        _ => {
            task.invalid_opcode();
            return done.finish(task);
        }
    };
    let mut ctx = Ctx { port, view };
    if !before_command(&mut ctx, cmd, &mut task) {
        return done.finish(task);
    }
    if cmd.flags & flags::MEDIUM_WRITE != 0 && ctx.view.lun.mode.swp() {
        task.write_protected();
        return done.finish(task);
    }
    match cmd.handler {
        Handler::Now(f) => {
            f(&mut ctx, &mut task);
            done.finish(task);
        }
        Handler::Later(f) => f(&mut ctx, task, done),
    }
}

/// Checks that run after the command is known and before its handler: unit
/// attentions and reservation conflicts go here. Returns false when the task
/// has been given its ending status (it is then finished as it is).
fn before_command(ctx: &mut Ctx<'_>, cmd: &'static Command, task: &mut Task) -> bool {
    super::state::before_command(ctx, cmd, task)
}

// ---- the command index ----

/// All commands of all tables, by operation code then service action, with
/// where each operation code's rows start.
struct Index {
    cmds: Vec<&'static Command>,
    first: [u16; 256],
    count: [u8; 256],
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut cmds: Vec<&'static Command> = TABLES.iter().flat_map(|t| t.iter()).collect();
        cmds.sort_by_key(|c| (c.opcode, c.service_action));
        for w in cmds.windows(2) {
            assert!(
                (w[0].opcode, w[0].service_action) != (w[1].opcode, w[1].service_action),
                "{} and {} have the same operation code and service action",
                w[0].name,
                w[1].name
            );
            assert!(
                w[0].opcode != w[1].opcode
                    || (w[0].service_action.is_some() && w[1].service_action.is_some()),
                "opcode {:#04x} mixes rows with and without service actions",
                w[0].opcode
            );
        }
        let mut first = [0u16; 256];
        let mut count = [0u8; 256];
        for (i, c) in cmds.iter().enumerate().rev() {
            first[c.opcode as usize] = i as u16;
            count[c.opcode as usize] += 1;
        }
        Index { cmds, first, count }
    })
}

/// Every supported command, by operation code and service action.
pub(crate) fn commands() -> &'static [&'static Command] {
    &index().cmds
}

/// The rows of operation code `op` (several when it has service actions).
pub(crate) fn rows(op: u8) -> &'static [&'static Command] {
    let ix = index();
    let first = ix.first[op as usize] as usize;
    &ix.cmds[first..first + ix.count[op as usize] as usize]
}

pub(crate) enum Lookup {
    Found(&'static Command),
    /// The operation code is known but not with this service action.
    BadServiceAction,
    Unknown,
}

/// The service action field of a CDB whose operation code has service actions.
pub(crate) fn service_action(cdb: &[u8]) -> u16 {
    if cdb[0] == opcode::VARIABLE_LENGTH {
        if cdb.len() >= 10 {
            u16::from_be_bytes([cdb[8], cdb[9]])
        } else {
            0
        }
    } else {
        (cdb[1] & 0x1f) as u16
    }
}

/// Finds the command a CDB asks for.
pub(crate) fn lookup(cdb: &[u8]) -> Lookup {
    if cdb.is_empty() {
        return Lookup::Unknown;
    }
    let rows = rows(cdb[0]);
    match rows.first() {
        None => Lookup::Unknown,
        Some(c) if c.service_action.is_none() => Lookup::Found(c),
        Some(_) => {
            if cdb.len() < 2 {
                return Lookup::BadServiceAction;
            }
            let sa = service_action(cdb);
            match rows.iter().find(|c| c.service_action == Some(sa)) {
                Some(c) => Lookup::Found(c),
                None => Lookup::BadServiceAction,
            }
        }
    }
}

/// The sense data a failed bdev I/O maps to.
pub(crate) fn sense_for(e: IoError, write: bool) -> Sense {
    match e {
        IoError::OutOfRange => Sense::new(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE),
        IoError::Miscompare { offset } => {
            Sense::new(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY)
                .with_information(offset.min(u32::MAX as u64) as u32)
        }
        // No INFORMATION: the device did not say which byte differs.
        IoError::DeviceMiscompare => Sense::new(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY),
        IoError::Unsupported | IoError::BadLength => {
            Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB)
        }
        IoError::Aborted | IoError::NoResources | IoError::Removed => {
            Sense::new(key::ABORTED_COMMAND, asc::NO_ADDITIONAL_SENSE)
        }
        // The device went away (an NVMe namespace removed under us).
        IoError::Device(libc::ENODEV | libc::ENXIO) => {
            Sense::new(key::NOT_READY, asc::MEDIUM_NOT_PRESENT)
        }
        IoError::Device(libc::EROFS | libc::EACCES) if write => {
            Sense::new(key::DATA_PROTECT, asc::WRITE_PROTECTED)
        }
        // A protection information check failed.
        IoError::Device(libc::EILSEQ) => {
            Sense::new(key::ABORTED_COMMAND, asc::LOGICAL_BLOCK_GUARD_CHECK_FAILED)
        }
        IoError::Device(_) if write => Sense::new(key::MEDIUM_ERROR, asc::WRITE_ERROR),
        IoError::Device(_) => Sense::new(key::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR),
    }
}

// ---- hooks for the other parts of the SCSI layer ----

/// A MODE SELECT on this port changed `lun`'s mode parameters: every other I_T
/// nexus should see MODE PARAMETERS CHANGED (unit attention; SPC-4 7.5.1).
pub(crate) fn mode_parameters_changed(port: &ScsiPort, lun: &Arc<Lun>) {
    super::ua::mode_parameters_changed(port, lun);
}

/// REQUEST SENSE: the sense this nexus has pending for `lun` (a unit attention
/// or deferred error), taken off the queue. `None` answers NO SENSE.
pub(crate) fn take_pending_sense(port: &mut ScsiPort, lun: &Arc<Lun>) -> Option<Sense> {
    super::ua::take_pending_sense(port, lun)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_errors_map_to_their_sense() {
        let s = |e, w| {
            let s = sense_for(e, w);
            (s.key(), s.asc_ascq(), s.information())
        };
        assert_eq!(
            s(IoError::DeviceMiscompare, false),
            (key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY, None)
        );
        assert_eq!(
            s(IoError::Miscompare { offset: 7 }, true),
            (key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY, Some(7))
        );
        assert_eq!(
            s(IoError::Device(libc::ENODEV), false),
            (key::NOT_READY, asc::MEDIUM_NOT_PRESENT, None)
        );
        assert_eq!(
            s(IoError::Device(libc::EROFS), true),
            (key::DATA_PROTECT, asc::WRITE_PROTECTED, None)
        );
        assert_eq!(
            s(IoError::Device(libc::EILSEQ), false),
            (
                key::ABORTED_COMMAND,
                asc::LOGICAL_BLOCK_GUARD_CHECK_FAILED,
                None
            )
        );
        assert_eq!(
            s(IoError::Device(libc::EIO), true),
            (key::MEDIUM_ERROR, asc::WRITE_ERROR, None)
        );
        assert_eq!(
            s(IoError::Device(libc::EIO), false),
            (key::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR, None)
        );
    }
}
