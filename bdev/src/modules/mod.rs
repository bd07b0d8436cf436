//! The bdev modules. Each has typed create/delete entry points whose parameter
//! structs are exactly the JSON-RPC parameters (SPDK's names).

pub mod delay;
pub mod error;
mod iouring;
pub mod malloc;
pub mod null;
pub mod nvme;
pub mod split;
pub mod uring;
mod vbdev;

use crate::{Bdev, BdevError};
use std::sync::Arc;

/// Finds `name` and checks it belongs to `module`.
pub(crate) fn find_of_module(name: &str, module: &str) -> Result<Arc<Bdev>, BdevError> {
    let bdev = crate::get(name)
        .ok_or_else(|| BdevError::NotFound(format!("bdev {name} does not exist")))?;
    if bdev.module() != module {
        return Err(BdevError::NotFound(format!(
            "bdev {name} is a {} bdev, not a {module} bdev",
            bdev.module()
        )));
    }
    Ok(bdev)
}

/// Deletes a bdev of `module` (see [`crate::unregister`]).
pub(crate) fn delete_of_module(
    name: &str,
    module: &str,
    done: impl FnOnce(Result<(), BdevError>) + Send + 'static,
) {
    match find_of_module(name, module) {
        Ok(bdev) => match bdev.claimed_by() {
            // Deleting a base under a vbdev would pull the vbdev's data away; make
            // the operator remove the vbdev first.
            Some(by) => done(Err(BdevError::Busy(format!(
                "bdev {name} is in use by {by}; delete that first"
            )))),
            None => crate::unregister(name, done),
        },
        Err(e) => done(Err(e)),
    }
}

/// Checks a new bdev's name: not empty, not taken.
pub(crate) fn check_new_name(name: &str) -> Result<(), BdevError> {
    if name.is_empty() {
        return Err(BdevError::Invalid("bdev name must not be empty".into()));
    }
    if crate::get(name).is_some() {
        return Err(BdevError::Exists(format!("bdev {name} already exists")));
    }
    Ok(())
}

/// The first free name of the form `{prefix}{n}`.
pub(crate) fn next_free_name(prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|n| crate::get(n).is_none())
        .expect("some name is free")
}
