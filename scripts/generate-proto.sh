#!/usr/bin/env bash
# Regenerates Sources/CSIProto from proto/csi.proto, Sources/AdminProto from proto/admin.proto and
# Sources/PeerProto from proto/peer.proto.
#
# Builds the two protoc plugins (release) from the exact dependency versions this package
# resolves, so the generated code always matches the runtime libraries it links against; plugins
# built earlier from those versions can be named instead with STRATA_PROTOC_GEN_SWIFT and
# STRATA_PROTOC_GEN_GRPC_SWIFT (paths to protoc-gen-swift and protoc-gen-grpc-swift-2).
# Needs protoc (Debian: protobuf-compiler). Never run in CI: the generated code is committed and
# tests (ProtoContractTests, AdminProtoTests) check that it was generated from the current protos.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }

plugins=.build-protoc-plugins
build_plugin() { # package-checkout product
  swift build -c release --package-path ".build/checkouts/$1" --scratch-path "$plugins/$1" --product "$2" >&2
  echo "$plugins/$1/release/$2"
}
if [ -z "${STRATA_PROTOC_GEN_SWIFT:-}" ] || [ -z "${STRATA_PROTOC_GEN_GRPC_SWIFT:-}" ]; then
  swift package resolve
fi
protoc_gen_swift=${STRATA_PROTOC_GEN_SWIFT:-$(build_plugin swift-protobuf protoc-gen-swift)}
protoc_gen_grpc=${STRATA_PROTOC_GEN_GRPC_SWIFT:-$(build_plugin grpc-swift-protobuf protoc-gen-grpc-swift-2)}

generate() { # proto module hash-constant
  local proto=$1 out=Sources/$2 constant=$3
  mkdir -p "$out"
  rm -f "$out"/*.pb.swift "$out"/*.grpc.swift
  protoc \
    --plugin=protoc-gen-swift="$protoc_gen_swift" \
    --plugin=protoc-gen-grpc-swift-2="$protoc_gen_grpc" \
    --proto_path=proto \
    --swift_out="$out" --swift_opt=Visibility=Public \
    --grpc-swift-2_out="$out" --grpc-swift-2_opt=Visibility=Public,Server=true,Client=true \
    "$proto"
  # The hash lets the test suite prove the committed code was generated from this very proto.
  local hash
  hash=$(sha256sum "proto/$proto" | cut -d' ' -f1)
  cat > "$out/ProtoSource.swift" <<SWIFT
// Written by scripts/generate-proto.sh; do not edit.

/// SHA-256 of proto/$proto when the code in this module was generated.
public let ${constant} = "$hash"
SWIFT
  echo "generated $(ls "$out" | wc -l) files in $out from proto/$proto ($hash)"
}
generate csi.proto CSIProto csiProtoSourceSHA256
generate admin.proto AdminProto adminProtoSourceSHA256
generate peer.proto PeerProto peerProtoSourceSHA256
