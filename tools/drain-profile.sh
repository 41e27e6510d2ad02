#!/usr/bin/env bash
# Times the worker draining a backlog into a fresh PostgreSQL, and says how
# much CPU each process spent on it: the quick loop behind the "Drain"
# findings in docs/BENCHMARKS.md (the full suite, `cargo bench -p
# votemesh-loadgen`, is the reference figure).
#
#   cargo build --release --bins -p votemesh-vote -p votemesh-worker -p votemesh-loadgen
#   tools/drain-profile.sh [BIN_DIR] [VOTES] [VOTERS]     # target/release 300000 30000
#
# Environment: WORKERS (1), BATCH_SIZE (the worker's default), REDIS_PORT
# (6391), PG_PORT (5499). It starts its own redis-server and PostgreSQL
# (Debian's, with the test harness's settings: fsync off) in a temporary
# directory, queues VOTES votes from VOTERS voters through the vote
# service, then starts the workers and times them until the queue and the
# processing lists are empty. Each database is new, as a first deployment's.
set -euo pipefail

BIN=${1:-target/release}
VOTES=${2:-300000}
VOTERS=${3:-30000}
WORKERS=${WORKERS:-1}
REDIS_PORT=${REDIS_PORT:-6391}
PG_PORT=${PG_PORT:-5499}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d)
PG_DATA=$WORK/pgdata
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" stop -m fast >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --save '' --appendonly no --daemonize yes \
    --logfile "$WORK/redis.log"
mkdir -p "$PG_DATA"
[ "$(id -u)" = 0 ] && chown postgres "$WORK" "$PG_DATA"
as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres >/dev/null
as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/log" -w start -o \
    "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null

export REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
export RUST_LOG=warn
VOTE_LISTEN_ADDR=127.0.0.1:5091 "$BIN/votemesh-vote" >"$WORK/vote.log" 2>&1 &
PIDS+=($!)
"$BIN/votemesh-loadgen" --vote-addr http://127.0.0.1:5091 -n "$VOTES" --voters "$VOTERS" \
    -c 64 --wait-for-target --progress-every 0 >"$WORK/load.log" 2>&1
echo "queued: $(redis-cli -p "$REDIS_PORT" llen votes) votes from $VOTERS voters"

cpu_seconds() { for pid in "$@"; do awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null; done | awk '{s += $1} END {printf "%.2f", s / 100}'; }
postgres_pids() { local main; main=$(head -1 "$PG_DATA/postmaster.pid"); echo "$main" $(pgrep -P "$main"); }
redis_pid=$(pgrep -f "redis-server.*:$REDIS_PORT")
pg_before=$(cpu_seconds $(postgres_pids))
redis_before=$(cpu_seconds "$redis_pid")
started=$(date +%s.%N)
WORKER_PIDS=()
for n in $(seq 1 "$WORKERS"); do
    WORKER_LISTEN_ADDR=127.0.0.1:$((5091 + 2 * n)) WORKER_ID=profile-$n "$BIN/votemesh-worker" >"$WORK/worker-$n.log" 2>&1 &
    WORKER_PIDS+=($!)
    PIDS+=($!)
done
queued() { redis-cli -p "$REDIS_PORT" eval "local n = redis.call('LLEN', 'votes') for _, key in ipairs(redis.call('KEYS', 'votes:processing:*')) do n = n + redis.call('LLEN', key) end return n" 0; }
until [ "$(queued)" = 0 ]; do sleep 0.02; done
took=$(echo "$(date +%s.%N) - $started" | bc)
echo "drained in ${took} s: $(echo "$VOTES / $took" | bc) votes/s with $WORKERS worker(s)"
echo "CPU seconds: postgres $(echo "$(cpu_seconds $(postgres_pids)) - $pg_before" | bc)," \
    "redis $(echo "$(cpu_seconds "$redis_pid") - $redis_before" | bc)," \
    "workers $(cpu_seconds "${WORKER_PIDS[@]}") (with their start)"
echo "tally: $(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc "select string_agg(option_id || '=' || count, ' ' order by option_id) from tally")"
