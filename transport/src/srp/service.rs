//! The SRP service's place in the target: the hooks the SRP target model
//! (`ferrite_lib::srp`) calls when targets are created and deleted.
//!
//! The RDMA CM listener that logs channels in (the [`login`](super::login)
//! decision, [`Channel`](super::channel::Channel)s on the reactors' queue
//! pairs) is not built yet, so every target is created *inactive* with the
//! reason: no RDMA device on this machine, or the listener missing.

use std::sync::Arc;

use ferrite_lib::srp::{SrpHooks, SrpTarget};

use crate::rdma;

struct Hooks;

impl SrpHooks for Hooks {
    fn listen(&self, _target: &SrpTarget) -> Result<(), String> {
        match rdma::pin_devices() {
            Ok(0) => Err("no RDMA device".into()),
            Err(e) => Err(format!("no RDMA device ({e})")),
            Ok(_) => Err("the SRP RDMA CM listener is not implemented yet".into()),
        }
    }

    fn target_deleted(&self, _name: &str) {}
}

/// Plugs the SRP service into the SRP target model. Call once at start.
pub fn start() {
    ferrite_lib::srp::set_hooks(Arc::new(Hooks));
}
