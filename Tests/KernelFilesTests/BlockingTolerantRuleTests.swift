import Foundation
import StrataTestSupport
import Testing

/// Every suite in Tests runs off Swift's cooperative pool (`.blockingTolerant`): the tests block
/// on purpose, and a suite without the trait would take one of the pool's two threads here
/// whenever it waits, stalling every in-process peer and gRPC call of the run meanwhile.
@Suite("Suite rule: every suite is blocking-tolerant", .blockingTolerant)
struct BlockingTolerantRuleTests {
    @Test("every @Suite in Tests carries .blockingTolerant")
    func everySuiteCarriesTheTrait() throws {
        let base = Repository.root.appendingPathComponent("Tests").path
        let enumerator = try #require(FileManager.default.enumerator(atPath: base))
        var suites = 0
        var offenders: [String] = []
        while let relative = enumerator.nextObject() as? String {
            guard relative.hasSuffix(".swift"), !relative.hasPrefix("StrataTestSupport/") else { continue }
            let text = try String(contentsOfFile: base + "/" + relative, encoding: .utf8)
            for declaration in Self.suiteDeclarations(in: text) {
                suites += 1
                if !declaration.contains(".blockingTolerant") { offenders.append("Tests/\(relative): \(declaration)") }
            }
        }
        #expect(suites >= 50, "the scan found the suites")
        #expect(offenders.isEmpty, "add .blockingTolerant to:\n\(offenders.joined(separator: "\n"))")
    }

    @Test("the test fails when the trait is missing")
    func ruleIsNotVacuous() {
        #expect(Self.suiteDeclarations(in: "@Suite struct A {}") == ["@Suite"])
        #expect(Self.suiteDeclarations(in: "@Suite(\"B\", .serialized) struct B {}") == ["@Suite(\"B\", .serialized)"])
        #expect(Self.suiteDeclarations(in: "@Suite(\"C\", .blockingTolerant)\nstruct C {}").allSatisfy { $0.contains(".blockingTolerant") })
        #expect(Self.suiteDeclarations(in: "  @Suite(\"D\",\n         .blockingTolerant) struct D {}") == ["@Suite(\"D\",\n         .blockingTolerant)"])
    }

    /// Each `@Suite` attribute that starts a line, with its arguments as written (they may run
    /// over several lines).
    static func suiteDeclarations(in text: String) -> [String] {
        var declarations: [String] = []
        var lineStart = text.startIndex
        while lineStart < text.endIndex {
            let lineEnd = text[lineStart...].firstIndex(of: "\n") ?? text.endIndex
            let trimmed = text[lineStart..<lineEnd].drop(while: { $0 == " " })
            if trimmed.hasPrefix("@Suite") {
                let afterName = text.index(trimmed.startIndex, offsetBy: "@Suite".count)
                var declaration = "@Suite"
                if afterName < text.endIndex, text[afterName] == "(" {
                    var depth = 0
                    for index in text[afterName...].indices {
                        if text[index] == "(" { depth += 1 }
                        if text[index] == ")" { depth -= 1 }
                        if depth == 0 { declaration = String(text[trimmed.startIndex...index]); break }
                    }
                }
                declarations.append(declaration)
            }
            lineStart = lineEnd < text.endIndex ? text.index(after: lineEnd) : text.endIndex
        }
        return declarations
    }
}
