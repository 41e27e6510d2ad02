#!/usr/bin/env bash
# Drives the gateway's vote routes, the gateway floor's (hyper and tonic
# alone translating each vote: `votemesh-loadgen --gateway-floor-server`)
# and the vote service directly, one after the other, and says how much
# CPU each process spent per vote: the
# quick loop behind the "Gateway" findings in docs/BENCHMARKS.md (the full
# suite, `cargo bench -p votemesh-loadgen --bench suite`, is the reference figure).
#
#   cargo build --release --bins -p votemesh-vote -p votemesh-result -p votemesh-gateway -p votemesh-loadgen
#   tools/gateway-profile.sh [BIN_DIR] [SECONDS]            # target/release 5
#
# Environment: CONCURRENCY (64), REDIS_PORT (6392), PERF=1 to record the
# gateway with `perf` during the JSON run (the report lands in
# $PERF_OUT, default /tmp/gateway.perf.txt). It starts its own
# redis-server in a temporary directory, the vote service on it, the
# result service on its embedded store and the gateway; no worker runs, so
# the votes stay queued (as in the suite's ingest runs). Each run is the
# load generator, closed loop, new voters from a pool of 100,000.
set -euo pipefail

BIN=${1:-target/release}
SECONDS_PER_RUN=${2:-5}
CONCURRENCY=${CONCURRENCY:-64}
REDIS_PORT=${REDIS_PORT:-6392}
PERF_OUT=${PERF_OUT:-/tmp/gateway.perf.txt}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --save '' --appendonly no --daemonize yes \
    --logfile "$WORK/redis.log"
export RUST_LOG=warn
REDIS_URL=redis://127.0.0.1:$REDIS_PORT VOTE_LISTEN_ADDR=127.0.0.1:5191 \
    "$BIN/votemesh-vote" >"$WORK/vote.log" 2>&1 &
PIDS+=($!); vote_pid=$!
RESULT_LISTEN_ADDR=127.0.0.1:5192 "$BIN/votemesh-result" >"$WORK/result.log" 2>&1 &
PIDS+=($!)
GATEWAY_LISTEN_ADDR=127.0.0.1:3191 VOTE_ADDR=http://127.0.0.1:5191 RESULT_ADDR=http://127.0.0.1:5192 \
    "$BIN/votemesh-gateway" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!); gateway_pid=$!
"$BIN/votemesh-loadgen" --gateway-floor-server --listen 127.0.0.1:3193 \
    --vote-addr http://127.0.0.1:5191 >"$WORK/floor.log" 2>&1 &
PIDS+=($!); floor_pid=$!
redis_pid=$(pgrep -f "redis-server.*:$REDIS_PORT")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_us=$((1000000 / $(getconf CLK_TCK)))

# One closed-loop run in `mode` (grpc, form, json; floor-form and
# floor-json go to the gateway floor); prints calls/s and CPU µs per call,
# the "gateway" column being the floor's in the floor runs.
run() {
    local mode=$1 target=() gateway_pid=$gateway_pid
    case $mode in
        grpc) target=(--vote-addr http://127.0.0.1:5191) ;;
        floor-*) target=(--gateway-url http://127.0.0.1:3193); gateway_pid=$floor_pid; mode=${mode#floor-} ;;
        *) target=(--gateway-url http://127.0.0.1:3191) ;;
    esac
    local before_gw before_vote before_redis
    before_gw=$(cpu_ticks "$gateway_pid"); before_vote=$(cpu_ticks "$vote_pid"); before_redis=$(cpu_ticks "$redis_pid")
    "$BIN/votemesh-loadgen" --mode "$mode" "${target[@]}" -c "$CONCURRENCY" -d "${SECONDS_PER_RUN}s" \
        --voters 100000 --wait-for-target --progress-every 0 --json >"$WORK/$mode.json" 2>"$WORK/$mode.err"
    local calls
    calls=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["ok"], r["seconds"], r["failed"])' "$WORK/$mode.json")
    local seconds failed
    read -r calls seconds failed <<<"$calls"
    per_call() { echo "scale=1; ($1) * $tick_us / $calls" | bc; }
    local gateway vote redis
    gateway=$(per_call "$(cpu_ticks "$gateway_pid") - $before_gw")
    vote=$(per_call "$(cpu_ticks "$vote_pid") - $before_vote")
    redis=$(per_call "$(cpu_ticks "$redis_pid") - $before_redis")
    # The vote service does the same work for every mode, so the gateway's
    # cost in units of it is steadier than µs on a machine whose speed
    # drifts (shared cores): compare that column between builds.
    printf '%-10s %6.0f calls/s (%s failed)   CPU µs per call: gateway %6s  vote %6s  redis %6s   gateway/vote %s\n' \
        "$1" "$(echo "$calls / $seconds" | bc -l)" "$failed" "$gateway" "$vote" "$redis" \
        "$(echo "scale=2; $gateway / $vote" | bc)"
}
run grpc
run floor-form
run form
run floor-json
if [ "${PERF:-0}" = 1 ]; then
    perf record -e cpu-clock -F 2000 -g -p "$gateway_pid" -o "$WORK/perf.data" \
        -- sleep "$SECONDS_PER_RUN" >/dev/null 2>&1 &
    perf_pid=$!
    run json
    wait "$perf_pid" || true
    cp "$WORK/perf.data" /tmp/gateway.perf.data; perf report -i "$WORK/perf.data" --stdio --no-children --sort sym -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -60 >"$PERF_OUT"
    echo "perf: $PERF_OUT"
else
    run json
fi
