#!/usr/bin/env bash
# Node-path benchmark: fio on a published Strata Block volume beside the same jobs on a plain
# file and on a loop device over a file seen through bindfs (a plain FUSE passthrough).
#
#   scripts/bench-node.sh [--quick] [--json] [--runtime SECONDS] [--keep-results DIR]
#
# Needs root, /dev/fuse, loop devices, fio and bindfs (scripts/install-deps.sh installs them).
# Starts the release strata-csi (built incrementally in .build-bench, or STRATA_CSI=/path) in
# mode all on a temporary directory under ${TMPDIR:-/tmp} (state, socket and kubelet dir), then
# over gRPC (scripts/bench/csibench) creates a 2 GiB Block volume, stages and publishes it as
# kubelet would. Each target is first written once in full (the "prefill", so reads hit real
# data), then gets, each for a fixed runtime (10 s; 3 s with --quick), with libaio, direct=1
# and iodepth=32: sequential read 1 MiB, random read 4 KiB, sequential write 1 MiB. Jobs run
# target after target (Strata, plain, bindfs+loop) so drift in the machine hits all three alike.
#   plain:       a 2 GiB file on the same filesystem as the state directory
#   bindfs+loop: losetup --direct-io=on over a 2 GiB file in a directory exported through
#                `bindfs $BINDFS_OPTIONS` (default --multithreaded: Strata serves FUSE with
#                16 threads; bindfs is single-threaded unless told)
# Everything (publication, staging, volume, driver, bindfs mount, loop device, files) is undone
# on exit, failure included.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runtime=10
json=false
keep=""
size=$((2 << 30))
bindfs_options=${BINDFS_OPTIONS:---multithreaded}
while [ $# -gt 0 ]; do
    case $1 in
        --quick) runtime=3 ;;
        --json) json=true ;;
        --runtime) runtime=${2:?--runtime needs seconds}; shift ;;
        --keep-results) keep=${2:?--keep-results needs a directory}; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "bench-node.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || { echo "bench-node.sh needs root (FUSE, loop devices, mounts)" >&2; exit 1; }
for tool in fio bindfs losetup python3; do
    command -v "$tool" >/dev/null || { echo "bench-node.sh: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
[ -e /dev/fuse ] && [ -e /dev/loop-control ] || { echo "bench-node.sh needs /dev/fuse and /dev/loop-control" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-node.XXXXXX")
results=$work/results
mkdir -p "$results" "$work/kubelet" "$work/plain" "$work/bindfs-source" "$work/bindfs-mount"
driver_pid=
volume_id=
staging=
target=
bindfs_loop=
client=

say() { $json || echo "$@" >&2; }

cleanup() {
    local status=$?
    set +e
    if [ -n "$volume_id" ] && [ -n "$client" ]; then
        "$client" node-down -socket "$driver_socket" -volume-id "$volume_id" -staging "$staging" -target "$target" \
            || echo "bench-node.sh: node-down failed (see above)" >&2
    fi
    bench_stop_driver
    [ -n "$bindfs_loop" ] && losetup -d "$bindfs_loop"
    mountpoint -q "$work/bindfs-mount" && umount "$work/bindfs-mount"
    # Anything still mounted or attached under $work is a leak: report it, then clear it.
    local leaks
    leaks=$(grep -F "$work" /proc/self/mountinfo | awk '{print $5}' | sort -r)
    for mount in $leaks; do
        echo "bench-node.sh: leftover mount $mount; unmounting" >&2
        umount -l "$mount"
    done
    losetup -l -n -O NAME,BACK-FILE | grep -F "$work" | while read -r device _; do
        echo "bench-node.sh: leftover loop device $device; detaching" >&2
        losetup -d "$device"
    done
    if grep -qF "$work" /proc/self/mountinfo; then
        echo "bench-node.sh: mounts remain under $work; leaving it in place" >&2
    else
        [ -n "$keep" ] && mkdir -p "$keep" && cp "$results"/*.json "$work/driver.log" "$keep"/ 2>/dev/null
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
source "$repo/scripts/bench/common.sh"

binary=$(bench_driver_binary)
client=$(bench_build_client)
bench_start_driver "$binary" --mode all --kubelet-dir "$work/kubelet"
say "strata-csi $binary: pid $driver_pid, state in $work/state"

# Strata: a published Block volume.
published=$("$client" node-up -socket "$driver_socket" -kubelet-dir "$work/kubelet" -name bench-node -size "$size")
read -r volume_id staging target < <(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["volume_id"], d["staging_path"], d["target_path"])' <<<"$published")
[ -b "$target" ] || { echo "bench-node.sh: $target is not a block device" >&2; exit 1; }
major=$((16#$(stat -c %t "$target")))
minor=$((16#$(stat -c %T "$target")))
strata_dio=$(cat "/sys/dev/block/$major:$minor/loop/dio" 2>/dev/null || echo "?")

# plain: a file beside the state directory.
truncate -s "$size" "$work/plain/plain.img"

# bindfs+loop: the same kind of file through a FUSE passthrough, under a direct-I/O loop device.
truncate -s "$size" "$work/bindfs-source/loop.img"
# shellcheck disable=SC2086
bindfs $bindfs_options "$work/bindfs-source" "$work/bindfs-mount"
bindfs_loop=$(losetup --find --show --direct-io=on "$work/bindfs-mount/loop.img")
bindfs_dio=$(cat "/sys/block/$(basename "$bindfs_loop")/loop/dio")

declare -A files=([strata]=$target [plain]=$work/plain/plain.img [bindfs_loop]=$bindfs_loop)
filesystem=$(df --output=source,fstype "$work" | tail -1 | tr -s ' ')
cat >"$results/meta.json" <<JSON
{"fio_runtime_s": $runtime, "fio_iodepth": 32, "size_bytes": $size, "filesystem": "$filesystem",
 "strata_loop_dio": "$strata_dio", "bindfs_loop_dio": "$bindfs_dio", "bindfs_options": "$bindfs_options"}
JSON

# fio_job NAME TARGET ARGS...: one job, its JSON kept as results/NAME-TARGET.json.
fio_job() {
    local name=$1 where=$2
    shift 2
    fio --name="$name" --filename="${files[$where]}" --size="$size" --ioengine=libaio --direct=1 \
        --iodepth=32 --numjobs=1 --group_reporting --output-format=json "$@" >"$results/$name-$where.json"
    say "  $name on $where: $(python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; s=j["read"] if j["read"]["io_bytes"] else j["write"]; print("%.0f MB/s, %.0f IOPS" % (s["bw_bytes"]/1e6, s["iops"]))' <"$results/$name-$where.json")"
}

targets=(strata plain bindfs_loop)
say "prefill (one full sequential write of each target)"
for where in "${targets[@]}"; do fio_job prefill "$where" --rw=write --bs=1M; done
for job in seqread randread seqwrite; do
    say "$job, ${runtime} s per target"
    case $job in
        seqread) arguments=(--rw=read --bs=1M) ;;
        randread) arguments=(--rw=randread --bs=4k) ;;
        seqwrite) arguments=(--rw=write --bs=1M) ;;
    esac
    for where in "${targets[@]}"; do
        fio_job "$job" "$where" "${arguments[@]}" --time_based --runtime="$runtime"
    done
done

if $json; then
    python3 "$repo/scripts/bench/fio-report.py" "$results" --json
else
    echo
    python3 "$repo/scripts/bench/fio-report.py" "$results"
fi
