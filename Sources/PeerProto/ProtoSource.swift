// Written by scripts/generate-proto.sh; do not edit.

/// SHA-256 of proto/peer.proto when the code in this module was generated.
public let peerProtoSourceSHA256 = "2f371c293a895d69cc9652eb161efb8f54f40d629048742e2876a44a6101ba97"
