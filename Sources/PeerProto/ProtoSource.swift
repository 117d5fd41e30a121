// Written by scripts/generate-proto.sh; do not edit.

/// SHA-256 of proto/peer.proto when the code in this module was generated.
public let peerProtoSourceSHA256 = "adc8582150e6ae9d07950e6333074c3ce1b2ea6cf66eae1cd3e13571e9be6593"
