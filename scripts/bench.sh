#!/usr/bin/env bash
# Runs the benchmarks (bench/run-all.ts) with the pinned Node, from the repo root, and writes
# bench/results/*.json and bench/results/summary.md. `make bench` builds dist/ first and calls this.
# Needs mosquitto on PATH (deps/debian-dev.txt). Arguments go to bench/run-all.ts, e.g.
#   scripts/bench.sh --runs 20 --messages 100000 --configs 20:100,200:200 --cpu-prof
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
node="$here/.runtime/node/bin/node"
if [ ! -x "$node" ]; then
  echo "bench: the pinned Node is missing ($node): run 'make setup'" >&2
  exit 1
fi
command -v mosquitto >/dev/null || { echo "bench: mosquitto is not installed: run 'make setup'" >&2; exit 1; }
exec "$node" bench/run-all.ts "$@"
