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

logs="$(mktemp -d -t strata-test-logs.XXXXXX)"
trap 'rm -rf "$logs"' EXIT

# The failed tests and their recorded issues, from a run's log.
failures() {
    grep -E -A6 '✘|recorded an issue|error:|Fatal error' "$1" | cut -c1-400 | tail -n 150
}

# The multi-node suites and the driver crash test run on their own, after the rest: beside the
# whole suite, node tests saw the FUSE exports and mounts of a driver vanish, and the crash test
# a restarted driver's mounts (cause not found yet; see README, Tests).
alone=('MultiNodeTests|PeerFaultTests' 'DriverCrashTests')
suite() {
    if [[ $# -gt 0 ]]; then
        swift test --skip-build "$@"
        return
    fi
    swift test --skip-build --skip "${alone[0]}|${alone[1]}" || return 1
    for part in "${alone[@]}"; do swift test --skip-build --filter "$part" || return 1; done
}

# A failure that does not repeat in a second whole run is reported as flaky (loudly, at the very
# end, where CI's tail shows it) rather than failing the build; one that repeats fails it.
if ! suite "$@" 2>&1 | tee "$logs/first"; then
    echo
    echo "==== the run failed; running the whole suite once more to tell a flaky test from a broken one ===="
    if ! suite "$@" > "$logs/second" 2>&1; then
        echo "==== failed again. First run's failures: ===="
        failures "$logs/first"
        echo "==== second run's failures: ===="
        failures "$logs/second"
        exit 1
    fi
    flaky="$(failures "$logs/first")"
fi
# A fixed seed: every run replays the same mutations of the corpus, so a red run here is a
# regression of this change, not a new find of an old bug; long runs explore (README, Tests).
if [[ $# -eq 0 ]]; then
    scripts/fuzz.sh --seconds 20 -- -seed=20261130
fi
if [[ -n "${flaky:-}" ]]; then
    echo
    echo "==== FLAKY: these failed in the first run and passed in a second whole run (investigate): ===="
    echo "$flaky"
fi
