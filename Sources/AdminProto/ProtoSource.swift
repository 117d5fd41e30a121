// Written by scripts/generate-proto.sh; do not edit.

/// SHA-256 of proto/admin.proto when the code in this module was generated.
public let adminProtoSourceSHA256 = "f2c8bc4f827515a4b8d391c4b9259f37e1231d3679ed5f5b66098fad50b9555e"
