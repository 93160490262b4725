#!/usr/bin/env bash
# Installs what is missing, builds Berth, makes the demo image, starts a
# local cluster (`berth dev`, in the background) and runs the hello app, so
# that `curl http://127.0.0.1:8080/` returns its page.
#
#   ci/dev.sh          start (or restart) the dev cluster with the demo app
#   ci/dev.sh stop     stop berth dev and remove the demo app
#
# State lives in $BERTH_DATA_DIR (default /var/lib/berth); logs in
# $BERTH_DATA_DIR/dev.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export BERTH_DATA_DIR=${BERTH_DATA_DIR:-/var/lib/berth}
export BERTH_ADDR=${BERTH_ADDR:-127.0.0.1:7700}
berth=target/release/berth
pidfile=$BERTH_DATA_DIR/dev.pid

stop() {
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        # Remove the demo app and wait until the agent has stopped and
        # deleted its container, then stop berth dev itself.
        "$berth" rm hello >/dev/null 2>&1 || true
        for _ in $(seq 100); do
            [[ $("$berth" ps --json 2>/dev/null | tr -d '[:space:]') == "[]" ]] && break
            sleep 0.2
        done
        kill "$(cat "$pidfile")" && rm -f "$pidfile"
        echo "berth dev stopped"
    fi
}

if [[ ${1:-} == stop ]]; then stop; exit 0; fi

ci/setup.sh
cargo build --release --locked -p berth-cli
mkdir -p "$BERTH_DATA_DIR"
ci/make-demo-image.sh "$BERTH_DATA_DIR/demo-image" examples/hello/www >/dev/null

if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"; sleep 1
fi
nohup "$berth" dev >>"$BERTH_DATA_DIR/dev.log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 100); do "$berth" nodes 2>/dev/null | grep -q ready && break; sleep 0.2; done
# Into the node's store, through its agent (a registry works too: see README).
"$berth" image import "$BERTH_DATA_DIR/demo-image"
"$berth" run -f examples/hello/app.yaml
for _ in $(seq 150); do curl -sf http://127.0.0.1:8080/ >/dev/null && break; sleep 0.2; done
curl -sf http://127.0.0.1:8080/ >/dev/null || { echo "the demo page did not come up; see $BERTH_DATA_DIR/dev.log" >&2; "$berth" ps >&2; exit 1; }
"$berth" ps
cat <<MSG

berth dev is running (pid $(cat "$pidfile"), log $BERTH_DATA_DIR/dev.log).
  curl http://127.0.0.1:8080/        the demo page
  https://127.0.0.1:7700/ui/         the dashboard (log in with the token in $BERTH_DATA_DIR/token)
  $berth ps | apps | nodes | logs hello
  ci/dev.sh stop                     stop it
MSG
