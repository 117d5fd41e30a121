#!/usr/bin/env bash
# Runs the whole test suite: store, node (real FUSE, loop devices and mounts: needs root),
# CSI services over the real socket, interop with grpc-go and grpcio, and deploy/ validation.
# Extra arguments go to `swift test` (e.g. --filter BlockStoreTests). A run without arguments
# ends with a short fuzz run of the store's metadata decoding and of request validation.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
STRATA_CSI_BINARY="$(swift build --show-bin-path)/strata-csi"
export STRATA_CSI_BINARY

# The full log is long and CI shows its tail, so failures are repeated at the very end.
test_log="$(mktemp -t strata-test-log.XXXXXX)"
trap 'rm -f "$test_log"' EXIT
if ! swift test --skip-build "$@" 2>&1 | tee "$test_log"; then
    echo
    echo "==== failed tests and their recorded issues (repeated from above) ===="
    grep -E -A6 '✘|recorded an issue|error:|Fatal error|Test .* failed' "$test_log" | cut -c1-400 | tail -n 150
    exit 1
fi
if [[ $# -eq 0 ]]; then
    scripts/fuzz.sh --seconds 20
fi
