//! SRP, the SCSI RDMA Protocol (T10 SRP r16a with the SRP-2 immediate data
//! Linux uses), the protocol side, free of verbs so that it is tested without
//! an RDMA device.
//!
//! - [`iu`]: the information units, decoded in place and encoded without
//!   allocation: SRP_LOGIN_REQ in its IB (64-byte) and RDMA CM (56-byte)
//!   forms, SRP_LOGIN_RSP/REJ, SRP_CMD with direct, indirect and immediate
//!   data buffers, SRP_RSP, SRP_TSK_MGMT, the logouts and credit IUs.
//! - [`login`]: the login decision (target port, initiator ACL, IU sizes,
//!   buffer formats, MULTICHAN_SINGLE/MULTI, immediate data) and its
//!   SRP_LOGIN_RSP or SRP_LOGIN_REJ reason.
//! - [`channel`]: one channel after login as a state machine with one entry,
//!   [`channel::Channel::apply`]: commands into the SCSI layer, data moved by
//!   requests to a data mover, credits, task management, logouts.
//!
//! In SRP the target moves the data: RDMA READ from the initiator's memory
//! descriptors for a write, RDMA WRITE to them for a read, then a SEND of
//! the SRP_RSP. Login happens in the RDMA CM exchange: the connect request's
//! private data is the SRP_LOGIN_REQ, the accept's is the SRP_LOGIN_RSP and
//! a reject's the SRP_LOGIN_REJ.

pub mod channel;
pub mod driver;
pub mod iu;
pub mod login;
pub mod service;
