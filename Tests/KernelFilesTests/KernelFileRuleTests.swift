import Foundation
import StrataTestSupport
import Testing

/// No Foundation whole-file read names a /proc or /sys path anywhere in Sources or Tests: those
/// reads stop at the first short read, which a seq_file always gives (see `KernelFile`).
@Suite("KernelFile rule: /proc and /sys are read through KernelFile only", .blockingTolerant)
struct KernelFileRuleTests {
    static let root = Repository.root

    /// The calls that read a whole file through Foundation, as they start in source.
    static let wholeFileReads = ["contentsOfFile:", "contentsOf:", "contents(atPath:"]
    static let kernelTrees = ["/proc/", "/sys/"]

    @Test("no whole-file Foundation read in Sources or Tests names /proc or /sys")
    func noFoundationReadOfKernelFiles() throws {
        var offenders: [String] = []
        for tree in ["Sources", "Tests"] {
            let base = Self.root.appendingPathComponent(tree).path
            let enumerator = try #require(FileManager.default.enumerator(atPath: base))
            while let relative = enumerator.nextObject() as? String {
                guard relative.hasSuffix(".swift"), !relative.hasSuffix("/KernelFileRuleTests.swift") else { continue }
                let text = try String(contentsOfFile: base + "/" + relative, encoding: .utf8)
                offenders += Self.offendingReads(in: text).map { "\(tree)/\(relative): \($0)" }
            }
        }
        #expect(offenders.isEmpty, "read these with KernelFile instead:\n\(offenders.joined(separator: "\n"))")
    }

    @Test("the rule finds a literal path, a named path and an interpolated one")
    func ruleIsNotVacuous() {
        // The offending lines are assembled, so that this file's own source holds none of them
        // (the before-stop hook greps the tree for such reads too).
        let proc = "/proc", sys = "/sys"
        let literal = #"let text = try String(contentsOfFile: ""# + proc + #"/self/mountinfo", encoding: .utf8)"#
        let named = "let table = \"/proc/self/mountinfo\"\nlet data = try Data(contentsOf: URL(fileURLWithPath: table))"
        let interpolated = #"let x = try? String(contentsOfFile: ""# + sys + #"/block/\(device)/loop/backing_file", encoding: .utf8)"#
        let harmless = #"let proto = try String(contentsOfFile: Self.protoPath, encoding: .utf8)"#
        #expect(Self.offendingReads(in: literal).count == 1)
        #expect(Self.offendingReads(in: named).count == 1)
        #expect(Self.offendingReads(in: interpolated).count == 1)
        #expect(Self.offendingReads(in: harmless).isEmpty)
    }

    /// Each whole-file read whose argument names a kernel path, literally or through a name
    /// bound in the same file to a string that does.
    static func offendingReads(in text: String) -> [String] {
        let kernelNames = Set(text.split(separator: "\n").compactMap { line -> String? in
            guard kernelTrees.contains(where: { line.contains("\"\($0)") || line.contains("\"\($0.dropLast())\"") }),
                  let equals = line.firstIndex(of: "=") else { return nil }
            return line[..<equals].split(whereSeparator: { !$0.isLetter && !$0.isNumber && $0 != "_" }).last.map(String.init)
        })
        var found: [String] = []
        for call in wholeFileReads {
            var searchStart = text.startIndex
            while let range = text.range(of: call, range: searchStart..<text.endIndex) {
                searchStart = range.upperBound
                let argument = Self.argument(in: text, from: range.upperBound)
                let words = Set(argument.split(whereSeparator: { !$0.isLetter && !$0.isNumber && $0 != "_" }).map(String.init))
                if kernelTrees.contains(where: { argument.contains($0) }) || !words.isDisjoint(with: kernelNames) {
                    found.append(call + argument)
                }
            }
        }
        return found
    }

    /// The text from `start` to the parenthesis that closes the call.
    static func argument(in text: String, from start: String.Index) -> String {
        var depth = 0
        var index = start
        while index < text.endIndex {
            switch text[index] {
            case "(": depth += 1
            case ")":
                if depth == 0 { return String(text[start..<index]) }
                depth -= 1
            default: break
            }
            index = text.index(after: index)
        }
        return String(text[start...])
    }
}
