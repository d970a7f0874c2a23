#!/usr/bin/env bash
# Ingest latency while the janitor purges a large attempt log: seeds N expired attempt rows
# (default 1,000,000), then runs the bench's fixed-concurrency load twice against the same
# api and worker, once alone and once with `janitor --once` started at the same moment, and
# prints both latency lines and how long the janitor took. 127.0.0.1 only; the database and
# NATS namespace are its own and are removed at the end.
#
#   bench/janitor-under-load.sh [attempts] [seconds]   # needs NATS_URL (2.10+), PostgreSQL
set -euo pipefail

attempts=${1:-1000000}
seconds=${2:-30}
# shellcheck source=bench/scratch-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/scratch-env.sh" janitor
start_api
target/release/worker >"$work_dir/worker.log" 2>&1 &
pids+=($!)

echo "seeding $attempts attempt rows older than the 72h retention"
psql -q "$database_url" <<EOF
INSERT INTO subscriptions (id, target_url) VALUES (gen_random_uuid(), 'http://127.0.0.1:9/');
INSERT INTO deliveries (id, subscription_id, payload, status, attempt_count)
    SELECT gen_random_uuid(), (SELECT id FROM subscriptions), '\x7b7d', 'delivered', 10
    FROM generate_series(1, ceil($attempts / 10.0)::int);
INSERT INTO delivery_attempts (id, delivery_id, subscription_id, target_url, attempt_number,
                               attempted_at, outcome, status_code, duration_ms)
    SELECT gen_random_uuid(), d.id, d.subscription_id, 'http://127.0.0.1:9/', n,
           now() - interval '100 hours', 'failed_attempt', 500, 3
    FROM deliveries d CROSS JOIN generate_series(1, 10) AS n
    LIMIT $attempts;
VACUUM ANALYZE;
EOF

run_bench() {
    target/release/bench --external-url "http://127.0.0.1:$port" --mode concurrency \
        --duration "${seconds}s" --json-out "$work_dir/$1.json" 2>/dev/null |
        grep -E 'accepted /s|latency p(50|99|99\.9) ms|latency max'
}

echo "== load alone"
run_bench alone

echo "== load while the janitor purges"
started=$(date +%s.%N)
(RUST_LOG=info target/release/janitor --once >"$work_dir/janitor.log" 2>&1
 echo "janitor finished after $(echo "$(date +%s.%N) - $started" | awk '{print $1 - $3}') s" \
     >"$work_dir/janitor.took") &
janitor=$!
pids+=("$janitor")
run_bench with-janitor
wait "$janitor" || true
cat "$work_dir/janitor.took"
echo "janitor's report:"
grep -v async_nats "$work_dir/janitor.log" | tail -n 1
