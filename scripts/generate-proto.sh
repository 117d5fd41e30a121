#!/usr/bin/env bash
# Regenerates Sources/CSIProto from proto/csi.proto.
#
# Builds the two protoc plugins (release) from the exact dependency versions this package
# resolves, so the generated code always matches the runtime libraries it links against.
# Needs protoc (Debian: protobuf-compiler). Never run in CI: the generated code is committed and
# a test (CSIProtoTests) checks that it was generated from the current proto/csi.proto.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }

swift package resolve
plugins=.build-protoc-plugins
build_plugin() { # package-checkout product
  swift build -c release --package-path ".build/checkouts/$1" --scratch-path "$plugins/$1" --product "$2" >&2
  echo "$plugins/$1/release/$2"
}
protoc_gen_swift=$(build_plugin swift-protobuf protoc-gen-swift)
protoc_gen_grpc=$(build_plugin grpc-swift-protobuf protoc-gen-grpc-swift-2)

out=Sources/CSIProto
rm -f "$out"/*.pb.swift "$out"/*.grpc.swift
protoc \
  --plugin=protoc-gen-swift="$protoc_gen_swift" \
  --plugin=protoc-gen-grpc-swift-2="$protoc_gen_grpc" \
  --proto_path=proto \
  --swift_out="$out" --swift_opt=Visibility=Public \
  --grpc-swift-2_out="$out" --grpc-swift-2_opt=Visibility=Public,Server=true,Client=true \
  csi.proto

# The hash lets the test suite prove the committed code was generated from this very proto.
hash=$(sha256sum proto/csi.proto | cut -d' ' -f1)
cat > "$out/ProtoSource.swift" <<SWIFT
// Written by scripts/generate-proto.sh; do not edit.

/// SHA-256 of proto/csi.proto when the code in this module was generated.
public let csiProtoSourceSHA256 = "$hash"
SWIFT
echo "generated $(ls "$out" | wc -l) files in $out from proto/csi.proto ($hash)"
