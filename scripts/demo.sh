#!/usr/bin/env bash
# make demo: the whole product on one machine, on loopback: a mosquitto broker, two cameras (agent
# processes on the `test` capture preset with the simulated firmware), each with gpsd replaying a
# real receiver log from ../shared/data/gps (Hamilton and Dunedin, New Zealand), and the reference
# ops console (ops-console/) whose URL is printed. Sign in as `demo` / `demo-password` and request
# a live view. Logs are pretty-printed; Ctrl-C stops all, and so does whatever else ends the demo:
# SIGTERM or SIGHUP to it or its process group, a closed terminal, a closed log pipe.
#
# Each run starts afresh in $DEMO_DIR (default .demo): new device keys, databases and audit chains,
# so the console sees every camera's chain from its first entry.
# DEMO_SECONDS=N stops the demo by itself after N seconds (used by the tests);
# DEMO_CAPTURE=WxH@FPS sets both cameras' picture (default: the embedded 1280x720@30 for camera 1,
# 640x360@15 for camera 2).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
demo="${DEMO_DIR:-$root/.demo}"
rm -rf "$demo/state" "$demo/state-2" "$demo/issuer" "$demo/mosquitto.db" "$demo"/*.yaml "$demo/users.json" "$demo/force.agekey" "$demo"/ops-console-archive.sqlite*
# The open segment of each camera, in the clear, in RAM only (recording.plaintextDir must be tmpfs).
demo_ram=/dev/shm/bwc-demo-$(id -u)
rm -rf "$demo_ram"
mkdir -p "$demo"
export PATH="$root/.runtime/node/bin:$PATH"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { local p=$1; while ! port_free "$p"; do p=$((p + 1)); done; echo "$p"; }

mqtt_port=$(pick_port 1883)
gpsd_port=$(pick_port 2947)
gpsd2_port=$(pick_port $((gpsd_port + 1)))
console_port=$(pick_port 8080)
gps_log="${DEMO_GPS_LOG:-$root/../shared/data/gps/bu353s4.log}"
gps2_log="$root/../shared/data/gps/ublox-zed-f9p-nmea.log"
for f in "$gps_log" "$gps2_log"; do
  [ -f "$f" ] || { echo "demo: GPS log $f not found (the repo is expected beside shared/)" >&2; exit 1; }
done

# Every process the demo starts runs in its own session (setsid), so a signal for the demo (Ctrl-C,
# a closed terminal's SIGHUP, a process manager's SIGTERM, to this script or to its process group)
# reaches only this script, which then stops everything in order: the cameras first, while the
# broker still takes their last messages, then the services. `pids` holds the services' session
# ids, `agents` the cameras'.
pids=()
agents=()
# Ends the given sessions: SIGTERM (to the leader only, or with "group" to the whole group), up to
# GRACE seconds for the leaders to exit, then SIGKILL to whatever is left in their groups (a leader
# that hung, a capture worker whose agent died, gpsd under a gpsfake that ignores SIGTERM).
# The grace is polled, not `wait -n -p`ed: bash 5.2's `wait -n` interrupted by a trapped signal can
# then report a job that is not in its list.
alive() { # PID: running (bash reaps its children as they end; a zombie counts as ended)
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}
stop_sessions() { # GRACE leader|group PID...
  local grace=$1 how=$2 p tick left
  shift 2
  for p in "$@"; do
    if [ "$how" = group ]; then kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; else kill -TERM "$p" 2>/dev/null; fi
  done
  for ((tick = 0; tick < grace * 10; tick++)); do
    left=0
    for p in "$@"; do alive "$p" && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL -- "-$p" 2>/dev/null; done
}
stop_all() {
  # Once, and to the end: a second signal (an impatient Ctrl-C, a repeated SIGHUP) must not cut the
  # stop short, and a terminal or log pipe that has gone away must not end this script before it
  # has stopped everything (an echo into it fails instead of killing the script with SIGPIPE).
  # Caught and dropped, not ignored (trap ''): bash 5.2 mishandles a signal that is pending while
  # its trap becomes "ignore" ("run_pending_traps: bad value in trap_list") and dies of it.
  trap : INT TERM HUP PIPE
  trap - EXIT
  # Nothing may end the stop halfway: no errexit, no nounset.
  set +eu
  { echo; echo "demo: stopping"; } 2>/dev/null
  # A process started just before the signal, whose pid the next line would have recorded.
  local last=${!:-}
  if [ -n "$last" ] && [ "$last" != "${timer:-}" ] && [[ " ${agents[*]} ${pids[*]} " != *" $last "* ]]; then pids+=("$last"); fi
  stop_sessions 30 leader "${agents[@]}"
  stop_sessions 10 group "${pids[@]}"
  # The DEMO_SECONDS timer too, or the final wait would sit out the rest of it.
  [ -n "${timer:-}" ] && kill -KILL "$timer" 2>/dev/null
  wait 2>/dev/null
}
trap stop_all EXIT
trap 'stop_all; exit 0' INT TERM HUP PIPE

# The evidence store: an all-in-one OpenStack Swift on loopback (test/helpers/swift.ts), reached
# through its S3 API; both cameras upload their closed recordings to bucket "evidence". Started
# first, as it takes the longest (5-20 s); waited for before the cameras' configs are written.
swift_endpoint=""
swift_wanted=""
if command -v swift-proxy-server >/dev/null && command -v memcached >/dev/null; then
  swift_wanted=1
  rm -f "$demo/swift.log" "$demo/store.yaml"
  setsid node test/helpers/swift.ts "$demo" evidence >"$demo/swift.log" 2>&1 &
  pids+=($!)
fi

cat > "$demo/mosquitto.conf" <<CONF
user $(id -un)
listener $mqtt_port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $demo/
set_tcp_nodelay true
CONF
setsid mosquitto -c "$demo/mosquitto.conf" >"$demo/mosquitto.log" 2>&1 &
pids+=($!)
# gpsfake ignores SIGTERM: timeout -k bounds it, and its own session lets cleanup reach gpsd too.
setsid timeout -k 3 86400 gpsfake -q -n -P "$gpsd_port" -c 0.2 "$gps_log" >"$demo/gpsfake.log" 2>&1 &
pids+=($!)
setsid timeout -k 3 86400 gpsfake -q -n -P "$gpsd2_port" -c 0.2 "$gps2_log" >"$demo/gpsfake-2.log" 2>&1 &
pids+=($!)

# The fleet side: an issuer key the console signs with, its public half in the cameras' trust
# store, and one demo operator.
bin/bwc-agent keys generate --out "$demo/issuer" --actions stream.start,stream.stop,record.start,record.stop,audit.fetch,alert.ack,recording.bookmark,stream.talk >/dev/null
node ops-console/users.ts add --file "$demo/users.json" --user demo --operator sgt-demo --name "Sgt Demo" --role supervisor --role duty-officer --password demo-password >/dev/null
# The force's age key pair: the cameras get only the public key and encrypt their evidence to it;
# the identity stays with the "force" ($demo/force.agekey) for evidence verify|export --identity.
age-keygen -o "$demo/force.agekey" 2>/dev/null
force_recipient=$(age-keygen -y "$demo/force.agekey")
# Issuing the cameras: each device key made (by the agent's own code) and pinned in the console's
# archive by a fleet admin, as a force enrols a camera before it goes out.
archive="sqlite:$demo/ops-console-archive.sqlite"
for pair in "${BWC_DEVICE_ID:-demo-cam-1}:$demo/state" "${BWC_DEVICE2_ID:-demo-cam-2}:$demo/state-2"; do
  node --input-type=module -e 'import { loadOrCreateDeviceKey } from "./src/keys/device-key.ts"; await loadOrCreateDeviceKey(process.argv[1]);' "${pair#*:}"
  node ops-console/enrol.ts add --archive "$archive" --device "${pair%%:*}" --from-state-dir "${pair#*:}" --by demo-admin >/dev/null
done

if [ -n "$swift_wanted" ]; then
  for _ in $(seq 600); do grep -q '^swift: http' "$demo/swift.log" 2>/dev/null && break; sleep 0.1; done
  swift_endpoint=$(sed -n 's/^swift: //p' "$demo/swift.log")
  [ -n "$swift_endpoint" ] || { echo "demo: Swift did not start:" >&2; cat "$demo/swift.log" >&2; exit 1; }
fi

# Everything else on the embedded defaults, but for the force's public key (evidence is encrypted
# to it) and a RAM folder per camera. The demo machine's clock may not be NTP-synchronised,
# and its viewer is a browser on this machine (loopback candidates).
camera_config() { # file [capture]
  {
    echo "commands: {trustStore: $demo/issuer/trust.jwks.json, unsynchronisedClock: accept}"
    echo "stream: {ice: {interfaces: [lo]}}"
    echo "recording: {encryption: {recipients: [$force_recipient]}, plaintextDir: $demo_ram/$(basename "$1" .yaml)}"
    if [ -n "${2:-}" ]; then echo "capture: $2"; fi
    if [ -n "$swift_endpoint" ]; then
      echo "offload: {enabled: true, endpoint: '$swift_endpoint', bucket: evidence, credentialsFile: $demo/store.yaml, interfaces: [lo]}"
    fi
  } > "$1"
}
capture_of() { # WxH@FPS -> YAML flow map
  local size=${1%@*} fps=${1#*@}
  echo "{width: ${size%x*}, height: ${size#*x}, framerate: $fps, bitrateKbps: 800}"
}
cam1_capture=""; cam2_capture=$(capture_of 640x360@15)
if [ -n "${DEMO_CAPTURE:-}" ]; then cam1_capture=$(capture_of "$DEMO_CAPTURE"); cam2_capture=$cam1_capture; fi
camera_config "$demo/camera-1.yaml" "$cam1_capture"
camera_config "$demo/camera-2.yaml" "$cam2_capture"
sleep 1

# The console first, so its subscription exists before the cameras publish their first audit
# entries: it holds each chain from entry 1 and can check it.
# Picked again: another program may have taken the first pick while Swift started.
port_free "$console_port" || console_port=$(pick_port "$console_port")
setsid node ops-console/server.ts --broker "mqtt://127.0.0.1:$mqtt_port" --issuer-key "$demo/issuer/issuer.private.jwk.json" \
  --users "$demo/users.json" --port "$console_port" --client-id "bwc-ops-console-demo-$$" --archive "$archive" >"$demo/console.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^ops-console: http' "$demo/console.log" 2>/dev/null && break; sleep 0.1; done
grep -q '^ops-console: http' "$demo/console.log" || { echo "demo: the console did not start:" >&2; cat "$demo/console.log" >&2; exit 1; }

# The log printers run in sessions of their own too (Node resets ignored signals, so ignoring them
# here would not do): a signal for the demo does not reach them, and they end when their agent
# closes its output, so the agent's last lines are shown.
pretty() { setsid node node_modules/pino-pretty/bin.js --colorize --translateTime SYS:HH:MM:ss.l --ignore pid,hostname; }
device_id=${BWC_DEVICE_ID:-demo-cam-1}
device2_id=${BWC_DEVICE2_ID:-demo-cam-2}
BWC_DEVICE_ID=$device_id BWC_MQTT_URL="mqtt://127.0.0.1:$mqtt_port" BWC_GPSD="127.0.0.1:$gpsd_port" BWC_STATE_DIR="$demo/state" \
  setsid bin/bwc-agent run --config "$demo/camera-1.yaml" > >(pretty) 2>&1 &
agents+=($!)
BWC_DEVICE_ID=$device2_id BWC_MQTT_URL="mqtt://127.0.0.1:$mqtt_port" BWC_GPSD="127.0.0.1:$gpsd2_port" BWC_STATE_DIR="$demo/state-2" \
  setsid bin/bwc-agent run --config "$demo/camera-2.yaml" > >(pretty | setsid sed -u 's/^/[cam-2] /') 2>&1 &
agents+=($!)
cat <<INFO
demo: broker   mqtt://127.0.0.1:$mqtt_port   (watch: mosquitto_sub -h 127.0.0.1 -p $mqtt_port -t 'bwc/v1/#' -v)
demo: gpsd     127.0.0.1:$gpsd_port replaying $(basename "$gps_log"), 127.0.0.1:$gpsd2_port replaying $(basename "$gps2_log")
demo: agent    device $device_id, state in $demo/state   (status: BWC_STATE_DIR=$demo/state bin/bwc-agent ctl status)
demo: agent    device $device2_id, state in $demo/state-2
demo: evidence encrypted to $demo/force.agekey's public key   (BWC_STATE_DIR=$demo/state bin/bwc-agent evidence verify --identity $demo/force.agekey)
demo: console  http://127.0.0.1:$console_port/   sign in as demo / demo-password   (log: $demo/console.log)
demo: store    ${swift_endpoint:-(OpenStack Swift not installed: no offload)} bucket evidence; record, stop, then:
                 swift -A ${swift_endpoint:-URL}/auth/v1.0 -U test:tester -K \$(sed -n 's/^secretAccessKey: "\(.*\)"/\1/p' $demo/store.yaml) list evidence
                 bin/bwc-agent evidence verify --bucket ${swift_endpoint:-URL}/evidence --recording ID --credentials $demo/store.yaml
demo: Ctrl-C stops everything
INFO

# `wait` (not a foreground sleep) so Ctrl-C is handled at once; an agent that stops ends the demo
# with its exit status.
if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS" &
  timer=$!
  status=0
  wait -n "${agents[@]}" "$timer" || status=$?
  for a in "${agents[@]}"; do
    if ! kill -0 "$a" 2>/dev/null; then
      wait "$a" || status=$?
      echo "demo: an agent stopped (exit $status)" >&2
      exit "$status"
    fi
  done
else
  status=0
  wait -n "${agents[@]}" || status=$?
  echo "demo: an agent stopped (exit $status)" >&2
  exit "$status"
fi
