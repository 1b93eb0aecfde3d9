#!/usr/bin/env bash
# make demo: the agent on its embedded defaults (no config file), with what a camera board would
# have around it, all on loopback: a mosquitto broker, and gpsd replaying a real receiver log
# (../shared/data/gps/bu353s4.log: Hamilton, New Zealand). Logs are pretty-printed; Ctrl-C stops all.
# DEMO_SECONDS=N stops the demo by itself after N seconds (used by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
demo="${DEMO_DIR:-$root/.demo}"
mkdir -p "$demo"
export PATH="$root/.runtime/node/bin:$PATH"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { local p=$1; while ! port_free "$p"; do p=$((p + 1)); done; echo "$p"; }

mqtt_port=$(pick_port 1883)
gpsd_port=$(pick_port 2947)
gps_log="${DEMO_GPS_LOG:-$root/../shared/data/gps/bu353s4.log}"
[ -f "$gps_log" ] || { echo "demo: GPS log $gps_log not found (the repo is expected beside shared/)" >&2; exit 1; }

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "demo: stopping"
  [ -n "${agent_pid:-}" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

cat > "$demo/mosquitto.conf" <<CONF
user $(id -un)
listener $mqtt_port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $demo/
CONF
setsid mosquitto -c "$demo/mosquitto.conf" >"$demo/mosquitto.log" 2>&1 &
pids+=($!)
# gpsfake ignores SIGTERM: timeout -k bounds it, and its own session lets cleanup reach gpsd too.
setsid timeout -k 3 86400 gpsfake -q -n -P "$gpsd_port" -c 0.2 "$gps_log" >"$demo/gpsfake.log" 2>&1 &
pids+=($!)
sleep 1

device_id=${BWC_DEVICE_ID:-demo-cam-1}
cat <<INFO
demo: broker   mqtt://127.0.0.1:$mqtt_port   (watch: mosquitto_sub -h 127.0.0.1 -p $mqtt_port -t 'bwc/v1/#' -v)
demo: gpsd     127.0.0.1:$gpsd_port replaying $(basename "$gps_log")
demo: agent    device $device_id, state in $demo/state   (status: BWC_STATE_DIR=$demo/state bin/bwc-agent ctl status)
demo: Ctrl-C stops everything
INFO

BWC_DEVICE_ID=$device_id BWC_MQTT_URL="mqtt://127.0.0.1:$mqtt_port" BWC_GPSD="127.0.0.1:$gpsd_port" BWC_STATE_DIR="$demo/state" \
  bin/bwc-agent run > >(node node_modules/pino-pretty/bin.js --colorize --translateTime SYS:HH:MM:ss.l --ignore pid,hostname) 2>&1 &
agent_pid=$!
# `wait` (not a foreground sleep) so Ctrl-C is handled at once; an agent that stops ends the demo
# with its exit status.
if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS" &
  timer=$!
  status=0
  wait -n "$agent_pid" "$timer" || status=$?
  if ! kill -0 "$agent_pid" 2>/dev/null; then
    wait "$agent_pid" || status=$?
    echo "demo: the agent stopped (exit $status)" >&2
    agent_pid=""
    exit "$status"
  fi
else
  status=0
  wait "$agent_pid" || status=$?
  agent_pid=""
  exit "$status"
fi
