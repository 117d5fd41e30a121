#!/usr/bin/env bash
# Fuzzes the store's on-disk metadata decoding and CSI request validation with libFuzzer.
#
#   scripts/fuzz.sh [--seconds N] [target…] [-- libFuzzer options…]
#
# Targets (default: all): store (allocation maps, layer file names, cursors, catalog rows,
# parameters JSON), store-open (a real store reopened over a fuzzed allocation map), requests
# (CSI requests through the validation the services run first). Each runs N seconds (default 30)
# on a fresh copy of its seeds in Tests/FuzzCorpus/<target>. Builds strata-fuzz with
# -sanitize=fuzzer,address into .build-fuzz. Exits non-zero if any target finds a crash, a
# broken invariant, a leak of the sanitizer's kind or a hang; the input is kept in
# .build-fuzz/artifacts/ and can be replayed with `.build-fuzz/debug/strata-fuzz <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=30
targets=()
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        --) shift; extra=("$@"); break ;;
        store|store-open|requests) targets+=("$1"); shift ;;
        *) echo "usage: scripts/fuzz.sh [--seconds N] [store|store-open|requests]… [-- libFuzzer options]" >&2; exit 2 ;;
    esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(store store-open requests)

build_started=$SECONDS
set +e
swift build --scratch-path .build-fuzz -c debug --product strata-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DSTRATA_FUZZING 2>&1 \
    | grep --line-buffered -v "ld.gold: warning: Cannot export local symbol"
status=${PIPESTATUS[0]}
set -e
[[ $status -eq 0 ]] || { echo "fuzz.sh: the instrumented build failed" >&2; exit "$status"; }
binary=.build-fuzz/debug/strata-fuzz
echo "fuzz.sh: built in $((SECONDS - build_started)) s"

# Scratch files of the harnesses (stores, maps) go to memory when possible.
scratch_parent=/tmp
[[ -d /dev/shm && -w /dev/shm ]] && scratch_parent=/dev/shm
work="$(mktemp -d "$scratch_parent/strata-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
artifacts="$PWD/.build-fuzz/artifacts"
mkdir -p "$artifacts"

# Swift's own crash backtracer would race libFuzzer's handler; LeakSanitizer would report the
# Swift runtime's deliberate one-time allocations.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"

failed=()
for target in "${targets[@]}"; do
    corpus="$work/corpus-$target"
    mkdir -p "$corpus" "$work/tmp-$target"
    cp Tests/FuzzCorpus/"$target"/* "$corpus"/
    dictionary=Tests/FuzzCorpus/"${target%-open}".dict
    options=(-max_total_time="$seconds" -timeout=30 -print_final_stats=1 -artifact_prefix="$artifacts/$target-")
    [[ -f "$dictionary" ]] && options+=(-dict="$dictionary")
    echo "fuzz.sh: $target for ${seconds} s"
    log="$work/$target.log"
    if TMPDIR="$work/tmp-$target" "$binary" "$target" "${options[@]}" "${extra[@]}" "$corpus" >"$log" 2>&1; then
        grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$log" | tr '\n' ' ' | sed "s/^/fuzz.sh: $target ok: /"
        echo
    else
        failed+=("$target")
        echo "fuzz.sh: $target FAILED; the end of its log:" >&2
        grep -v "^INFO:\|^#[0-9]" "$log" | tail -40 >&2
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: failures in ${failed[*]}; inputs in $artifacts" >&2
    exit 1
fi
