import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The fuzz targets: `store` (what the store decodes from disk), `store-open` (a store opened
/// over a fuzzed allocation map) and `requests` (CSI request validation).
///
/// Built by scripts/fuzz.sh with `-sanitize=fuzzer,address -DSTRATA_FUZZING`, `main` hands the
/// chosen target to libFuzzer (every further argument is libFuzzer's). A plain build replays
/// files instead: `strata-fuzz requests Tests/FuzzCorpus/requests` runs every input once, and
/// `strata-fuzz seeds Tests/FuzzCorpus` rewrites the committed seeds.
@main
enum StrataFuzz {
    /// Lets libFuzzer's `-fork`/`-jobs` children, which it starts without our first argument,
    /// run the same target.
    static let targetVariable = "STRATA_FUZZ_TARGET"

    static func main() {
        var arguments = CommandLine.arguments
        if arguments.count == 3, arguments[1] == "seeds" {
            do {
                try SeedCorpus.write(to: arguments[2])
                exit(0)
            } catch {
                FileHandle.standardError.write(Data("strata-fuzz: writing seeds failed: \(error)\n".utf8))
                exit(1)
            }
        }
        if arguments.count > 1, let target = FuzzTarget(rawValue: arguments[1]) {
            arguments.remove(at: 1)
            setenv(targetVariable, target.rawValue, 1)
            FuzzTarget.selected = target
        } else if let name = ProcessInfo.processInfo.environment[targetVariable], let target = FuzzTarget(rawValue: name) {
            FuzzTarget.selected = target
        } else {
            let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")
            FileHandle.standardError.write(Data("usage: strata-fuzz \(names) [libFuzzer options] [corpus…] | strata-fuzz seeds <directory>\n".utf8))
            exit(2)
        }
        #if STRATA_FUZZING
        exit(runLibFuzzer(arguments))
        #else
        exit(replay(arguments.dropFirst().filter { !$0.hasPrefix("-") }))
        #endif
    }

    /// Runs every file named (directories: every file inside) through the selected target.
    static func replay(_ paths: some Sequence<String>) -> Int32 {
        var count = 0
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                FileHandle.standardError.write(Data("strata-fuzz: no such file \(path)\n".utf8))
                return 2
            }
            let files = isDirectory.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 }
                : [path]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                FuzzTarget.selected.run([UInt8](data))
                count += 1
            }
        }
        print("strata-fuzz \(FuzzTarget.selected.rawValue): replayed \(count) inputs without a failure")
        return 0
    }
}

#if STRATA_FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// libFuzzer's own `main` also links in and calls this entry; both paths run the selected target.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzTarget.selected.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

private func runLibFuzzer(_ arguments: [String]) -> Int32 {
    var argc = Int32(arguments.count)
    // libFuzzer keeps pointers into argv for the whole run: these strings are never freed.
    let argv = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: arguments.count + 1)
    for (index, argument) in arguments.enumerated() { argv[index] = strdup(argument) }
    argv[arguments.count] = nil
    var argvPointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return LLVMFuzzerRunDriver(&argc, &argvPointer) { data, size in fuzz(data, size) }
}
#endif

/// One harness per corpus directory (Tests/FuzzCorpus/<rawValue>).
enum FuzzTarget: String, CaseIterable, Sendable {
    case store
    case storeOpen = "store-open"
    case requests

    /// Set once by `main` before the first input; libFuzzer calls back on that one thread.
    nonisolated(unsafe) static var selected = FuzzTarget.store

    func run(_ bytes: [UInt8]) {
        var input = FuzzInput(bytes)
        switch self {
        case .store: StoreMetadataHarness.run(&input)
        case .storeOpen: StoreOpenHarness.run(&input)
        case .requests: RequestHarness.run(&input)
        }
    }
}
