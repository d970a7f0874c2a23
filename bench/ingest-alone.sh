#!/usr/bin/env bash
# Ingestion with no worker running: starts target/release/api alone, runs the bench's
# fixed-concurrency load against it, and prints the ingest figures and the CPU that
# PostgreSQL, nats-server and the api spent per accepted webhook. This is the most one
# machine can ingest when nothing else competes for it, and what each component costs.
# 127.0.0.1 only; the database and NATS namespace are its own and are removed at the end.
#
#   bench/ingest-alone.sh [seconds] [concurrency]   # needs NATS_URL (2.10+), PostgreSQL
#
# Nothing is delivered, so the bench's own delivery checks fail by design and are not shown.
# CPU is summed over every process named postgres or nats-server on the machine: run it on
# a quiet one.
set -euo pipefail

seconds=${1:-20}
concurrency=${2:-64}
# shellcheck source=bench/scratch-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/scratch-env.sh" ingest
start_api

# CPU ticks (user + system) of the processes whose name matches $1, or of pid $2.
cpu_ticks() {
    local total=0 stat fields
    for stat in /proc/[0-9]*/stat; do
        [ -n "${2:-}" ] && [ "$stat" != "/proc/$2/stat" ] && continue
        stat=$(cat "$stat" 2>/dev/null) || continue
        [[ ${stat#*(} =~ ^$1\) ]] || continue
        read -r -a fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}
snapshot() { echo "$(cpu_ticks postgres) $(cpu_ticks nats-server) $(cpu_ticks api "$api_pid")"; }

read -r -a before <<<"$(snapshot)"
target/release/bench --external-url "http://127.0.0.1:$port" --mode concurrency \
    --concurrency "$concurrency" --duration "${seconds}s" --warmup 0s \
    --drain-timeout 1s --settle 0s --json-out "$work_dir/bench.json" \
    >"$work_dir/bench.out" 2>/dev/null || true
read -r -a after <<<"$(snapshot)"

grep -E 'accepted \(202\)|accepted /s|latency p(50|90|99|99\.9) ms|latency max|errors by' \
    "$work_dir/bench.out"
accepted=$(awk '/accepted \(202\)/ {print $3}' "$work_dir/bench.out")
hz=$(getconf CLK_TCK)
names=(postgres nats-server api)
for i in 0 1 2; do
    awk -v name="${names[$i]}" -v ticks=$((after[i] - before[i])) -v hz="$hz" \
        -v accepted="$accepted" 'BEGIN {
        cpu = ticks / hz
        printf "  %-12s CPU %5.1f s, %4.0f us per accepted webhook\n",
            name, cpu, 1e6 * cpu / accepted
    }'
done
