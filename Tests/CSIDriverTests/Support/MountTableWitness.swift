import StrataTestSupport

/// A second opinion on the mount table from tools that read /proc/self/mountinfo to its end
/// (`wc -c`, `grep -c`), printed beside a failed mount check: when the table is larger than what
/// our reader saw, or grep finds a mount our reader missed, the reader is wrong, not the mounts.
enum MountTableWitness {
    static func describe(mentioning path: String) -> String {
        let size = output(of: "wc", ["-c", "/proc/self/mountinfo"])
        let count = output(of: "grep", ["-c", "-F", path, "/proc/self/mountinfo"])
        return "[wc -c /proc/self/mountinfo: \(size); grep -c \(path) /proc/self/mountinfo: \(count)]"
    }

    private static func output(of tool: String, _ arguments: [String]) -> String {
        do {
            return try ExternalTool.run(tool, arguments).split(separator: " ").first.map(String.init)?.filter { !$0.isWhitespace } ?? ""
        } catch let failure as ExternalTool.Failure {
            return failure.output.filter { !$0.isNewline }  // grep -c exits 1 when it counts 0
        } catch {
            return "\(error)"
        }
    }
}
