// Written by scripts/generate-proto.sh; do not edit.

/// SHA-256 of proto/peer.proto when the code in this module was generated.
public let peerProtoSourceSHA256 = "ec27cc0796f30914ab0811c26719ad57ef45bc6b74757b76e315828629c85c63"
