#!/usr/bin/env bash
# The whole suite (make test): tap over test/**/*.test.ts with the pinned Node, the TAP stream
# kept in .tap/last-run.tap, and a plain closing line "N passed, N failed" for CI.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tap
export PATH="$PWD/.runtime/node/bin:$PATH"
export npm_config_nodedir="$PWD/.runtime/node"
start=$(date +%s)
node .runtime/npm/bin/npx-cli.js tap --reporter=tap "$@" 2>&1 | tee .tap/last-run.tap
status=${PIPESTATUS[0]}
echo "# suite took $(( $(date +%s) - start )) s"
node scripts/tap-summary.mjs .tap/last-run.tap
exit "$status"
