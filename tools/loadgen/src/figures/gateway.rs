//! Gateway: the full path (browser form and JSON votes through the
//! gateway) next to CastVote sent to the vote service directly, and to
//! the same votes through the gateway floor (`votemesh-loadgen
//! --gateway-floor-server`: hyper and tonic alone translating each vote),
//! with the worker draining.

use super::{Load, Process, Suite, ratio};

impl Suite {
    /// Writes the gateway table.
    pub(super) async fn gateway_votes(
        &mut self,
        vote: &Process,
        worker: &Process,
        gateway: &Process,
        c_mid: usize,
    ) {
        let size = self.size.clone();
        self.line(format!(
            "\n## Gateway: HTTP votes vs CastVote direct (worker draining)\n\n\
             Closed loop, c={c_mid}, {:?} each; the HTTP modes use one HTTP/1.1 connection per caller. \
             The gateway floor is `votemesh-loadgen --gateway-floor-server`: the same routes \
             served by hyper and tonic alone (no router, layers, tracing, metrics, retries, \
             balancing or limits), calling the same vote service.\n\n\
             | route | votes/s | p50 ms | p99 ms | failed | ratio to CastVote direct |\n|---|---|---|---|---|---|",
            size.run
        ));
        let direct = self
            .load_metered(
                "gateway run: CastVote direct",
                &[vote, worker],
                Load::closed_loop(
                    "grpc",
                    vote.url(),
                    c_mid,
                    size.run,
                    size.voters,
                    "direct".into(),
                ),
            )
            .await;
        self.counted(&direct);
        let floor = self
            .floor_server(
                "gateway-floor",
                "LOADGEN_GATEWAY_FLOOR_SERVER",
                &[("VOTE_ADDR", vote.url())],
            )
            .await;
        for mode in ["grpc", "form", "json", "floor-form", "floor-json"] {
            let summary = if mode == "grpc" {
                direct.clone()
            } else if let Some(floor_mode) = mode.strip_prefix("floor-") {
                let summary = self
                    .load_metered(
                        &format!("gateway floor {floor_mode}"),
                        &[&floor, vote, worker],
                        Load::closed_loop(
                            floor_mode,
                            floor.url(),
                            c_mid,
                            size.run,
                            size.voters,
                            format!("floor-{floor_mode}"),
                        ),
                    )
                    .await;
                self.counted(&summary);
                summary
            } else {
                let summary = self
                    .load_metered(
                        &format!("gateway {mode}"),
                        &[gateway, vote, worker],
                        Load::closed_loop(
                            mode,
                            gateway.url(),
                            c_mid,
                            size.run,
                            size.voters,
                            format!("gateway-{mode}"),
                        ),
                    )
                    .await;
                self.counted(&summary);
                summary
            };
            let route = match mode {
                "grpc" => "CastVote (gRPC, direct)",
                "form" => "gateway `POST /vote` (form)",
                "json" => "gateway `POST /api/vote` (JSON)",
                "floor-form" => "gateway floor `POST /vote` (form)",
                _ => "gateway floor `POST /api/vote` (JSON)",
            };
            self.line(format!(
                "| {route} | {:.0} | {:.2} | {:.2} | {} | {:.2} |",
                summary.throughput,
                summary.latency_ms.p50,
                summary.latency_ms.p99,
                summary.failed,
                ratio(summary.throughput, direct.throughput)
            ));
        }
        floor.stop().await;
    }
}
