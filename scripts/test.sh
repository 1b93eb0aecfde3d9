#!/usr/bin/env bash
# The whole suite (make test): tap over test/**/*.test.ts with the pinned Node, then the arm64
# bundle built (scripts/dist-arm64.sh) and run under qemu-user (scripts/test-arm64.sh), its TAP
# appended, the stream kept in .tap/last-run.tap, and a plain closing line "N passed, N failed" for
# CI that counts both. With arguments (tap options or test files) only tap runs, with them.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tap
export PATH="$PWD/.runtime/node/bin:$PATH"
export npm_config_nodedir="$PWD/.runtime/node"
start=$(date +%s)
node .runtime/npm/bin/npx-cli.js tap --reporter=tap "$@" 2>&1 | tee .tap/last-run.tap
status=${PIPESTATUS[0]}
if [ $# -eq 0 ]; then
  # A bundle that does not build is one failure in the count, not a silent absence of arm64 tests.
  rm -f .tap/arm64.tap
  if scripts/dist-arm64.sh; then
    scripts/test-arm64.sh > .tap/arm64.log 2>&1
    arm64_status=$?
    # The per-file results; the full stream is in .tap/arm64.tap, the run's output in .tap/arm64.log.
    grep -E '^(not )?ok |^# arm64 took|^arm64: ' .tap/arm64.log
    [ -f .tap/arm64.tap ] || printf 'TAP version 14\nnot ok 1 - arm64: scripts/test-arm64.sh ended before its TAP (see .tap/arm64.log)\n1..1\n' > .tap/arm64.tap
  else
    arm64_status=1
    printf 'TAP version 14\nnot ok 1 - arm64 bundle: make dist-arm64 failed\n1..1\n' > .tap/arm64.tap
  fi
  # Appended after tap's own stream, as further top-level subtests (tap-summary counts every leaf).
  sed -n '/^TAP version/!p' .tap/arm64.tap >> .tap/last-run.tap
  if [ "$arm64_status" != 0 ]; then
    status=1
    # CI keeps only this output: the failing files' TAP (with their stderr) goes to it, not only to .tap/.
    echo "# arm64 failures, in full:"
    awk '/^(# Subtest: |1\.\.)/{if (bad) printf "%s", block; block=""; bad=0} {block=block $0 "\n"} /^not ok /{bad=1}' .tap/arm64.tap | tail -n 300
  fi
fi
echo "# suite took $(( $(date +%s) - start )) s"
node scripts/tap-summary.mjs .tap/last-run.tap
exit "$status"
