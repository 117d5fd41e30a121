// Written by scripts/generate-proto.sh; do not edit.

/// SHA-256 of proto/peer.proto when the code in this module was generated.
public let peerProtoSourceSHA256 = "cdc51dd57129468f66d59e267f9cc4f4dd1d0adde31461d1062ed90ab1617931"
