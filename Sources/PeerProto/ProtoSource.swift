// Written by scripts/generate-proto.sh; do not edit.

/// SHA-256 of proto/peer.proto when the code in this module was generated.
public let peerProtoSourceSHA256 = "93e4c716e215af447f7be3209238488c51dd8901295be454cfff1a7f378d227c"
