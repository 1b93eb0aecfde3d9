#!/usr/bin/env bash
# install.sh of the arm64 bundle (make dist-arm64 copies this file there): puts the unpacked bundle
# in place on a Raspberry Pi running 64-bit Raspberry Pi OS (Debian 12), as root:
#   1. Debian runtime packages from deps/debian-runtime.txt (the list Dockerfile.arm64 reads), plus
#      gstreamer1.0-libcamera (libcamerasrc, the `rpi` preset's source) when the archive has it
#   2. the app in /opt/bwc-agent/releases/<version> (root-owned, the agent cannot modify it), with the
#      `current` and `committed` symlinks pointing at it (agent.update switches them; the releases
#      folder itself belongs to bwc-agent so it can add signed releases: docs/operations.md)
#   3. the bwc-agent user and its device groups (systemd-sysusers, systemd/bwc-agent.sysusers.conf)
#   4. /etc/bwc-agent/config.yaml from systemd/config.example.yaml, only if there is none yet
#   5. the unit in /etc/systemd/system, enabled; started only with --start
# Usage: sudo ./install.sh [--start] [--no-apt]
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
start=no apt=yes
for arg in "$@"; do
  case "$arg" in
    --start) start=yes ;;
    --no-apt) apt=no ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (expected --start, --no-apt)" >&2; exit 2 ;;
  esac
done
say() { printf 'install: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "run as root (sudo $0)"; exit 1; }
case "$(uname -m)" in
  aarch64|arm64) ;;
  *) say "this bundle is for aarch64 (64-bit Raspberry Pi OS); this machine is $(uname -m)"; exit 1 ;;
esac
[ -x "$src/node/bin/node" ] && [ -f "$src/dist/src/cli/main.js" ] || { say "run install.sh from the unpacked bundle"; exit 1; }

if [ "$apt" = yes ]; then
  mapfile -t packages < <(sed 's/#.*//' "$src/deps/debian-runtime.txt" | tr -s ' \n' '\n' | sed '/^$/d')
  apt-get update -qq
  # Raspberry Pi OS carries gstreamer1.0-libcamera (its own libcamera build); plain Debian 12 has an
  # older one. Either way it is the package that provides libcamerasrc.
  if apt-cache show gstreamer1.0-libcamera >/dev/null 2>&1; then packages+=(gstreamer1.0-libcamera); fi
  say "installing Debian packages: ${packages[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

install -D -m 0644 "$src/systemd/bwc-agent.sysusers.conf" /usr/lib/sysusers.d/bwc-agent.conf
systemd-sysusers /usr/lib/sysusers.d/bwc-agent.conf

base=/opt/bwc-agent
releases=$base/releases
version=$(awk 'NR == 1 { print $2 }' "$src/BUILD-INFO")
app=$releases/$version
# The layout before agent.update (the app straight in /opt/bwc-agent) goes.
if [ -d "$base/bin" ] && [ ! -L "$base/bin" ]; then rm -rf "$base.old" && mv "$base" "$base.old"; fi
install -d -m 0755 -o bwc-agent -g bwc-agent "$releases"
# Copy beside the old version, then swap, so a failed copy leaves the installed version intact.
# A running agent keeps its open files; the new code runs from the next (re)start.
rm -rf "$releases/.$version.new"
mkdir -p "$releases/.$version.new"
cp -a "$src/." "$releases/.$version.new/"
chown -R root:root "$releases/.$version.new"
chmod -R go-w "$releases/.$version.new"
if [ -d "$app" ]; then rm -rf "$app.old" && mv "$app" "$app.old"; fi
mv "$releases/.$version.new" "$app"
rm -rf "$app.old" "$base.old"
# Installed by hand: this release is both the one to run and the known-good one.
for link in current committed; do
  ln -sfn "$version" "$releases/.$link.tmp" && mv -T "$releases/.$link.tmp" "$releases/$link"
  chown -h bwc-agent:bwc-agent "$releases/$link"
done
# /opt/bwc-agent/bin/bwc-agent keeps working for operators: it is the current release's.
ln -sfn releases/current/bin "$base/bin"
say "installed $(head -1 "$app/BUILD-INFO") in $app (current, committed)"

install -d -m 0755 /etc/bwc-agent
if [ ! -e /etc/bwc-agent/config.yaml ]; then
  # root:bwc-agent 0640: the file may come to hold credentials (systemd/bwc-agent.service).
  install -m 0640 -o root -g bwc-agent "$src/systemd/config.example.yaml" /etc/bwc-agent/config.yaml
  say "wrote /etc/bwc-agent/config.yaml from the example: edit mqtt.url (and TLS files) before starting"
else
  say "kept the existing /etc/bwc-agent/config.yaml"
fi

install -m 0644 "$src/systemd/bwc-agent.service" /etc/systemd/system/bwc-agent.service
systemctl daemon-reload
systemctl enable bwc-agent.service
if [ "$start" = yes ]; then
  systemctl restart bwc-agent.service
  say "started: journalctl -u bwc-agent -f"
else
  say "enabled, not started: systemctl start bwc-agent (then journalctl -u bwc-agent -f)"
fi
