//! iSCSI protocol logic (RFC 7143, ErrorRecoveryLevel 0), free of I/O so that
//! the TCP mover and the iSER mover (RFC 7145) share it.
//!
//! - [`pdu`]: the 48-byte BHS: decoding initiator PDUs, encoding target PDUs,
//!   AHSs, padding. No allocation.
//! - [`digest`]: CRC32C header and data digests over scatter lists.
//! - [`text`]: key=value text, value encodings, C-bit reassembly/splitting.
//! - [`params`]: the keys and the negotiation engine; [`TargetLimits`] in,
//!   [`SessionParams`]/[`ConnectionParams`] out.
//! - [`chap`]: target-side CHAP (MD5), one-way and mutual.
//! - [`policy`]: the traits the target model implements for login/discovery.
//! - [`login`]: the login phase as a state machine.
//! - [`text_request`]: Text Requests in the full feature phase (SendTargets).
//!
//! A connection's life with this API:
//!
//! ```text
//! read 48 bytes -> SegmentLengths::of -> read AHS, data (+ digests)
//! InitiatorPdu::decode(&bhs)
//!   Login(req)  -> Login::handle(&req, data, policy) -> LoginReply
//!   Text(req)   -> TextExchange::handle(&req, data, ctx, directory) -> TextReply
//!   others      -> session layer; answers built with ScsiResponse, DataIn, R2t, ...
//!   Err(e)      -> Reject { reason: e.reject_reason(), .. } with the BHS as data
//! ```

pub mod chap;
pub(crate) mod conn;
pub mod digest;
mod driver;
mod group;
pub(crate) mod link;
pub mod login;
pub mod params;
pub mod pdu;
pub mod policy;
pub mod service;
mod session;
pub mod text;
pub mod text_request;
pub(crate) mod wire;

pub(crate) use group::{add_link, least_loaded as least_loaded_reactor};
pub use login::{Login, LoginContext, LoginOutcome, LoginProgress, LoginReply};
pub use params::{ConnectionParams, DigestType, SessionParams, SessionType, TargetLimits};
pub use pdu::{Bhs, InitiatorPdu, LoginStatus, RejectReason, BHS_LEN};
pub use policy::{LoginPolicy, TargetDirectory};
pub use text_request::{TextContext, TextExchange, TextReply};
