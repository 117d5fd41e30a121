import AdminProto
import Foundation
import StrataTestSupport
import Testing

@Suite("Admin proto contract", .blockingTolerant)
struct AdminProtoTests {
    @Test("Sources/AdminProto was generated from the current proto/admin.proto")
    func generatedCodeMatchesProto() throws {
        let path = (ProtoContractTests.protoPath as NSString).deletingLastPathComponent + "/admin.proto"
        #expect(try ProtoContractTests.sha256(ofFile: path) == adminProtoSourceSHA256,
                "proto/admin.proto changed: run scripts/generate-proto.sh and commit the result")
    }
}
