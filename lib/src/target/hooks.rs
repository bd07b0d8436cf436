//! What the iSCSI transport plugs into the target model, once, at start
//! ([`TargetModel::set_hooks`](super::TargetModel::set_hooks)).
//!
//! Without hooks (unit tests, or a target built without the transport) portal
//! groups are accepted without listening, `iscsi_get_connections` answers `[]`
//! and target changes tell nobody.
//!
//! Hooks are called on the thread running the RPC (the control reactor), the
//! portal hooks with the model's lock held: they must not call back into the
//! model's mutating methods (reading [`snapshot`](super::TargetModel::snapshot)
//! is fine).

use std::io;
use std::sync::Arc;

use serde_json::Value;

use super::model::{ModelSnapshot, Portal};

/// Listening sockets for portals.
pub trait PortalHooks: Send + Sync {
    /// Binds and listens on `portal` of portal group `pg_tag` (TCP, or RDMA CM
    /// when `portal.iser`). Connections must not be accepted before
    /// [`start`](PortalHooks::start). An error (address in use, no such
    /// address, no RDMA device) fails the RPC that asked, with nothing left
    /// half-created: the model unlistens the group's other portals.
    fn listen(&self, pg_tag: u32, portal: &Portal) -> io::Result<()>;

    /// Starts accepting connections on a portal `listen` succeeded on: right
    /// after `listen` for every portal of the group, or at
    /// `iscsi_start_portal_group` for a group created with `wait`. A transport
    /// that accepts from `listen` on may leave this empty (then `wait` has no
    /// effect).
    fn start(&self, pg_tag: u32, portal: &Portal) {
        let _ = (pg_tag, portal);
    }

    /// Stops listening on `portal` (its group is deleted or the target stops).
    /// Connections already accepted may stay.
    fn unlisten(&self, pg_tag: u32, portal: &Portal);
}

/// The live connections, for `iscsi_get_connections`.
pub trait ConnectionsHook: Send + Sync {
    /// One JSON object per connection, in SPDK's shape (`id`, `cid`, `tsih`,
    /// `initiator_addr`, `target_addr`, `target_node_name`, `lcore_id`, ...).
    fn list(&self) -> Vec<Value>;
}

/// What changed about a target node, for [`TargetHooks::target_changed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetChange {
    /// It was created.
    Created,
    /// A LUN was added (sessions should report REPORTED LUNS DATA HAS CHANGED).
    LunAdded { lun_id: u32 },
    /// Its portal group / initiator group maps changed (existing sessions may no
    /// longer be allowed).
    MapsChanged,
    /// Its CHAP settings changed (they apply to the next logins).
    AuthChanged,
}

/// Told about target node changes, after the snapshot showing them is published.
pub trait TargetHooks: Send + Sync {
    /// Target node `name` changed; `snapshot` shows its new state.
    fn target_changed(&self, snapshot: &Arc<ModelSnapshot>, name: &str, change: &TargetChange) {
        let _ = (snapshot, name, change);
    }

    /// Target node `name` is gone: drop its sessions. The model does not wait.
    fn target_deleted(&self, name: &str);
}

/// The hooks a transport registers. Any may be left out.
#[derive(Clone, Default)]
pub struct Hooks {
    pub portals: Option<Arc<dyn PortalHooks>>,
    pub connections: Option<Arc<dyn ConnectionsHook>>,
    pub targets: Option<Arc<dyn TargetHooks>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("portals", &self.portals.is_some())
            .field("connections", &self.connections.is_some())
            .field("targets", &self.targets.is_some())
            .finish()
    }
}
