#!/usr/bin/env bash
# Worker memory with a large backlog: queues N deliveries (default 1,000,000) straight into
# PostgreSQL and JetStream, starts target/release/worker against a local receiver, and prints
# the worker's RSS every second for a while. Everything runs on 127.0.0.1, under a database
# and a NATS namespace of its own that are removed at the end.
#
#   bench/backlog-memory.sh [count] [seconds]      # needs NATS_URL (2.10+), PostgreSQL
#
# Rows and jobs are written in bulk rather than through the api: a million requests would
# take ten minutes, and this measures the worker, not ingestion.
set -euo pipefail

count=${1:-1000000}
seconds=${2:-60}
# shellcheck source=bench/scratch-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/scratch-env.sh" backlog
DATABASE_URL=$database_url target/release/migration up >/dev/null

# A receiver that answers 204 to everything, quietly.
python3 - "$work_dir/receiver.port" <<'EOF' &
import http.server, sys
class Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
open(sys.argv[1], "w").write(str(server.server_address[1]))
server.serve_forever()
EOF
pids+=($!)
until [ -s "$work_dir/receiver.port" ]; do sleep 0.1; done
receiver="http://127.0.0.1:$(cat "$work_dir/receiver.port")/hook"

subscription=$(python3 -c 'import uuid; print(uuid.uuid4())')
echo "queueing $count deliveries in PostgreSQL"
psql -q "$database_url" <<EOF
INSERT INTO subscriptions (id, target_url) VALUES ('$subscription', '$receiver');
CREATE TEMP TABLE queued AS
    SELECT gen_random_uuid() AS id FROM generate_series(1, $count);
INSERT INTO deliveries (id, subscription_id, payload, status)
    SELECT id, '$subscription', convert_to('{"n":"' || id || '"}', 'UTF8'), 'queued'
    FROM queued;
\copy (SELECT id FROM queued) TO '$work_dir/ids'
EOF

# The worker creates the stream and its consumer; stop it before queueing so the backlog is
# all there when it starts again.
export DATABASE_URL=$database_url NATS_URL=$nats_url NATS_NAMESPACE=$namespace
export ALLOW_PRIVATE_TARGETS=true RUST_LOG=warn LOG_FORMAT=json
target/release/worker >"$work_dir/setup.log" 2>&1 &
setup_pid=$!
sleep 2
kill "$setup_pid"
wait "$setup_pid" || true

echo "publishing $count jobs to JetStream"
python3 "$repo_root/bench/nats_request.py" "$nats_url" --publish-jobs "$namespace" \
    "$subscription" "$work_dir/ids"

target/release/worker >"$work_dir/worker.log" 2>&1 &
worker_pid=$!
pids+=("$worker_pid")
echo "worker started; RSS every second for ${seconds}s"
peak=0
for second in $(seq 1 "$seconds"); do
    sleep 1
    rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$worker_pid/status")
    delivered=$(psql -Atq "$database_url" \
        -c "SELECT count(*) FROM deliveries WHERE status = 'delivered'")
    if [ "$rss_kib" -gt "$peak" ]; then peak=$rss_kib; fi
    awk -v s="$second" -v r="$rss_kib" -v d="$delivered" \
        'BEGIN { printf "%4d s  rss %6.1f MiB  delivered %d\n", s, r / 1024, d }'
done
awk -v c="$count" -v p="$peak" 'BEGIN { printf "backlog %d, peak worker RSS %.1f MiB\n", c, p / 1024 }'
