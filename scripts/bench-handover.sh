#!/usr/bin/env bash
# Ownership handovers of a ReadWriteMany Block volume under I/O: what a VM's disk goes through
# at the end of each live migration.
#
#   scripts/bench-handover.sh [--rounds N] [--size-mib N] [--fill-mib N]
#
# Two network namespaces joined by a veth pair, a release strata-csi in each (mutual TLS with a
# CA made here, metrics served inside each namespace). Node A creates an RWX Block volume of
# --size-mib (default 256) and writes its first --fill-mib (default 64). Then --rounds times
# (default 20) the volume moves to the other node as a live migration moves it: that node stages
# it, an O_DIRECT writer (4 KiB at random offsets of the filled part) moves there, and the owner
# unstages. Prints per handover and as p50/p99/max: the I/O pause the writer saw (the longest
# gap between completed writes from the unstage until the new owner holds the volume), the pause
# the new owner measured (strata_handover_io_pause_seconds), and the layer bytes it received
# (strata_peer_bytes_received_total) against the bytes allocated there once it owns it and against
# the --fill-mib of data the volume holds. Targets: writer pause p99 <= 1 s; bytes moved <= 1.1x
# allocated. Exits 1 if the writer saw an I/O error or a driver exited.
# Set STRATA_CSI to use a given binary (else a release build in .build-bench). Cleans up on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=20
size_mib=256
fill_mib=64
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=$2; shift ;;
        --size-mib) size_mib=$2; shift ;;
        --fill-mib) fill_mib=$2; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "bench-handover.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$fill_mib" -le "$size_mib" ] || { echo "--fill-mib must not exceed --size-mib" >&2; exit 2; }
for tool in openssl curl nsenter; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: scripts/install-deps.sh installs it" >&2; exit 1; }
done

. "$repo/scripts/bench/two-nodes.sh"
two_nodes_begin handover sho

two_nodes_up
driver_flags=(--log-level info --admin-endpoint none)
start_node a "$ns_a" "$addr_a" b "$addr_b" "${driver_flags[@]}" --metrics-address "$addr_a:9820"
start_node b "$ns_b" "$addr_b" a "$addr_a" "${driver_flags[@]}" --metrics-address "$addr_b:9820"

status=0
python3 "$repo/scripts/bench/handover.py" "$repo/proto" "$work" "$rounds" $((size_mib << 20)) $((fill_mib << 20)) \
    "$ns_a" "$addr_a:9820" "$ns_b" "$addr_b:9820" 2>"$work/results.json" &
bench_pid=$!
# A driver that dies leaves the other node's I/O waiting for it (by design), and the writer with
# it: stop the survivors then, which fails that I/O, instead of waiting forever.
while kill -0 "$bench_pid" 2>/dev/null; do
    for pid in "${pids[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "a driver exited during the run; stopping the other" >&2
            for other in "${pids[@]}"; do kill "$other" 2>/dev/null || true; done
            break 2
        fi
    done
    sleep 1
done
wait "$bench_pid" || status=$?
if [ "$status" -ne 0 ]; then
    echo "handover.py failed ($status); its last lines:" >&2
    tail -n 5 "$work/results.json" >&2
fi
for node in a b; do
    if grep -q "Program crashed\|Fatal error" "$work/$node/driver.log"; then
        echo "node $node's driver crashed:" >&2
        grep -m1 -B2 "Program crashed\|Fatal error" "$work/$node/driver.log" >&2
        status=1
    fi
done
exit "$status"
