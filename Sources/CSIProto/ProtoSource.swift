// Written by scripts/generate-proto.sh; do not edit.

/// SHA-256 of proto/csi.proto when the code in this module was generated.
public let csiProtoSourceSHA256 = "fb6e8fdef911b2f916366b814c4a1a681e464817287dcd582402c32661b51bd9"
