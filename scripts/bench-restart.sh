#!/usr/bin/env bash
# The stall a running workload sees when the node plugin restarts under it:
#
#   scripts/bench-restart.sh [--kills N] [--signal KILL|TERM]
#
# Starts strata-fuse-keeper and strata-csi (release builds in .build-bench, or STRATA_CSI and
# STRATA_FUSE_KEEPER=/path), creates, stages and publishes a 1 GiB Block volume over gRPC
# (scripts/bench/csibench) and runs scripts/bench/pod-writer.py on it (O_DIRECT writes, each
# read back, fsync every 8). Then N times (default 50): lets I/O flow for 0.3-0.8 s, kills the
# driver (SIGKILL by default) and starts it again with the same flags. Prints, over the kills,
# p50 / p99 / max of the longest single I/O wait the writer saw around each kill (the stall),
# of the time from the kill to the new driver reporting ready, and the writer's error count.
# Needs root, /dev/fuse and loop devices. Everything is undone on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
kills=50
signal=KILL
while [ $# -gt 0 ]; do
    case $1 in
        --kills) kills=${2:?--kills needs a number}; shift ;;
        --signal) signal=${2:?--signal needs KILL or TERM}; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "bench-restart.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || { echo "bench-restart.sh needs root (FUSE, loop devices, mounts)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-restart.XXXXXX")
mkdir -p "$work/kubelet"
driver_pid=
keeper_pid=
writer_pid=
volume_id=
client=
source "$repo/scripts/bench/common.sh"

cleanup() {
    local status=$?
    set +e
    [ -n "$writer_pid" ] && { touch "$work/writer.stop"; wait "$writer_pid"; }
    if [ -n "$volume_id" ] && [ -n "$client" ]; then
        "$client" node-down -socket "$driver_socket" -volume-id "$volume_id" -staging "$staging" -target "$target" \
            || echo "bench-restart.sh: node-down failed (see above)" >&2
    fi
    bench_stop_driver
    [ -n "$keeper_pid" ] && kill "$keeper_pid" && wait "$keeper_pid" 2>/dev/null
    if grep -qF "$work" /proc/self/mountinfo; then
        echo "bench-restart.sh: mounts remain under $work; leaving it in place" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

binary=$(bench_driver_binary)
if [ -n "${STRATA_FUSE_KEEPER:-}" ]; then
    keeper=$STRATA_FUSE_KEEPER
else
    (cd "$repo" && swift build -c release --scratch-path .build-bench --product strata-fuse-keeper >&2)
    keeper="$(cd "$repo" && swift build -c release --scratch-path .build-bench --show-bin-path)/strata-fuse-keeper"
fi
client=$(bench_build_client)
"$keeper" --socket "$work/keeper.sock" 2>"$work/keeper.log" &
keeper_pid=$!
until [ -S "$work/keeper.sock" ]; do kill -0 "$keeper_pid" || { cat "$work/keeper.log" >&2; exit 1; }; sleep 0.05; done
flags=(--mode all --kubelet-dir "$work/kubelet" --fuse-keeper-socket "$work/keeper.sock")
bench_start_driver "$binary" "${flags[@]}"

published=$("$client" node-up -socket "$driver_socket" -kubelet-dir "$work/kubelet" -name bench-restart -size $((1 << 30)))
read -r volume_id staging target < <(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["volume_id"], d["staging_path"], d["target_path"])' <<<"$published")
journal=$work/writer.journal
: >"$journal"
python3 "$repo/scripts/bench/pod-writer.py" block "$target" "$journal" "$work/writer.stop" 2>"$work/writer.stderr" &
writer_pid=$!
until grep -q '^W ' "$journal"; do sleep 0.05; done

now() { date +%s.%N; }
ready_times=()
echo "bench-restart.sh: $kills restarts with SIG$signal under a writer on $target" >&2
for ((kill = 0; kill < kills; kill++)); do
    sleep "0.$((RANDOM % 6 + 3))"
    echo "K $kill" >>"$journal"
    start=$(now)
    kill -"$signal" "$driver_pid"
    wait "$driver_pid" 2>/dev/null || true
    driver_pid=
    bench_start_driver "$binary" "${flags[@]}"
    ready_times+=("$(python3 -c "print($(now) - $start)")")
done
sleep 1
touch "$work/writer.stop"
wait "$writer_pid" || true
writer_pid=

python3 - "$journal" "${ready_times[@]}" <<'PY'
import sys
journal = open(sys.argv[1]).read().split("\n")
ready = sorted(float(value) for value in sys.argv[2:])
stalls, current, errors = [], None, 0
for line in journal:
    if line.startswith("K "):
        if current is not None:
            stalls.append(current)
        current = 0.0
    elif line.startswith("L ") and current is not None:
        current = max(current, float(line[2:]))
    elif line.startswith("ERR"):
        errors += 1
if current is not None:
    stalls.append(current)
stalls.sort()
def pick(values, fraction):
    return values[min(len(values) - 1, int(round(fraction * (len(values) - 1))))] if values else float("nan")
verdict = next((line for line in reversed(journal) if line.startswith("V ")), "V none")
print("| measure (%d restarts) | p50 | p99 | max |" % len(stalls))
print("| --- | --- | --- | --- |")
print("| longest I/O wait around a restart | %.3f s | %.3f s | %.3f s |" % (pick(stalls, 0.5), pick(stalls, 0.99), stalls[-1] if stalls else float("nan")))
print("| kill to the new driver ready | %.3f s | %.3f s | %.3f s |" % (pick(ready, 0.5), pick(ready, 0.99), ready[-1] if ready else float("nan")))
print("writer: %d I/O errors; final check: %s" % (errors, verdict[2:]))
PY
