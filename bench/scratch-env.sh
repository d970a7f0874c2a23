# shellcheck shell=bash
# Sourced by the bench scripts: a database and a NATS namespace of their own, named after
# $1, a work directory, and a trap that stops the processes listed in `pids` and removes
# all of it on exit.

nats_url=${NATS_URL:-nats://127.0.0.1:4222}
admin_url=${ADMIN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
suffix=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
database=hookline_$1_$suffix
namespace=$1$suffix
database_url="${admin_url%/*}/$database"
work_dir=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for stream in "${namespace}_deliveries" "KV_${namespace}_subscriptions"; do
        python3 "$repo_root/bench/nats_request.py" "$nats_url" \
            "\$JS.API.STREAM.DELETE.$stream" >/dev/null 2>&1 || true
    done
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
    rm -rf "$work_dir"
}
trap cleanup EXIT

# Exports the services' settings for this run, starts target/release/api on a port of
# 127.0.0.1 that was free a moment ago, and waits until it is ready. Sets `port` and
# `api_pid`; a worker started afterwards inherits the same settings.
start_api() {
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export DATABASE_URL=$database_url NATS_URL=$nats_url NATS_NAMESPACE=$namespace
    export ALLOW_PRIVATE_TARGETS=true RUST_LOG=warn LOG_FORMAT=json API_ADDR=127.0.0.1:$port
    target/release/api >"$work_dir/api.log" 2>&1 &
    api_pid=$!
    pids+=("$api_pid")
    until curl -sf "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.2; done
}

cd "$repo_root"
psql -q "$admin_url" -c "CREATE DATABASE $database"
