//! The SRP service's place in the target: the hooks the SRP target model
//! (`ferrite_lib::srp`) calls when targets are created, changed and deleted,
//! the acceptor poller, and the wait for channels to end at shutdown. The
//! work is in [`driver`](super::driver).

use std::sync::Arc;
use std::time::Duration;

use ferrite_lib::srp::{SrpHooks, SrpLun, SrpTarget};
use ferrite_lib::subsystem::FiniDone;
use ferrite_reactor::{self as reactor, Poll};
use serde_json::Value;

use super::driver;

/// How often the acceptor looks for connect requests while the reactor is busy.
const ACCEPT_PERIOD: Duration = Duration::from_millis(1);
/// How long shutdown waits for channels to take their SRP_T_LOGOUT and go.
const LOGOUT_GRACE: Duration = Duration::from_secs(2);

struct Hooks;

impl SrpHooks for Hooks {
    fn listen(&self, target: &SrpTarget) -> Result<(), String> {
        driver::listen(target)
    }

    fn target_deleted(&self, name: &str) {
        driver::target_deleted(name);
    }

    fn lun_added(&self, name: &str, lun: &SrpLun) {
        driver::device_lun_added(name, lun.lun_id, &lun.bdev_name);
    }

    fn channels(&self) -> Vec<Value> {
        driver::channel_list()
    }

    fn shutdown(&self, done: FiniDone) {
        if driver::channel_count() == 0 || !reactor::on_reactor() {
            return done();
        }
        // Targets are gone by now and their channels were sent SRP_T_LOGOUT:
        // wait for them to close, at most the grace period.
        let deadline = reactor::ticks() + reactor::ticks::duration_to_ticks(LOGOUT_GRACE);
        let done = std::cell::RefCell::new(Some(done));
        let id = std::rc::Rc::new(std::cell::Cell::new(None));
        let me = id.clone();
        let poller =
            reactor::register_timed_poller("srp_stop", Duration::from_millis(20), move || {
                if driver::channel_count() > 0 && reactor::ticks() < deadline {
                    return Poll::Idle;
                }
                if driver::channel_count() > 0 {
                    tracing::warn!(
                        "SRP: {} channel(s) still open after the logout grace period",
                        driver::channel_count()
                    );
                }
                if let Some(done) = done.borrow_mut().take() {
                    done();
                }
                if let Some(id) = me.get() {
                    reactor::unregister_poller(id);
                }
                Poll::Busy
            });
        id.set(Some(poller));
    }
}

/// Plugs the SRP service into the SRP target model and starts the acceptor.
/// Call once, on the control reactor, before any SRP target is created.
pub fn start() {
    ferrite_lib::srp::set_hooks(Arc::new(Hooks));
    if !reactor::on_reactor() {
        return;
    }
    // As the iSCSI acceptor: at most once per period while busy; an idle
    // reactor sleeps and a listener's fd wakes it.
    let period = reactor::ticks::duration_to_ticks(ACCEPT_PERIOD);
    let mut next = 0u64;
    reactor::register_poller("srp_accept", move || {
        let now = reactor::ticks();
        if now < next {
            return Poll::Idle;
        }
        next = now + period;
        driver::accept_all()
    });
}
