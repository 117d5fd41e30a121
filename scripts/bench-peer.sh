#!/usr/bin/env bash
# Node-to-node layer transfer against a plain TCP copy of the same bytes, side by side in one run.
#
#   scripts/bench-peer.sh [--size-mib N] [--allocated-mib N]
#
# Two network namespaces joined by a veth pair (198.19.<n>.1 and .2), a release strata-csi in
# each (mutual TLS with a CA made here by openssl). Node A gets a block volume of --size-mib
# (default 2048) with --allocated-mib (default 1024) written in 2 MiB extents spread over it, and a
# snapshot. Then, between the same namespaces:
#   - plain TCP: socat sends the same allocated bytes (a contiguous file), and the whole virtual
#     size (what a copy of the volume that does not know its holes moves);
#   - strata: the first CreateVolume from the snapshot on node B (the peer fetch of its layers,
#     then an O(1) clone), and a second one (layers already there).
# Prints throughput and times. Set STRATA_CSI to use a given binary. Cleans up on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
size_mib=2048
allocated_mib=1024
while [ $# -gt 0 ]; do
    case $1 in
        --size-mib) size_mib=$2; shift ;;
        --allocated-mib) allocated_mib=$2; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "bench-peer.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
command -v socat >/dev/null || { echo "socat is missing: scripts/install-deps.sh installs it" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-peer.XXXXXX")
tag=$(printf '%04x' $((RANDOM)))
subnet=$((RANDOM % 250 + 1))
ns_a=spb${tag}a ns_b=spb${tag}b
addr_a=198.19.$subnet.1 addr_b=198.19.$subnet.2
pids=()
cleanup() {
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
ip link add "spb${tag}x" type veth peer name "spb${tag}y"
ip link set "spb${tag}x" netns "$ns_a"
ip link set "spb${tag}y" netns "$ns_b"
ip -n "$ns_a" addr add "$addr_a/24" dev "spb${tag}x"
ip -n "$ns_b" addr add "$addr_b/24" dev "spb${tag}y"
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
ip -n "$ns_a" link set "spb${tag}x" up
ip -n "$ns_b" link set "spb${tag}y" up

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

size=$((size_mib << 20))
allocated=$((allocated_mib << 20))
echo "writing $allocated_mib MiB into a $size_mib MiB volume on node A..." >&2
snapshot=$(python3 "$repo/scripts/bench/peerbench.py" golden "$repo/proto" "$work/a/csi.sock" "$work/a/kubelet" \
    "$size" "$allocated" "$work/data" | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot"])')
sync

tcp_copy() { # file-or-device bytes → seconds
    local port=$((9900 + RANDOM % 90))
    nsenter --net="/run/netns/$ns_b" socat -u "TCP-LISTEN:$port,reuseaddr" OPEN:/dev/null &
    local receiver=$!
    sleep 0.3
    local started ended
    started=$(date +%s.%N)
    nsenter --net="/run/netns/$ns_a" sh -c "head -c $2 $1 | socat -u - TCP:$addr_b:$port"
    wait "$receiver"
    ended=$(date +%s.%N)
    echo "$started $ended" | awk '{printf "%.3f", $2 - $1}'
}
# Warm the page cache so both copies read from memory.
cat "$work/data" >/dev/null
tcp_allocated=$(tcp_copy "$work/data" "$allocated")
tcp_virtual=$(tcp_copy /dev/zero "$size")
first=$(python3 "$repo/scripts/bench/peerbench.py" clone "$repo/proto" "$work/b/csi.sock" bench-clone-1 "$size" "$snapshot" \
    | python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["seconds"])')
second=$(python3 "$repo/scripts/bench/peerbench.py" clone "$repo/proto" "$work/b/csi.sock" bench-clone-2 "$size" "$snapshot" \
    | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["seconds"])')

awk -v a="$allocated" -v v="$size" -v ta="$tcp_allocated" -v tv="$tcp_virtual" -v f="$first" -v s="$second" 'BEGIN {
    mib = 1048576
    printf "%-58s %10s %12s\n", "between two network namespaces (veth)", "seconds", "MiB/s"
    printf "%-58s %10.3f %12.0f\n", "plain TCP (socat), the allocated bytes", ta, a / mib / ta
    printf "%-58s %10.3f %12.0f\n", "strata first clone on node B (mTLS peer fetch + clone)", f, a / mib / f
    printf "%-58s %10.3f %12s\n", "plain TCP (socat), the whole virtual size", tv, sprintf("%.0f", v / mib / tv)
    printf "%-58s %10.4f %12s\n", "strata second clone on node B (layers already there)", s, "-"
    printf "strata fetch / plain TCP of the same bytes: %.2fx; first clone / copy of the virtual size: %.2fx the time\n", ta / f, f / tv
}'
