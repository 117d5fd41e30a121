#!/usr/bin/env bash
# Node-to-node transport against the wire's own speed, side by side in one sitting.
#
#   scripts/bench-peer.sh [--size-mib N] [--allocated-mib N] [--anchors DIR] [--requests N] [--perf DIR]
#
# Two network namespaces joined by a veth pair (198.19.<n>.1 and .2), a release strata-csi in
# each (mutual TLS with a CA made here by openssl). Node A gets a block volume of --size-mib
# (default 2048) with --allocated-mib (default 1024) written in 2 MiB extents spread over it, and a
# snapshot. Then, in the same sitting:
#   - the anchors (--anchors, default ../shared/bench beside the repository): tcp-anchor.sh (plain
#     TCP, sendfile, 1 MiB receives, written + fsync) and tls-anchor.sh (mutual TLS 1.3 from
#     OpenSSL, 1 MiB writes, written + fsync), each moving --allocated-mib between two namespaces;
#   - strata: the first CreateVolume from the snapshot on node B (the peer fetch of its layers,
#     then an O(1) clone), and a second one (layers already there); the bytes node A put on the
#     veth during the first (TCP payload and headers, TLS, HTTP/2, protobuf) against the allocated
#     bytes, and each driver's CPU seconds (user + system, /proc/PID/stat) per GiB moved;
#   - small requests (--requests per case, 0 skips them): `strata-bench remote-io` in B's
#     namespace reads 4 KiB of a ReadWriteMany volume owned by A over the block wire and over the
#     gRPC Exchange stream (p50/p99 at depth 1 and 32), beside a mutual-TLS echo of 4 KiB in Python
#     (scripts/bench/tls-echo.py) between the same namespaces.
# --perf DIR records both drivers with perf during the first clone (DIR/a.data, DIR/b.data).
# Prints figures and ratios. STRATA_CSI / STRATA_BENCH select given binaries. Cleans up on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
size_mib=2048
allocated_mib=1024
anchors=$repo/../shared/bench
requests=20000
perf_dir=
while [ $# -gt 0 ]; do
    case $1 in
        --size-mib) size_mib=$2; shift ;;
        --allocated-mib) allocated_mib=$2; shift ;;
        --anchors) anchors=$2; shift ;;
        --requests) requests=$2; shift ;;
        --perf) perf_dir=$2; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "bench-peer.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
for anchor in tcp-anchor.sh tls-anchor.sh; do
    [ -x "$anchors/$anchor" ] || { echo "bench-peer.sh: $anchors/$anchor is missing (--anchors DIR)" >&2; exit 1; }
done

. "$repo/scripts/bench/two-nodes.sh"
two_nodes_begin peer spb
bench=${STRATA_BENCH:-}
if [ "$requests" -gt 0 ] && [ -z "$bench" ]; then bench=$(release_binary strata-bench); fi

echo "anchors ($allocated_mib MiB each)..." >&2
tcp_line=$("$anchors/tcp-anchor.sh" "$allocated_mib")
tls_line=$("$anchors/tls-anchor.sh" "$allocated_mib")
anchor_rate() { sed -n 's/.* \([0-9][0-9]*\) MiB\/s$/\1/p' <<<"$1"; }
tcp_rate=$(anchor_rate "$tcp_line")
tls_rate=$(anchor_rate "$tls_line")

two_nodes_up
start_node a "$ns_a" "$addr_a" b "$addr_b" --log-level warning
start_node b "$ns_b" "$addr_b" a "$addr_a" --log-level warning

size=$((size_mib << 20))
allocated=$((allocated_mib << 20))
echo "writing $allocated_mib MiB into a $size_mib MiB volume on node A..." >&2
snapshot=$(python3 "$repo/scripts/bench/peerbench.py" golden "$repo/proto" "$work/a/csi.sock" "$work/a/kubelet" \
    "$size" "$allocated" "$work/data" | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot"])')
sync

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tx_bytes() { ip -n "$ns_a" -s -j link show "${veth_prefix}x" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["bytes"])'; }
pid_a=${pids[0]} pid_b=${pids[1]}
cpu_a=$(cpu_ticks "$pid_a") cpu_b=$(cpu_ticks "$pid_b") tx=$(tx_bytes)
if [ -n "$perf_dir" ]; then
    mkdir -p "$perf_dir"
    perf record -F 1999 -g -p "$pid_a" -o "$perf_dir/a.data" >/dev/null 2>&1 & perf_a=$!
    perf record -F 1999 -g -p "$pid_b" -o "$perf_dir/b.data" >/dev/null 2>&1 & perf_b=$!
    sleep 1
fi
first=$(python3 "$repo/scripts/bench/peerbench.py" clone "$repo/proto" "$work/b/csi.sock" bench-clone-1 "$size" "$snapshot" \
    | python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["seconds"])')
cpu_a=$(( $(cpu_ticks "$pid_a") - cpu_a )) cpu_b=$(( $(cpu_ticks "$pid_b") - cpu_b )) tx=$(( $(tx_bytes) - tx ))
if [ -n "$perf_dir" ]; then kill -INT "$perf_a" "$perf_b"; wait "$perf_a" "$perf_b" || true; fi
second=$(python3 "$repo/scripts/bench/peerbench.py" clone "$repo/proto" "$work/b/csi.sock" bench-clone-2 "$size" "$snapshot" \
    | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["seconds"])')

awk -v a="$allocated" -v f="$first" -v s="$second" -v tcp="$tcp_rate" -v tls="$tls_rate" -v tx="$tx" \
    -v ca="$cpu_a" -v cb="$cpu_b" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    mib = 1048576; gib = mib * 1024; rate = a / mib / f
    printf "%-66s %10s %10s\n", "between two network namespaces (veth), " a / mib " MiB", "seconds", "MiB/s"
    printf "%-66s %10.2f %10.0f\n", "plain TCP anchor (sendfile, 1 MiB receives, written + fsync)", a / mib / tcp, tcp
    printf "%-66s %10.2f %10.0f\n", "mutual-TLS anchor (OpenSSL TLS 1.3, written + fsync)", a / mib / tls, tls
    printf "%-66s %10.3f %10.0f\n", "strata first clone on node B (mTLS peer fetch + clone)", f, rate
    printf "%-66s %10.4f %10s\n", "strata second clone on node B (layers already there)", s, "-"
    printf "strata first clone / TLS anchor: %.2fx   / TCP anchor: %.2fx\n", rate / tls, rate / tcp
    printf "bytes node A sent on the veth / allocated bytes: %.3fx (%d / %d)\n", tx / a, tx, a
    printf "CPU seconds per GiB moved: node A (sender) %.2f, node B (receiver) %.2f\n", ca / hz / (a / gib), cb / hz / (a / gib)
}'

[ "$requests" -gt 0 ] || exit 0
echo "small requests..." >&2
rwx=$(python3 "$repo/scripts/bench/peerbench.py" rwx "$repo/proto" "$work/a/csi.sock" bench-rwx $((256 << 20)) \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["volume"])')
strata_small=$(nsenter --net="/run/netns/$ns_b" "$bench" remote-io --owner "$addr_a:9821" --owner-node node-a --node node-b \
    --tls-dir "$tls" --volume "$rwx" --requests "$requests" --depth 32 --json)
nsenter --net="/run/netns/$ns_a" python3 "$repo/scripts/bench/tls-echo.py" serve "$tls" "$addr_a" 9831 4096 &
echo_server=$!
sleep 0.5
echo_small=$(nsenter --net="/run/netns/$ns_b" python3 "$repo/scripts/bench/tls-echo.py" client "$tls" "$addr_a" 9831 4096 "$requests" 1 32)
wait "$echo_server" || true
python3 - "$strata_small" "$echo_small" <<'PY'
import json, sys
strata, echo = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"\n{'4 KiB round trips over one long-lived mutual-TLS connection':<58} {'p50 µs':>8} {'p99 µs':>8} {'per s':>8}")
rows = [("TLS echo anchor (Python ssl), depth 1", echo["d1"]["p50_us"], echo["d1"]["p99_us"], echo["d1"]["per_second"]),
        ("TLS echo anchor (Python ssl), depth 32", echo["d32"]["p50_us"], echo["d32"]["p99_us"], echo["d32"]["per_second"])]
for key, label in [("wire_d1", "strata read, FUSE worker path, block wire, depth 1"),
                   ("wire_d32", "strata read, FUSE worker path, block wire, depth 32"),
                   ("link_d1", "strata read, FUSE worker path, gRPC stream, depth 1"),
                   ("link_d32", "strata read, FUSE worker path, gRPC stream, depth 32"),
                   ("client_d1", "strata unary Read, gRPC async client, depth 1")]:
    rows.append((label, strata[key + "_p50_us"], strata[key + "_p99_us"], strata[key + "_per_second"]))
for label, p50, p99, rate in rows:
    print(f"{label:<58} {p50:8.0f} {p99:8.0f} {rate:8.0f}")
for key, name in [("wire", "block wire"), ("link", "gRPC stream")]:
    print(f"strata {name} p50 / anchor p50: depth 1 {strata[key + '_d1_p50_us'] / echo['d1']['p50_us']:.2f}x, "
          f"depth 32 {strata[key + '_d32_p50_us'] / echo['d32']['p50_us']:.2f}x")
PY
