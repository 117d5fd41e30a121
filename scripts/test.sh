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
swift test --skip-build "$@"
if [[ $# -eq 0 ]]; then
    scripts/fuzz.sh --seconds 20
fi
