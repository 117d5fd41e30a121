import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Staging and target paths come from kubelet; the node plugin acts only inside kubelet's
/// directory, so a hostile or mistaken path can never make it mount over /etc or unmount /.
package struct PathRules {
    package let root: String
    /// kubelet's own paths are under 200 bytes; longer ones are abbreviated in messages.
    package static let quotedLength = 512

    package init(root: String) {
        self.root = URL(fileURLWithPath: root).standardizedFileURL.path
    }

    /// The path, normalized, if it is absolute and strictly inside the root; else INVALID_ARGUMENT.
    package func require(_ path: String, field: String) throws(CSIError) -> String {
        guard !path.isEmpty else { throw .invalidArgument("\(field) is required") }
        guard path.hasPrefix("/") else { throw .invalidArgument("\(field) must be an absolute path, not \(RequestFields.quoted(path, limit: Self.quotedLength))") }
        guard !path.utf8.contains(0), path.utf8.count <= 4096 else { throw .invalidArgument("\(field) is not a valid path") }
        // Bytes, not Characters: as Characters, a "/" followed by a combining mark is no "/" (so a
        // ".." would hide from the split), and U+212A KELVIN SIGN equals "K" (so "/data/\u{212A}8s/x"
        // would pass for a root "/data/K8s").
        guard !path.utf8.split(separator: UInt8(ascii: "/")).contains(where: { $0.elementsEqual("..".utf8) }) else {
            throw .invalidArgument("\(field) must not contain \"..\" components")
        }
        let normalized = URL(fileURLWithPath: path).standardizedFileURL.path
        guard normalized.utf8.starts(with: (root + "/").utf8), normalized.utf8.count > root.utf8.count + 1 else {
            throw .invalidArgument("\(field) \(RequestFields.quoted(path, limit: Self.quotedLength)) is outside the kubelet directory \(root)")
        }
        return normalized
    }

    /// `require`, and then the same with symlinks followed: the deepest part of the path that
    /// exists must resolve inside the root (itself resolved), so a link placed under kubelet's
    /// directory cannot send a mount or an unmount to /etc. The rest is created by the driver.
    package func requireResolved(_ path: String, field: String) throws(CSIError) -> String {
        let normalized = try require(path, field: field)
        let realRoot = Self.realPath(root) ?? root
        var existing = normalized
        var resolved = Self.realPath(existing)
        while resolved == nil, existing != "/" {
            existing = (existing as NSString).deletingLastPathComponent
            resolved = Self.realPath(existing)
        }
        guard let resolved, resolved == realRoot && existing != normalized || resolved.utf8.starts(with: (realRoot + "/").utf8) else {
            throw .invalidArgument("\(field) \(RequestFields.quoted(path, limit: Self.quotedLength)) leads outside the kubelet directory \(root) through a symbolic link")
        }
        return normalized
    }

    /// realpath(3), nil when the path does not exist (or cannot be resolved).
    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
