import Foundation

/// Paths inside the repository, found from this file's location
/// (`Tests/StrataTestSupport/Repository.swift`).
public enum Repository {
    public static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }
}
