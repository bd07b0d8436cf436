//! What the stacking modules (split, delay, error) share: opening and claiming a
//! base, following its removal, removing several bdevs at once, and a channel for
//! a vbdev whose base is already gone.

use std::sync::{Arc, Mutex};

use crate::{BdevError, BdevEvent, BdevIo, ChannelBackend, Desc, IoError};

type Done = Box<dyn FnOnce(Result<(), BdevError>) + Send>;

/// Opens `base` for writing and claims it for `module`. `on_remove` runs (on this
/// reactor) when the base is being removed; it should unregister the vbdevs built
/// on it, whose destruct then closes the descriptor.
pub(crate) fn open_claimed(
    base: &str,
    module: &'static str,
    on_remove: impl Fn() + 'static,
) -> Result<Desc, BdevError> {
    let desc = crate::open(base, true, move |ev| match ev {
        BdevEvent::Remove => on_remove(),
    })
    .map_err(|e| match e {
        BdevError::NotFound(_) => BdevError::NotFound(format!("base bdev {base} does not exist")),
        e => e,
    })?;
    desc.claim(module)?;
    Ok(desc)
}

/// Unregisters `name` if it is still a bdev of `module` (the base of a vbdev went
/// away). Failures are only logged: nobody waits for this.
pub(crate) fn unregister_if_module(name: &str, module: &'static str) {
    if super::find_of_module(name, module).is_err() {
        return;
    }
    tracing::info!("{module} bdev {name}: its base is being removed, removing it too");
    let n = name.to_string();
    crate::unregister(name, move |res| {
        if let Err(e) = res {
            tracing::error!("{module} bdev {n}: removal failed: {e}");
        }
    });
}

/// Unregisters every bdev in `names` and calls `done` once all are gone, with the
/// first error other than "does not exist" (a name already gone counts as removed).
pub(crate) fn unregister_all(
    names: Vec<String>,
    done: impl FnOnce(Result<(), BdevError>) + Send + 'static,
) {
    struct Pending {
        left: usize,
        first_err: Option<BdevError>,
        done: Option<Done>,
    }
    if names.is_empty() {
        done(Ok(()));
        return;
    }
    let pending = Arc::new(Mutex::new(Pending {
        left: names.len(),
        first_err: None,
        done: Some(Box::new(done)),
    }));
    for name in names {
        let p = pending.clone();
        crate::unregister(&name, move |res| {
            let finished = {
                let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                match res {
                    Ok(()) | Err(BdevError::NotFound(_)) => {}
                    Err(e) => {
                        p.first_err.get_or_insert(e);
                    }
                }
                p.left -= 1;
                if p.left == 0 {
                    let err = p.first_err.take();
                    p.done.take().map(|d| (d, err))
                } else {
                    None
                }
            };
            if let Some((done, err)) = finished {
                done(err.map_or(Ok(()), Err));
            }
        });
    }
}

/// The channel of a vbdev whose base descriptor is already closed: every I/O
/// completes with [`IoError::Removed`].
pub(crate) struct RemovedChannel;

impl ChannelBackend for RemovedChannel {
    fn submit(&mut self, io: BdevIo) {
        io.complete(Err(IoError::Removed));
    }
}

/// Whether each I/O type (indexed like [`crate::IoType::ALL`]) is accepted by `bdev`,
/// natively or emulated: a pass-through vbdev forwards exactly those.
pub(crate) fn supported_types(bdev: &crate::Bdev) -> [bool; 8] {
    crate::IoType::ALL.map(|t| bdev.supports(t))
}
