#!/usr/bin/env bash
# Installs what the project needs, skipping what is already there:
#   apt    Debian packages listed in deps/debian-*.txt (sudo when not root)
#   node   the pinned Node runtime and npm, from the npm registry, checked against pinned hashes
#   npm    node_modules via `npm ci`, native addons built against the pinned Node's headers
# Usage: scripts/setup.sh [apt] [node] [modules]   (no argument: all three)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
# shellcheck source=runtime.env
. scripts/runtime.env
runtime="$here/.runtime"

say() { printf 'setup: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

node_arch() {
  case "$(uname -m)" in
    x86_64) echo x64 ;;
    aarch64|arm64) echo arm64 ;;
    *) say "unsupported machine architecture $(uname -m): Node builds exist for x86_64 and aarch64"; exit 1 ;;
  esac
}

setup_apt() {
  local wanted missing=()
  wanted=$(cat deps/debian-runtime.txt deps/debian-build.txt deps/debian-dev.txt | sed 's/#.*//' | tr -s ' \n' '\n' | sort -u)
  # A fresh machine may have no npm at all; it is needed once, to fetch the pinned runtime.
  [ -x "$runtime/npm/bin/npm-cli.js" ] || command -v npm >/dev/null || wanted="$wanted"$'\n'npm
  # coturn is for the tests only (test/helpers/coturn.ts runs its own turnserver on a test
  # address): its package would otherwise start a system-wide open relay on every interface.
  if [ ! -L /etc/systemd/system/coturn.service ]; then
    as_root mkdir -p /etc/systemd/system
    as_root ln -sfn /dev/null /etc/systemd/system/coturn.service
    if [ -d /run/systemd/system ]; then as_root systemctl daemon-reload; as_root systemctl stop coturn.service 2>/dev/null || true; fi
  fi
  for p in $wanted; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then return 0; fi
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Fetches an npm-registry package tarball with `npm pack`, checks its integrity against the pin,
# and unpacks it into $runtime/$dest.
fetch_pinned() {
  local spec=$1 integrity=$2 dest=$3 tmp got
  tmp=$(mktemp -d)
  say "fetching $spec"
  (cd "$tmp" && npm pack "$spec" --silent >/dev/null)
  got="sha512-$(openssl dgst -sha512 -binary "$tmp"/*.tgz | base64 -w0)"
  if [ "$got" != "$integrity" ]; then
    say "integrity mismatch for $spec: expected $integrity, got $got"
    rm -rf "$tmp"; exit 1
  fi
  rm -rf "${runtime:?}/$dest" && mkdir -p "$runtime/$dest"
  tar -xzf "$tmp"/*.tgz -C "$runtime/$dest" --strip-components=1
  rm -rf "$tmp"
}

npm_pinned() {
  PATH="$runtime/node/bin:$PATH" npm_config_nodedir="$runtime/node" \
    "$runtime/node/bin/node" "$runtime/npm/bin/npm-cli.js" "$@"
}

setup_node() {
  local arch integrity_var
  arch=$(node_arch)
  if [ "$("$runtime/node/bin/node" --version 2>/dev/null)" != "v$NODE_VERSION" ]; then
    integrity_var="NODE_INTEGRITY_$arch"
    fetch_pinned "node-linux-$arch@$NODE_VERSION" "${!integrity_var}" node
  fi
  if [ ! -f "$runtime/npm/package.json" ] || ! grep -q "\"version\": \"$NPM_VERSION\"" "$runtime/npm/package.json"; then
    # Run the first npm with whatever node is there; the pinned one from here on.
    fetch_pinned "npm@$NPM_VERSION" "$NPM_INTEGRITY" npm
  fi
}

setup_modules() {
  local stamp=node_modules/.bwc-setup-stamp
  if [ -f "$stamp" ] && [ "$stamp" -nt package-lock.json ] && [ "$(cat "$stamp")" = "v$NODE_VERSION" ]; then
    return 0
  fi
  say "npm ci (native addons build against Node $NODE_VERSION)"
  npm_pinned ci --no-audit --no-fund
  echo "v$NODE_VERSION" > "$stamp"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(apt node modules)
for s in "${steps[@]}"; do
  case "$s" in
    apt) setup_apt ;;
    node) setup_node ;;
    modules) setup_modules ;;
    npm) shift_args=("${steps[@]:1}"); npm_pinned "${shift_args[@]}"; exit $? ;;
    *) say "unknown step '$s' (expected apt, node, modules)"; exit 2 ;;
  esac
done
