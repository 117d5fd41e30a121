import Foundation

/// The executables `swift build` put beside the test bundle (strata-csi, strata,
/// strata-fuse-keeper, strata-bench), so tests run the binaries of the same build.
public enum BuildProducts {
    /// The path of `name` in the nearest folder above the test executable that holds it, or nil
    /// when it was not built. (On Linux the test bundle is `<build>/StrataPackageTests.xctest`,
    /// sometimes run from inside it.)
    public static func path(of name: String) -> String? {
        let testBinary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = (testBinary as NSString).deletingLastPathComponent
        while !directory.isEmpty, directory != "/" {
            if FileManager.default.isExecutableFile(atPath: directory + "/" + name) { return directory + "/" + name }
            directory = (directory as NSString).deletingLastPathComponent
        }
        return nil
    }
}
