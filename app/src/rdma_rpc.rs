//! `rdma_get_stats`: what the RDMA layer holds now (CM ids, queue pairs, and
//! per reactor its connections and receive queues), so that tests can check
//! that a connection ended without leaking any of them.

use ferrite_lib::jsonrpc::{parse_params, Methods, NoParams, Responder};
use ferrite_transport::rdma;
use serde_json::json;

/// Registers `rdma_get_stats`.
pub fn register_rdma_methods(methods: &mut Methods) {
    methods.register("rdma_get_stats", |params, resp: Responder| {
        if let Err(e) = parse_params::<NoParams>(params) {
            return resp.err(e);
        }
        ferrite_reactor::for_each_reactor(
            || (ferrite_reactor::current_index(), rdma::local_stats()),
            move |per_reactor| {
                // Process-wide, read once every reactor has answered.
                let (cm_ids, qps) = rdma::live_counts();
                let reactors: Vec<_> = per_reactor
                    .into_iter()
                    .map(|(index, s)| {
                        json!({
                            "index": index,
                            "conns": s.conns,
                            "closing": s.closing,
                            "devices": s.devices,
                            "posted_recvs": s.posted_recvs,
                            "empty_recv_slots": s.empty_recv_slots,
                            "held_ids": s.held_ids,
                        })
                    })
                    .collect();
                resp.ok(json!({ "cm_ids": cm_ids, "qps": qps, "reactors": reactors }));
            },
        );
    });
}
