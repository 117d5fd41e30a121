#!/usr/bin/env bash
# Builds scripts/bench/csibench into $1 (a binary path outside the repository), in GOPATH mode
# against Debian's grpc-go (golang-google-grpc-dev) with CSI stubs generated from proto/csi.proto
# by protoc-gen-go and protoc-gen-go-grpc: there is no Go module proxy here. The temporary
# GOPATH is removed afterwards; nothing is written into the repository.
set -euo pipefail
out=${1:?usage: build-go.sh OUTPUT-BINARY}
repo=$(cd "$(dirname "$0")/../.." && pwd)
for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
    command -v "$tool" >/dev/null || { echo "build-go.sh: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done
workspace=$(mktemp -d "${TMPDIR:-/tmp}/strata-csibench-go.XXXXXX")
trap 'rm -rf "$workspace"' EXIT
mkdir -p "$workspace/src/csibench" "$workspace/cache"
protoc --proto_path="$repo/proto" --go_out="$workspace/src" --go-grpc_out="$workspace/src" csi.proto
cp "$repo"/scripts/bench/csibench/*.go "$workspace/src/csibench/"
(cd "$workspace/src/csibench" &&
    GO111MODULE=off GOPATH="$workspace:/usr/share/gocode" GOFLAGS="" GOCACHE="$workspace/cache" \
    go build -o "$out" .)
