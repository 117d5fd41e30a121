#!/usr/bin/env bash
# gRPC CreateVolume-from-snapshot latency, as the CSI external-provisioner sees it.
#
#   scripts/bench-grpc.sh [--quick] [--json] [--json-out FILE] [--keep-series DIR]
#
# Builds the release strata-csi (incrementally, in .build-bench; or set STRATA_CSI=/path) and the
# Go client (scripts/bench/csibench, in a temporary GOPATH), starts strata-csi on a temporary
# socket and state directory under ${TMPDIR:-/tmp}, creates a 1 GiB golden volume, then for
# concurrency 1 and then 16 takes a fresh snapshot of it and issues N CreateVolume calls from
# that snapshot over one grpc-go connection (N = 10,000; 1,000 with --quick). Each call's latency
# is kept by its sequence number (issue order); p50 and p99 are reported over the 100 calls
# ending at clone #1 (calls 1-100), #1,000 (901-1,000) and #10,000 (9,901-10,000), with the
# throughput of each run. The second run starts with the first run's clones still in the catalog.
# The driver is stopped and its state deleted at the end. STRATA_LOG_LEVEL sets its log level
# (default info: one line per RPC, as deployed). --json prints one JSON object instead of the
# table; --json-out also writes it to FILE; --keep-series writes each call's latency (CSV).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
count=10000
json=false
series=""
json_out=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) count=1000 ;;
        --json) json=true ;;
        --json-out) json_out=${2:?--json-out needs a file}; shift ;;
        --keep-series) series=${2:?--keep-series needs a directory}; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "bench-grpc.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-grpc.XXXXXX")
driver_pid=
cleanup() {
    bench_stop_driver
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
source "$repo/scripts/bench/common.sh"

binary=$(bench_driver_binary)
client=$(bench_build_client)
bench_start_driver "$binary" --mode controller
echo "strata-csi $binary: pid $driver_pid, state in $work/state" >&2

arguments=(clones -socket "$driver_socket" -count "$count" -concurrency 1,16)
if [ -n "$series" ]; then
    mkdir -p "$series"
    arguments+=(-series "$series")
fi
[ -n "$json_out" ] && arguments+=(-json-out "$json_out")
$json && arguments+=(-json)
"$client" "${arguments[@]}"
