// Written by scripts/generate-proto.sh; do not edit.

/// SHA-256 of proto/admin.proto when the code in this module was generated.
public let adminProtoSourceSHA256 = "c8f639b720455c2c80b5e087707359c34cb7ea7a3ca33107054b78d4ed8eac2d"
