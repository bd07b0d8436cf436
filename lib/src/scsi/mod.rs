//! The SCSI target core: SPC-4/SBC-3 emulation over bdevs, shared by every
//! transport (iSCSI, iSER, SRP).
//!
//! A transport keeps one [`ScsiPort`] per I_T nexus on the session's reactor and
//! calls [`ScsiPort::execute`] with a [`Task`]; the task comes back through a
//! [`TaskCallback`] with its status, sense and (for reads) data. Task data is a
//! list of arena buffers, `MAX_BUF_SIZE` each but the last, lent to the bdev
//! without copying.

mod aptpl;
mod blockio;
pub mod cdb;
pub mod dev;
mod exec;
pub mod mode;
pub mod opcode;
mod opcodes;
pub mod pr;
mod reserve;
mod sbc;
pub mod sense;
mod spc;
mod state;
pub mod task;
mod tid;
pub mod tmf;
pub mod ua;
pub mod vpd;
pub mod xcopy;

pub use aptpl::{pr_dir, set_pr_dir};
pub use cdb::{decode_lun, encode_lun};
pub use dev::{Lun, Nexus, ScsiDev, ScsiPort};
pub use mode::ModeState;
pub use sense::Sense;
pub use task::{status, DataDir, Task, TaskAttr, TaskCallback, TaskData, MAX_CDB};
pub use tmf::TmfResponse;
