# Sourced by the two-node benchmarks (bench-peer.sh, bench-rwx.sh, bench-handover.sh): two
# network namespaces joined by a veth pair, a CA and one node certificate made here, a release
# strata-csi in each namespace, and the clean-up of all of it on exit.
#
#   two_nodes_begin NAME PREFIX   $work (a directory), $ns_a/$ns_b, $addr_a/$addr_b (198.19.<n>.1/.2),
#                                 $pids, $binary (STRATA_CSI or a release build in .build-bench);
#                                 on exit runs `before_cleanup` if the script defines it, then
#                                 stops the drivers, unmounts, deletes the namespaces and $work
#   two_nodes_up                  the namespaces, the veth pair and $tls (ca.crt, tls.crt, tls.key)
#   start_node NAME NS ADDRESS PEER PEER-ADDRESS [FLAGS...]
#                                 strata-csi as node-NAME, peering with node-PEER, waits for its socket

two_nodes_begin() { # name prefix
    work=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-$1.XXXXXX")
    veth_prefix=$2$(printf '%04x' $((RANDOM)))
    local subnet=$((RANDOM % 250 + 1))
    ns_a=${veth_prefix}a ns_b=${veth_prefix}b
    addr_a=198.19.$subnet.1 addr_b=198.19.$subnet.2
    pids=()
    trap two_nodes_cleanup EXIT
    trap 'exit 130' INT TERM
    binary=${STRATA_CSI:-$(release_binary strata-csi)}
}

release_binary() { # product → path of its release binary, built when needed
    (cd "$repo" && swift build -c release --scratch-path .build-bench --product "$1" >&2)
    echo "$(cd "$repo" && swift build -c release --scratch-path .build-bench --show-bin-path)/$1"
}

two_nodes_cleanup() {
    if declare -F before_cleanup >/dev/null; then before_cleanup || true; fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    rm -rf "$work"
}

two_nodes_up() {
    ip netns add "$ns_a"
    ip netns add "$ns_b"
    ip link add "${veth_prefix}x" type veth peer name "${veth_prefix}y"
    ip link set "${veth_prefix}x" netns "$ns_a"
    ip link set "${veth_prefix}y" netns "$ns_b"
    ip -n "$ns_a" addr add "$addr_a/24" dev "${veth_prefix}x"
    ip -n "$ns_b" addr add "$addr_b/24" dev "${veth_prefix}y"
    for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
    ip -n "$ns_a" link set "${veth_prefix}x" up
    ip -n "$ns_b" link set "${veth_prefix}y" up

    tls=$work/tls
    mkdir -p "$tls"
    local curve=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${curve[@]}" -keyout "$tls/ca.key" -out "$tls/ca.crt" -days 1 -subj /CN=bench-ca 2>/dev/null
    openssl req "${curve[@]}" -keyout "$tls/tls.key" -out "$tls/tls.csr" -subj /CN=bench-node 2>/dev/null
    printf 'extendedKeyUsage=serverAuth,clientAuth\n' > "$tls/leaf.ext"
    openssl x509 -req -in "$tls/tls.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -out "$tls/tls.crt" \
        -days 1 -extfile "$tls/leaf.ext" 2>/dev/null
}

start_node() { # name namespace address peer-name peer-address [flags...]
    local name=$1 ns=$2 address=$3 peer=$4 peer_address=$5
    shift 5
    mkdir -p "$work/$name"
    nsenter --net="/run/netns/$ns" "$binary" --endpoint "unix://$work/$name/csi.sock" --state-dir "$work/$name/state" \
        --nodeid "node-$name" --kubelet-dir "$work/$name/kubelet" \
        --peer-listen "$address:9821" --peer "node-$peer=$peer_address:9821" --peer-tls-dir "$tls" "$@" \
        >"$work/$name/driver.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 600); do
        [ -S "$work/$name/csi.sock" ] && break
        sleep 0.05
    done
    sleep 0.5
}
