#!/usr/bin/env bash
# make dist-host: the host-architecture twin of `make dist-arm64`, for the update tests and the
# update bench: the same layout, with this machine's pinned Node and the native addons already
# built in node_modules/ (nothing is compiled, so it takes seconds):
#   dist/bwc-agent-<version>-linux-<arch>.tar.gz
#     bwc-agent-<version>-linux-<arch>/
#       node/bin/node, dist/, node_modules/ (production dependencies only), package.json,
#       bin/bwc-agent, systemd/, deps/debian-runtime.txt, install.sh, BUILD-INFO
# Staged in .build-host/; when the built agent (dist/src), the lock file and this script are what they
# were at the last run, the tarball is not made again (BUILD_STAMP), so a test run builds it once.
# Prints the tarball's path on stdout. Expects `make build` to have run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
# shellcheck source=runtime.env
. scripts/runtime.env
say() { printf 'dist-host: %s\n' "$*" >&2; }

host_node="$here/.runtime/node/bin/node"
npm_cli="$here/.runtime/npm/bin/npm-cli.js"
[ -f dist/src/cli/main.js ] || { say "dist/src/cli/main.js is missing: run make build first"; exit 1; }
version=$("$host_node" -p 'require("./package.json").version')
arch=$("$host_node" -p 'process.arch')
name="bwc-agent-$version-linux-$arch"
build="$here/.build-host"
stage="$build/$name"
tarball="$here/dist/$name.tar.gz"

# Test files that need the bundle run in parallel: one builds it, the others wait and reuse it.
mkdir -p "$build"
exec 9> "$build/.lock"
flock 9
stamp=$( { find dist/src dist/firmware-bridge bin systemd -type f -printf '%p %s %T@\n' | sort; sha256sum package-lock.json scripts/dist-host.sh "$host_node"; } | sha256sum | cut -d' ' -f1)
if [ -f "$tarball" ] && [ -f "$build/BUILD_STAMP" ] && [ "$(cat "$build/BUILD_STAMP")" = "$stamp" ]; then
  echo "$tarball"
  exit 0
fi

rm -rf "$stage" && mkdir -p "$stage"
cp package.json package-lock.json "$stage/"
# The production packages, as npm resolves them, copied from the built node_modules/ (their addons
# are this machine's): what `npm ci --omit=dev` would install, without compiling again.
mkdir -p "$stage/node_modules"
PATH="$here/.runtime/node/bin:$PATH" "$host_node" "$npm_cli" ls --omit=dev --all --parseable 2>/dev/null | sed 1d \
  | sed "s|^$here/node_modules/||" | sort -u | awk '
      # Skip a package whose parent folder is already listed: copying the parent brings it.
      { for (i = 1; i <= n; i++) if (index($0, seen[i] "/") == 1) next; seen[++n] = $0; print }' \
  | while read -r pkg; do
      mkdir -p "$stage/node_modules/$(dirname "$pkg")"
      cp -a "node_modules/$pkg" "$stage/node_modules/$pkg"
    done
# Here (unlike dist-arm64.sh, which compiles them) better-sqlite3 and @serialport/bindings-cpp load
# their prebuilds: only this platform's are kept. SQLite's source and object files are not needed.
find "$stage/node_modules/better-sqlite3/prebuilds" -mindepth 1 -maxdepth 1 ! -name "linux-$arch.node" -exec rm -rf {} +
find "$stage/node_modules/@serialport/bindings-cpp/prebuilds" -mindepth 1 -maxdepth 1 ! -name "linux-$arch" -exec rm -rf {} +
rm -rf "$stage/node_modules/better-sqlite3/deps" "$stage/node_modules/better-sqlite3/build/Release/obj.target"

mkdir -p "$stage/node/bin" "$stage/bin" "$stage/systemd" "$stage/deps" "$stage/dist"
cp "$host_node" "$stage/node/bin/node"
cp -r dist/src dist/firmware-bridge "$stage/dist/"
cp bin/bwc-agent "$stage/bin/"
cp systemd/bwc-agent.service systemd/bwc-agent.sysusers.conf systemd/config.example.yaml "$stage/systemd/"
cp deps/debian-runtime.txt "$stage/deps/"
cp scripts/install-pi.sh "$stage/install.sh"
{
  echo "bwc-agent $version linux-$arch"
  echo "node $NODE_VERSION (the host's pinned runtime)"
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
} > "$stage/BUILD-INFO"

mkdir -p dist
# gzip -1: the tests and the bench build it; the compression level matters little to a bundle
# that is mostly a Node binary.
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$build" -cf - "$name" | gzip -1 > "$tarball.tmp"
mv "$tarball.tmp" "$tarball"
echo "$stamp" > "$build/BUILD_STAMP"
say "$(du -h "$tarball" | cut -f1) $tarball"
echo "$tarball"
