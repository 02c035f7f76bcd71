#!/usr/bin/env bash
# `make demo`: start the whole service on this machine (`tabpfn-api dev`), run
# examples/quickstart.py against it, and stop it again. Self-contained: its own
# embedded PostgreSQL and Redis, the emulator, and a throwaway state directory,
# whatever the environment or a .env say. Exits with the quickstart's status.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=$ROOT/.venv/bin/python
READY_TIMEOUT_S=120

# Nothing configured may leak in: no database, broker, key or upstream of the
# caller's, and no emulator or TabPFN settings that would change the demo.
unset DATABASE_URL REDIS_URL SECRET_KEY
for var in $(compgen -e); do
    case $var in TABPFN_* | EMULATOR_*) unset "$var" ;; esac
done

dev_dir=$(mktemp -d "${TMPDIR:-/tmp}/tabpfn-demo.XXXXXX")
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
api_url=http://127.0.0.1:$port
dev_pid=

stop_dev_stack() {
    local status=$?
    if [[ -n $dev_pid ]] && kill -0 "$dev_pid" 2>/dev/null; then
        # SIGINT is Ctrl-C: the dev stack stops its processes and servers.
        kill -INT "$dev_pid"
        wait "$dev_pid" || true
    fi
    rm -rf "$dev_dir"
    exit "$status"
}
trap stop_dev_stack EXIT
trap 'exit 130' INT TERM

# Run from the state directory so that a .env in the project is not read.
(cd "$dev_dir" && TABPFN_API_DEV_DIR=$dev_dir exec "$ROOT/.venv/bin/tabpfn-api" dev --port "$port" --flower-port 0 --workers 1) &
dev_pid=$!

echo "Waiting for $api_url/readyz …"
deadline=$((SECONDS + READY_TIMEOUT_S))
until "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "$api_url/readyz" 2>/dev/null; do
    if ! kill -0 "$dev_pid" 2>/dev/null; then
        echo "demo: the dev stack exited before it was ready (see its output above)." >&2
        exit 1
    fi
    if ((SECONDS > deadline)); then
        echo "demo: the dev stack was not ready within ${READY_TIMEOUT_S}s." >&2
        exit 1
    fi
    sleep 0.5
done
# The dev stack prints where everything is right after it sees /readyz answer;
# give it that moment so its block does not land in the middle of ours.
sleep 1

echo
echo "=== examples/quickstart.py ==="
echo "(offline: TabPFN is played by the local emulator, whose predictions come from a"
echo " small scikit-learn stand-in model; point TABPFN_API_URL at the real cloud for TabPFN)"
status=0
API_URL=$api_url TABPFN_TOKEN=demo-token "$PYTHON" "$ROOT/examples/quickstart.py" || status=$?
echo
exit "$status"
