#!/usr/bin/env bash
# A ReadWriteMany Block volume served on the node that does not hold it, against the same volume
# on its owner, side by side in one run: what a live-migrated VM's disk does on its new node.
#
#   scripts/bench-rwx.sh [--size-mib N] [--runtime S]
#
# Two network namespaces joined by a veth pair, a release strata-csi in each (mutual TLS with a
# CA made here). Node A creates an RWX Block volume of --size-mib (default 1024), stages it, and
# writes it whole (1 MiB sequential); node B stages it too (its I/O goes to A over the peer
# connection). Then fio (O_DIRECT, libaio, --runtime seconds each, default 10) on A's device and
# on B's device: 4 KiB random read and write at depth 32, 1 MiB sequential read and write at depth
# 32; and a plain TCP copy (socat, 1 GiB, page cache to /dev/null) between the same namespaces.
# Prints IOPS / MiB/s, B against A, and B's sequential figures against plain TCP.
# Set STRATA_CSI to use a given binary. Cleans up on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
size_mib=1024
runtime=10
while [ $# -gt 0 ]; do
    case $1 in
        --size-mib) size_mib=$2; shift ;;
        --runtime) runtime=$2; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "bench-rwx.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
for tool in fio socat openssl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: scripts/install-deps.sh installs it" >&2; exit 1; }
done

volume=
# The volume is unstaged on both nodes before the drivers stop (two-nodes.sh's clean-up).
before_cleanup() {
    [ -n "$volume" ] || return 0
    for node in b a; do
        python3 "$repo/scripts/bench/peerbench.py" detach "$repo/proto" "$work/$node/csi.sock" "$work/$node/kubelet" "$volume" 2>/dev/null || true
    done
}
. "$repo/scripts/bench/two-nodes.sh"
two_nodes_begin rwx srb

two_nodes_up
start_node a "$ns_a" "$addr_a" b "$addr_b" --log-level warning
start_node b "$ns_b" "$addr_b" a "$addr_a" --log-level warning

bench() { python3 "$repo/scripts/bench/peerbench.py" "$@"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
volume=$(bench rwx "$repo/proto" "$work/a/csi.sock" bench-rwx $((size_mib << 20)) | field volume)
device_a=$(bench attach "$repo/proto" "$work/a/csi.sock" "$work/a/kubelet" "$volume" | field device)
echo "filling the $size_mib MiB volume on node A..." >&2
fio --name=fill --filename="$device_a" --rw=write --bs=1M --iodepth=32 --ioengine=libaio --direct=1 --size="${size_mib}M" \
    --output-format=terse >/dev/null
device_b=$(bench attach "$repo/proto" "$work/b/csi.sock" "$work/b/kubelet" "$volume" | field device)

run_fio() { # device rw bs → IOPS and bytes/s (read or write, whichever the job does)
    fio --name=job --filename="$1" --rw="$2" --bs="$3" --iodepth=32 --ioengine=libaio --direct=1 --size="${size_mib}M" \
        --time_based --runtime="$runtime" --ramp_time=1 --output-format=json 2>/dev/null |
        python3 -c 'import json,sys
job = json.load(sys.stdin)["jobs"][0]
side = job["read"] if job["read"]["io_bytes"] > 0 else job["write"]
print("%.0f %.0f" % (side["iops"], side["bw_bytes"]))'
}

tcp_copy() { # bytes → seconds (page cache to /dev/null, node A to node B)
    local port=$((9900 + RANDOM % 90))
    nsenter --net="/run/netns/$ns_b" sh -c "socat -u TCP-LISTEN:$port,reuseaddr,rcvbuf=4194304 - >/dev/null" &
    local receiver=$!
    sleep 0.3
    head -c "$1" /dev/urandom > "$work/tcp-data"
    cat "$work/tcp-data" >/dev/null
    local started ended
    started=$(date +%s.%N)
    nsenter --net="/run/netns/$ns_a" sh -c "socat -u -b 1048576 OPEN:$work/tcp-data TCP:$addr_b:$port"
    wait "$receiver"
    ended=$(date +%s.%N)
    rm -f "$work/tcp-data"
    echo "$started $ended" | awk '{printf "%.3f", $2 - $1}'
}

declare -A result
for job in "randread 4k" "randwrite 4k" "read 1M" "write 1M"; do
    set -- $job
    result["$1-a"]=$(run_fio "$device_a" "$1" "$2")
    result["$1-b"]=$(run_fio "$device_b" "$1" "$2")
done
tcp_seconds=$(tcp_copy $((1 << 30)))

{
    for job in randread randwrite read write; do echo "$job ${result[$job-a]} ${result[$job-b]}"; done
    echo "tcp $tcp_seconds"
} | awk '
    $1 == "tcp" { tcp = 1024 / $2; next }
    { iops_a[$1] = $2; bw_a[$1] = $3 / 1048576; iops_b[$1] = $4; bw_b[$1] = $5 / 1048576 }
    END {
        printf "%-44s %12s %12s %8s\n", "fio, O_DIRECT, depth 32", "owner A", "remote B", "B / A"
        printf "%-44s %12.0f %12.0f %7.2fx\n", "4 KiB random read (IOPS)", iops_a["randread"], iops_b["randread"], iops_b["randread"] / iops_a["randread"]
        printf "%-44s %12.0f %12.0f %7.2fx\n", "4 KiB random write (IOPS)", iops_a["randwrite"], iops_b["randwrite"], iops_b["randwrite"] / iops_a["randwrite"]
        printf "%-44s %12.0f %12.0f %7.2fx\n", "1 MiB sequential read (MiB/s)", bw_a["read"], bw_b["read"], bw_b["read"] / bw_a["read"]
        printf "%-44s %12.0f %12.0f %7.2fx\n", "1 MiB sequential write (MiB/s)", bw_a["write"], bw_b["write"], bw_b["write"] / bw_a["write"]
        printf "%-44s %12.0f\n", "plain TCP A to B, 1 GiB, socat (MiB/s)", tcp
        printf "remote sequential / plain TCP: read %.2fx, write %.2fx (target >= 0.8x); remote random IOPS / owner: read %.2fx, write %.2fx (target >= 0.5x)\n",
            bw_b["read"] / tcp, bw_b["write"] / tcp, iops_b["randread"] / iops_a["randread"], iops_b["randwrite"] / iops_a["randwrite"]
    }'
