#!/usr/bin/env bash
# Heap profile of one votemesh component under open-loop load, with
# heaptrack (Debian/Ubuntu: apt-get install heaptrack; Fedora: dnf install
# heaptrack). heaptrack records every allocation with its call stack at a
# small cost; at the end this prints what was still allocated when the
# component stopped (what grows with the votes) and what allocated most.
#
#   tools/heap-profile.sh COMPONENT [MINUTES] [RATE]
#     COMPONENT  vote | worker | result | gateway (the one profiled)
#     MINUTES    how long the load runs (default 5)
#     RATE       JSON votes/s through the gateway, open loop (default 2000)
#
# It runs the release binaries against the Redis and PostgreSQL named by
# REDIS_URL and DATABASE_URL (default: redis://127.0.0.1:6379 and
# postgres://postgres@127.0.0.1:5432/postgres), on ports 25000-25003 and
# 25081, nobody scraping /metrics. The raw profile and the printed report
# stay in target/heap/. Findings so far: docs/BENCHMARKS.md, "Soak".
#
# FREEZE_EVERY=15 freezes the vote service for 300 ms every 15 s
# (SIGSTOP/SIGCONT), as the soak benchmark does, so that stalls pile
# requests up in the gateway. The gateway and the vote service are
# profiled built without their default allocator (jemalloc, which
# heaptrack cannot see), with the system's malloc: what they keep
# allocated is the same either way.
set -euo pipefail
cd "$(dirname "$0")/.."

component=${1:?usage: tools/heap-profile.sh vote|worker|result|gateway [minutes] [rate]}
minutes=${2:-5}
rate=${3:-2000}
case "$component" in vote | worker | result | gateway) ;; *)
  echo "unknown component: $component" >&2
  exit 2
  ;;
esac
command -v heaptrack >/dev/null || {
  echo "heaptrack is not installed (apt-get install heaptrack)" >&2
  exit 2
}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}
database_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}

freeze_every=${FREEZE_EVERY:-0}
out=target/heap
mkdir -p "$out"
rm -f "$out/$component".*

# The binary profiled. The gateway and the vote service run on jemalloc:
# the one profiled is built on malloc first and kept aside, so that
# target/release/ is left on jemalloc for everything else.
profiled_binary=target/release/votemesh-$component
if [[ $component == gateway || $component == vote ]]; then
  cargo build --release -q -p "votemesh-$component" --no-default-features
  profiled_binary=$out/votemesh-$component-malloc
  cp "target/release/votemesh-$component" "$profiled_binary"
fi
cargo build --release -q -p votemesh-vote -p votemesh-worker -p votemesh-result \
  -p votemesh-gateway -p votemesh-loadgen

pids=()
# The profiled component runs as heaptrack's child: it is stopped, and
# heaptrack left to finish its profile and exit on its own.
stop_all() {
  if [[ -n ${freezer:-} ]]; then
    kill -TERM "$freezer" 2>/dev/null || true
    wait "$freezer" 2>/dev/null || true
  fi
  for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    pkill -TERM -P "$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  wait || true
}
trap stop_all EXIT

# start NAME ENV... : the component, under heaptrack if it is the one profiled.
start() {
  local name=$1
  shift
  if [[ $name == "$component" ]]; then
    env RUST_LOG=warn "$@" heaptrack -o "$out/$name" "$profiled_binary" &
  else
    env RUST_LOG=warn "$@" "target/release/votemesh-$name" &
  fi
  pids+=($!)
}

start vote VOTE_LISTEN_ADDR=127.0.0.1:25000 REDIS_URL="$redis_url"
vote_pid=${pids[0]}
start result RESULT_LISTEN_ADDR=127.0.0.1:25001 DATABASE_URL="$database_url"
start worker WORKER_LISTEN_ADDR=127.0.0.1:25002 REDIS_URL="$redis_url" DATABASE_URL="$database_url"
start gateway GATEWAY_LISTEN_ADDR=127.0.0.1:25003 GATEWAY_ADMIN_LISTEN_ADDR=127.0.0.1:25081 \
  VOTE_ADDR=http://127.0.0.1:25000 RESULT_ADDR=http://127.0.0.1:25001

if ((freeze_every > 0)); then
  while sleep "$freeze_every"; do
    kill -STOP "$vote_pid" && sleep 0.3
    kill -CONT "$vote_pid" || break
  done &
  freezer=$!
fi

target/release/votemesh-loadgen --mode json --gateway-url http://127.0.0.1:25003 \
  --wait-for-target --rate "$rate" -d "${minutes}m" --voters 200000 --progress-every 60s

stop_all
trap - EXIT
profile=$(ls "$out/$component"*.zst "$out/$component"*.gz 2>/dev/null | head -n1 || true)
heaptrack_print --print-leaks 1 --print-peaks 1 --print-allocators 0 \
  --print-temporary 0 \
  --peak-limit 15 --sub-peak-limit 4 --print-massif "$out/$component.massif" \
  "$profile" >"$out/$component.txt"
echo "profile: $profile"
echo "report:  $out/$component.txt"
# The heap over the run (massif snapshots: seconds, MiB allocated), to
# tell memory that grows from a peak that was reached once.
awk -F= '/^time=/ { t = $2 } /^mem_heap_B=/ { printf "%8.0f s %8.2f MiB\n", t, $2 / 1048576 }' \
  "$out/$component.massif" | awk 'NR % 10 == 1'
# The summary, then the top of the peak consumers (head closing the pipe
# early is expected).
tail -n 6 "$out/$component.txt"
sed -n '/^PEAK MEMORY CONSUMERS/,/^MEMORY LEAKS/p' "$out/$component.txt" | head -60 || true
