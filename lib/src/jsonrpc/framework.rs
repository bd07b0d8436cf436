//! The framework's own methods: `rpc_get_methods`, `framework_get_reactors`,
//! `framework_shutdown` and `save_config`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{parse_params, Methods, NoParams, Responder};
use crate::subsystem::Subsystems;

/// What the framework methods need from the application.
#[derive(Clone)]
pub struct Framework {
    /// The subsystems `save_config` asks for their configuration.
    pub subsystems: Arc<Subsystems>,
    /// Starts the application's shutdown sequence. `framework_shutdown` calls it
    /// on its reactor by message after its answer is queued, so the client gets
    /// the answer before the RPC server stops.
    pub shutdown: Arc<dyn Fn() + Send + Sync>,
}

/// Registers the framework methods into `methods`.
pub fn register_framework_methods(methods: &mut Methods, framework: Framework) {
    let names = methods.shared_names();
    methods.register("rpc_get_methods", move |params, resp: Responder| {
        // SPDK's `current` lists the methods allowed in the current state (start-up
        // or running); every method here is allowed in both, and there are no
        // aliases, so both flags are accepted and change nothing.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Params {
            #[serde(default)]
            #[allow(dead_code)]
            current: bool,
            #[serde(default)]
            #[allow(dead_code)]
            include_aliases: bool,
        }
        match parse_params::<Params>(params) {
            Ok(_) => resp.ok(names.sorted()),
            Err(e) => resp.err(e),
        }
    });

    methods.register("framework_get_reactors", |params, resp: Responder| {
        if let Err(e) = parse_params::<NoParams>(params) {
            return resp.err(e);
        }
        ferrite_reactor::for_each_reactor(ferrite_reactor::local_stats, move |stats| {
            resp.ok(ReactorsInfo {
                tick_rate: ferrite_reactor::tick_rate(),
                reactors: stats.into_iter().map(ReactorInfo::from).collect(),
            })
        });
    });

    let shutdown = framework.shutdown.clone();
    methods.register("framework_shutdown", move |params, resp: Responder| {
        if let Err(e) = parse_params::<NoParams>(params) {
            return resp.err(e);
        }
        resp.ok(true);
        // Behind the answer in this reactor's queue, so the answer is sent first.
        let shutdown = shutdown.clone();
        match ferrite_reactor::current_index() {
            Some(here) => {
                if let Err(e) = ferrite_reactor::send(here, Box::new(move || shutdown())) {
                    tracing::error!("framework_shutdown: cannot start the shutdown: {e}");
                }
            }
            None => shutdown(),
        }
    });

    let subsystems = framework.subsystems.clone();
    methods.register(
        "save_config",
        move |params, resp: Responder| match parse_params::<NoParams>(params) {
            Ok(_) => resp.ok(subsystems.save_config()),
            Err(e) => resp.err(e),
        },
    );
}

/// The answer of `framework_get_reactors`.
#[derive(Debug, Serialize)]
struct ReactorsInfo {
    tick_rate: u64,
    reactors: Vec<ReactorInfo>,
}

#[derive(Debug, Serialize)]
struct ReactorInfo {
    lcore: usize,
    index: usize,
    busy: u64,
    idle: u64,
    sleeps: u64,
    in_interrupt: bool,
    pollers: Vec<PollerInfo>,
}

#[derive(Debug, Serialize)]
struct PollerInfo {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    period_us: u64,
    run_count: u64,
    busy_count: u64,
}

impl From<ferrite_reactor::ReactorStats> for ReactorInfo {
    fn from(s: ferrite_reactor::ReactorStats) -> ReactorInfo {
        ReactorInfo {
            lcore: s.core,
            index: s.index,
            busy: s.busy_ticks,
            idle: s.idle_ticks,
            sleeps: s.sleeps,
            in_interrupt: !s.poll_only,
            pollers: s
                .pollers
                .into_iter()
                .map(|p| PollerInfo {
                    name: p.name,
                    kind: if p.timed { "timed" } else { "active" },
                    period_us: p.period_us,
                    run_count: p.run_count,
                    busy_count: p.busy_count,
                })
                .collect(),
        }
    }
}
