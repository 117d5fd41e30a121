// Written by scripts/generate-proto.sh; do not edit.

/// SHA-256 of proto/admin.proto when the code in this module was generated.
public let adminProtoSourceSHA256 = "9379ccbbbd57920b9ad6febbbb01372c2f7ef2f8e1617ec87da43324e5c0295a"
