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

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-rwx.XXXXXX")
tag=$(printf '%04x' $((RANDOM)))
subnet=$((RANDOM % 250 + 1))
ns_a=srb${tag}a ns_b=srb${tag}b
addr_a=198.19.$subnet.1 addr_b=198.19.$subnet.2
pids=()
volume=
cleanup() {
    if [ -n "$volume" ]; then
        for node in b a; do
            python3 "$repo/scripts/bench/peerbench.py" detach "$repo/proto" "$work/$node/csi.sock" "$work/$node/kubelet" "$volume" 2>/dev/null || true
        done
    fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${STRATA_CSI:-}" ]; then
    binary=$STRATA_CSI
else
    (cd "$repo" && swift build -c release --scratch-path .build-bench --product strata-csi >&2)
    binary="$(cd "$repo" && swift build -c release --scratch-path .build-bench --show-bin-path)/strata-csi"
fi

ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add "srb${tag}x" type veth peer name "srb${tag}y"
ip link set "srb${tag}x" netns "$ns_a"
ip link set "srb${tag}y" netns "$ns_b"
ip -n "$ns_a" addr add "$addr_a/24" dev "srb${tag}x"
ip -n "$ns_b" addr add "$addr_b/24" dev "srb${tag}y"
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
ip -n "$ns_a" link set "srb${tag}x" up
ip -n "$ns_b" link set "srb${tag}y" up

tls=$work/tls
mkdir -p "$tls"
curve=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${curve[@]}" -keyout "$tls/ca.key" -out "$tls/ca.crt" -days 1 -subj /CN=bench-ca 2>/dev/null
openssl req "${curve[@]}" -keyout "$tls/tls.key" -out "$tls/tls.csr" -subj /CN=bench-node 2>/dev/null
printf 'extendedKeyUsage=serverAuth,clientAuth\n' > "$tls/leaf.ext"
openssl x509 -req -in "$tls/tls.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -out "$tls/tls.crt" \
    -days 1 -extfile "$tls/leaf.ext" 2>/dev/null

start_node() { # name namespace address peer-name peer-address
    mkdir -p "$work/$1"
    nsenter --net="/run/netns/$2" "$binary" --endpoint "unix://$work/$1/csi.sock" --state-dir "$work/$1/state" \
        --nodeid "node-$1" --kubelet-dir "$work/$1/kubelet" --log-level warning \
        --peer-listen "$3:9821" --peer "node-$4=$5:9821" --peer-tls-dir "$tls" >"$work/$1/driver.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 600); do
        [ -S "$work/$1/csi.sock" ] && break
        sleep 0.05
    done
    sleep 0.5
}
start_node a "$ns_a" "$addr_a" b "$addr_b"
start_node b "$ns_b" "$addr_b" a "$addr_a"

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
