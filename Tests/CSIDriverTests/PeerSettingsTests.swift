import Foundation
import StrataTestSupport
import Testing
@testable import Peering

/// What the peer flags accept at start, and what they refuse with a reason.
struct PeerSettingsTests {
    /// Settings over a TLS directory whose three files exist (their content is not read here).
    private static func settings(listen: String, in directory: TemporaryDirectory) throws -> PeerSettings {
        for name in ["ca.crt", "tls.crt", "tls.key"] {
            #expect(FileManager.default.createFile(atPath: directory.path + "/" + name, contents: Data()))
        }
        var settings = PeerSettings(tlsDirectory: directory.path)
        settings.listenAddress = try NetworkAddress(parsing: listen)
        return settings
    }

    @Test("The block wire listens on the peer port + 1 unless told; peer port 65535 needs --peer-wire-port or off")
    func wirePortBesideThePeerPort() throws {
        let directory = try TemporaryDirectory()
        var settings = try Self.settings(listen: "198.18.0.1:9820", in: directory)
        try settings.validate()
        #expect(settings.wireListenPort == 9821)

        settings = try Self.settings(listen: "198.18.0.1:65535", in: directory)
        #expect { try settings.validate() } throws: { "\($0)".contains("--peer-wire-port") }
        settings.wirePort = 9000
        try settings.validate()
        #expect(settings.wireListenPort == 9000)
        settings.wirePort = nil
        settings.blockWire = false
        try settings.validate()
        #expect(settings.wireListenPort == nil)
    }
}
