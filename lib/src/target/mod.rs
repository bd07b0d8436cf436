//! The iSCSI target model: portal groups, initiator groups, target nodes with
//! their LUNs, CHAP auth groups, discovery auth and the global options, built
//! by the `iscsi_*` JSON-RPC methods (SPDK's names and semantics).
//!
//! # For the transport
//!
//! The model is control-path state behind a lock; every change publishes a new
//! immutable [`ModelSnapshot`] (an `Arc`, with a `version` that grows by one per
//! change). The transport reads it at login and discovery time, never on the
//! I/O path:
//!
//! ```
//! use std::net::IpAddr;
//! use ferrite_lib::target::{self, ChapMode, LoginRefusal};
//!
//! let snap = target::snapshot();
//! let from: IpAddr = "127.0.0.1".parse().unwrap();
//! // A normal session's login through portal group 1:
//! match snap.login_target("iqn.2026-11.io.ferrite:disk0", 1, "iqn.1994-05.com.redhat:h1", from) {
//!     Ok(node) => {
//!         let _ = (node.queue_depth, &node.luns, node.header_digest, node.data_digest);
//!         if node.chap.mode() != ChapMode::None {
//!             // CHAP_N names a secret of node.chap.chap_group:
//!             let _secret = snap.chap_secret(node.chap.chap_group, "user");
//!         }
//!     }
//!     Err(LoginRefusal::NotFound) => { /* status 0x0203 */ }
//!     Err(LoginRefusal::NotAllowed(_why)) => { /* status 0x0202 */ }
//! }
//! // A discovery session:
//! let _chap = snap.discovery_chap();
//! let _targets = snap.send_targets("iqn.1994-05.com.redhat:h1", from, Some(from), "All");
//! ```
//!
//! Listening is done by the transport through [`PortalHooks`], registered once
//! at start with [`set_hooks`] together with [`ConnectionsHook`]
//! (`iscsi_get_connections`) and [`TargetHooks`] (target nodes changed or
//! deleted). Without hooks, portal groups are accepted without listening.

mod hooks;
mod model;
mod names;
mod options;
mod rpc;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, OnceLock};

pub use hooks::{ConnectionsHook, Hooks, PortalHooks, TargetChange, TargetHooks};
pub use model::{
    AuthGroup, ChapSecret, DiscoveredTarget, InitiatorGroup, LoginRefusal, Lun, ModelSnapshot,
    PgMap, Portal, PortalGroup, PortalSpec, SecretSpec, TargetAddress, TargetModel, TargetNode,
    TargetNodeSpec, Verdict, MAX_CHAP_LEN, MAX_IG_ENTRIES, MAX_LUN_ID, MAX_PG_TAG, MAX_TAG,
};
pub use names::{
    canonical_ip, check_iscsi_name, full_target_name, InitiatorEntry, NetmaskEntry, MAX_NAME_LEN,
};
pub use options::{ChapMode, ChapSettings, IscsiOptions, OptionsUpdate, DEFAULT_NODE_BASE};
pub use rpc::{register_iscsi_methods, register_iscsi_methods_on, IscsiSubsystem};

/// Why the model refused a change: an errno (positive, `libc::EEXIST`, ...)
/// and a message naming the field or object at fault. JSON-RPC answers it as
/// `-errno`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    pub errno: i32,
    pub message: String,
}

impl ModelError {
    pub fn new(errno: i32, message: impl Into<String>) -> ModelError {
        ModelError {
            errno: errno.abs(),
            message: message.into(),
        }
    }

    /// A bad value (EINVAL).
    pub fn invalid(message: impl Into<String>) -> ModelError {
        ModelError::new(libc::EINVAL, message)
    }

    /// No such group or target node (ENOENT).
    pub fn not_found(message: impl Into<String>) -> ModelError {
        ModelError::new(libc::ENOENT, message)
    }

    /// Already there (EEXIST).
    pub fn exists(message: impl Into<String>) -> ModelError {
        ModelError::new(libc::EEXIST, message)
    }

    /// Still in use (EBUSY).
    pub fn busy(message: impl Into<String>) -> ModelError {
        ModelError::new(libc::EBUSY, message)
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ModelError {}

/// The process's target model, which the `iscsi_*` methods change.
pub fn model() -> &'static Arc<TargetModel> {
    static MODEL: OnceLock<Arc<TargetModel>> = OnceLock::new();
    MODEL.get_or_init(|| Arc::new(TargetModel::new()))
}

/// The current snapshot of the process's target model.
pub fn snapshot() -> Arc<ModelSnapshot> {
    model().snapshot()
}

/// Registers the transport's hooks on the process's target model, once, at
/// start (see [`TargetModel::set_hooks`]).
pub fn set_hooks(hooks: Hooks) -> Result<(), String> {
    model().set_hooks(hooks)
}

/// The iSCSI target node exporting `bdev`, as a sentence, if one does. The bdev
/// delete methods refuse to delete such a bdev.
pub fn bdev_in_use(bdev: &str) -> Option<String> {
    model().bdev_in_use(bdev)
}
