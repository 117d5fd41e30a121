# Shared by scripts/bench-grpc.sh and scripts/bench-node.sh (sourced, not run): building the
# release strata-csi and the Go client, and starting and stopping the driver.
# Expects $repo and $work (the run's temporary directory) to be set by the caller.

# The release strata-csi: $STRATA_CSI if set, else built (incrementally) in .build-bench.
bench_driver_binary() {
    if [ -n "${STRATA_CSI:-}" ]; then
        echo "$STRATA_CSI"
        return
    fi
    (cd "$repo" && swift build -c release --scratch-path .build-bench --product strata-csi >&2)
    echo "$(cd "$repo" && swift build -c release --scratch-path .build-bench --show-bin-path)/strata-csi"
}

# Builds the Go client into the run's temporary directory (never into the repository).
bench_build_client() {
    "$repo/scripts/bench/build-go.sh" "$work/csibench" >&2
    echo "$work/csibench"
}

# bench_start_driver BINARY EXTRA-ARGS...: serves on $work/csi.sock with state in $work/state.
bench_start_driver() {
    local binary=$1
    shift
    driver_socket=$work/csi.sock
    driver_log=$work/driver.log
    "$binary" --endpoint "unix://$driver_socket" --state-dir "$work/state" --nodeid bench-node \
        --log-level "${STRATA_LOG_LEVEL:-info}" --grace-period 5 "$@" >"$driver_log" 2>&1 &
    driver_pid=$!
    local waited=0
    until [ -S "$driver_socket" ] && grep -q listening "$driver_log"; do
        if ! kill -0 "$driver_pid" 2>/dev/null; then
            echo "strata-csi exited at start; its log:" >&2
            cat "$driver_log" >&2
            driver_pid=
            return 1
        fi
        sleep 0.05
        waited=$((waited + 1))
        if [ "$waited" -gt 600 ]; then
            echo "strata-csi did not listen within 30 s; its log:" >&2
            cat "$driver_log" >&2
            return 1
        fi
    done
}

# Stops the driver this run started (by its pid) and waits for it to exit.
bench_stop_driver() {
    [ -n "${driver_pid:-}" ] || return 0
    if kill -0 "$driver_pid" 2>/dev/null; then
        kill -TERM "$driver_pid" 2>/dev/null || true
        local waited=0
        while kill -0 "$driver_pid" 2>/dev/null && [ "$waited" -lt 200 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        kill -0 "$driver_pid" 2>/dev/null && kill -KILL "$driver_pid" 2>/dev/null || true
    fi
    wait "$driver_pid" 2>/dev/null || true
    driver_pid=
}
