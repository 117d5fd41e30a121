import CSIProto
import Foundation
import PeerProto
@testable import CSIDriver
import StrataTestSupport
import Testing

/// The generated code and the logging rules must follow proto/csi.proto.
@Suite("CSI proto contract", .blockingTolerant)
struct ProtoContractTests {
    static let protoPath = Repository.path("proto/csi.proto")

    @Test("Sources/CSIProto was generated from the current proto/csi.proto")
    func generatedCodeMatchesProto() throws {
        let hash = try Self.sha256(ofFile: Self.protoPath)
        #expect(hash == csiProtoSourceSHA256, "proto/csi.proto changed: run scripts/generate-proto.sh and commit the result")
    }

    @Test("Sources/PeerProto was generated from the current proto/peer.proto")
    func generatedPeerCodeMatchesProto() throws {
        let path = (Self.protoPath as NSString).deletingLastPathComponent + "/peer.proto"
        #expect(try Self.sha256(ofFile: path) == peerProtoSourceSHA256, "proto/peer.proto changed: run scripts/generate-proto.sh and commit the result")
    }

    @Test("Every csi_secret field is redacted from logs")
    func everySecretFieldIsRedacted() throws {
        let proto = try String(contentsOfFile: Self.protoPath, encoding: .utf8)
        let secretFields = proto.split(separator: "\n").filter { $0.contains("(csi_secret) = true") }.compactMap { line -> String? in
            // `map<string, string> secrets = 5 [(csi_secret) = true];` → `secrets`
            let declaration = line.split(separator: "=").first ?? ""
            return declaration.split(separator: " ").last.map(String.init)
        }
        #expect(secretFields.count >= 10, "found only \(secretFields) — did the proto's layout change?")
        for field in secretFields {
            #expect(SecretRedaction.redactedFieldNames.contains(Self.jsonName(of: field)), "\(field) is a csi_secret field that logs would show")
        }
    }

    @Test("Redaction hides secret values, keeps everything else")
    func redactionHidesValues() {
        let request = Csi_V1_CreateVolumeRequest.with {
            $0.name = "pvc-1"
            $0.secrets = ["password": "hunter2-do-not-log"]
            $0.parameters = ["clusterSize": "65536"]
        }
        let json = SecretRedaction.redactedJSON(of: request)
        #expect(!json.contains("hunter2-do-not-log"))
        #expect(json.contains("password"))
        #expect(json.contains("pvc-1"))
        #expect(json.contains("clusterSize"))
    }

    static func jsonName(of field: String) -> String {
        let parts = field.split(separator: "_")
        return ([String(parts[0])] + parts.dropFirst().map { $0.prefix(1).uppercased() + $0.dropFirst() }).joined()
    }

    static func sha256(ofFile path: String) throws -> String {
        String(try ExternalTool.outcome("/usr/bin/sha256sum", [path], errors: .separate).output.prefix(64))
    }
}
