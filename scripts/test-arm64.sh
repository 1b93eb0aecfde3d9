#!/usr/bin/env bash
# make test-arm64: the arm64 bundle (make dist-arm64) under Debian's qemu-user-static, with the arm64
# libraries installed multiarch under /usr/lib/aarch64-linux-gnu (deps/debian-arm64-emulation.txt).
# No binfmt handler is registered (binfmt_misc belongs to the host kernel) and QEMU_LD_PREFIX is not
# set (the multiarch loader and libc in /lib/ld-linux-aarch64.so.1 are the ones to use; mixing in
# the cross toolchain's sysroot libc makes Node spin): every arm64 program is started as
# `qemu-aarch64-static PROGRAM`, the capture worker through capture.workerLauncher.
#
# Writes .tap/arm64.tap: one TAP subtest per file, in the shape `tap --reporter=tap` gives, so
# scripts/tap-summary.mjs counts it (scripts/test.sh appends it to the whole suite's stream).
# Runs:
#   emulated, from a test tree inside the unpacked bundle (its node, its arm64 node_modules; tap and
#   fast-check come from the repo's node_modules one folder up, pure JavaScript):
#     the test files listed in `emulated` below, and test/arm64/rpi-preset.ts
#   natively, the agent emulated: test/arm64/agent-smoke.ts, test/arm64/update-smoke.ts (an update)
# Not run emulated, and why:
#   test files that start a Node child process (capture, config, control, link, tls, agent-gps,
#   commands-e2e, disk-full, firmware-agent/gpio/serial, recording-e2e, service-notifier): the
#   child is process.execPath, an arm64 binary the kernel cannot exec without binfmt; the smoke test
#   covers the agent, the worker and the CLI emulated instead.
#   health: qemu-user 7.2 fills /proc/self/stat with zeros, so the agent's RSS reads 0 there.
#   demo, stream-e2e, ops-console: they need a browser. dockerfile, systemd-unit: text checks, the
#   same on any architecture.
# Exit status: 0 only when every file passed.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
say() { printf 'test-arm64: %s\n' "$*" >&2; }

# bitrate and ice-restart hold tests that were in stream-manager until the manager was split.
emulated=(audit audit-tamper bitrate clock command-fuzz command-handler command-verifier device-key evidence-verify firmware-sim gpsd ice-restart outbox recording stream-manager)

scripts/setup.sh emulation || exit 1
host_node="$here/.runtime/node/bin/node"
version=$("$host_node" -p 'require("./package.json").version')
name="bwc-agent-$version-linux-arm64"
tarball="dist/$name.tar.gz"
[ -f "$tarball" ] || { say "$tarball is missing: run make dist-arm64"; exit 1; }

# A fresh unpack of the tarball, exactly as shipped; the TypeScript sources and tests are added
# beside it (tests import ../src/*.ts), so their imports of better-sqlite3 and gstreamer-superficial
# resolve to the bundle's node_modules.
tree="$here/.build-arm64/test"
rm -rf "$tree" && mkdir -p "$tree"
tar -xzf "$tarball" -C "$tree"
bundle="$tree/$name"
cp -r src test firmware-bridge tsconfig.json "$bundle/"
ln -s "$here/node_modules" "$tree/node_modules"
# Tests find the GPS logs in ../shared from the repo root, here the bundle's folder.
ln -s "$(cd "$here/.." && pwd)/shared" "$tree/shared"
# The arm64 GStreamer keeps its own plugin registry (registry.aarch64.bin), apart from the host's.
export GST_REGISTRY="$tree/gst-registry.aarch64.bin"

mkdir -p .tap
out="$here/.tap/arm64.tap"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One file: its TAP into $work/<n>.tap, its exit status into $work/<n>.rc. Each has a hang guard
# (qemu is slow; the guard is generous and is not a timing check).
run_one() {
  local n=$1 label=$2; shift 2
  # TAP_TIMEOUT: tap's own 30 s per test is a native-speed guess; `timeout` is the guard here.
  TAP_TIMEOUT=600 timeout --kill-after=30 900 "$@" > "$work/$n.tap" 2> "$work/$n.err"
  echo $? > "$work/$n.rc"
  say "$label: exit $(cat "$work/$n.rc")"
}

start=$(date +%s)
labels=() n=0
for f in "${emulated[@]}"; do
  labels+=("arm64 (qemu): test/$f.test.ts")
  run_one $n "${labels[$n]}" qemu-aarch64-static "$bundle/node/bin/node" "$bundle/test/$f.test.ts" &
  n=$((n + 1))
  # Two at a time: the machine has two cores.
  if [ $((n % 2)) = 0 ]; then wait; fi
done
labels+=("arm64 (qemu): test/arm64/rpi-preset.ts")
run_one $n "${labels[$n]}" qemu-aarch64-static "$bundle/node/bin/node" "$bundle/test/arm64/rpi-preset.ts" &
n=$((n + 1))
wait
labels+=("arm64 (qemu): test/arm64/agent-smoke.ts, the whole agent")
run_one $n "${labels[$n]}" env BWC_ARM64_BUNDLE="$bundle" "$host_node" test/arm64/agent-smoke.ts
n=$((n + 1))
labels+=("arm64 (qemu): test/arm64/update-smoke.ts, agent.update installed and started")
run_one $n "${labels[$n]}" env BWC_ARM64_BUNDLE="$bundle" "$host_node" test/arm64/update-smoke.ts
n=$((n + 1))

failed=0
{
  echo "TAP version 14"
  for ((i = 0; i < n; i++)); do
    echo "# Subtest: ${labels[$i]}"
    sed 's/^/    /' "$work/$i.tap"
    if [ "$(cat "$work/$i.rc")" = 0 ]; then
      echo "ok $((i + 1)) - ${labels[$i]}"
    else
      failed=$((failed + 1))
      echo "not ok $((i + 1)) - ${labels[$i]} # exit $(cat "$work/$i.rc")"
      # Its stderr, as TAP comments, so a crash says why.
      tail -n 40 "$work/$i.err" | sed 's/^/# /'
    fi
  done
  echo "1..$n"
  echo "# arm64 took $(( $(date +%s) - start )) s"
} > "$out"
cat "$out"
"$host_node" scripts/tap-summary.mjs "$out" | sed 's/^/arm64: /'
[ "$failed" = 0 ]
