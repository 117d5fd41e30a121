#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import AdminProto
import ArgumentParser
import Foundation

/// `strata`: what a node's store holds, asked of the driver that owns it over its admin socket.
@main
struct StrataCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strata",
        abstract: "Look at a node's Strata store: layer trees, volumes and snapshots, pool space; flatten a volume.",
        discussion: """
            Talks to the running strata-csi over its admin socket (root only). Nothing here opens the \
            store itself: the driver holds it, and every answer is its committed catalog.
            """,
        subcommands: [TreeCommand.self, ListCommand.self, SpaceCommand.self, FlattenCommand.self]
    )
}

/// Where the driver's admin socket is.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "The driver's admin socket (default: $STRATA_ADMIN_ENDPOINT, else unix://<state-dir>/admin.sock).")
    var endpoint: String?

    @Option(help: "The driver's --state-dir, to find its default admin socket.")
    var stateDir = "./strata-data"

    /// The socket path to dial.
    func socketPath() throws -> String {
        let text = endpoint ?? ProcessInfo.processInfo.environment["STRATA_ADMIN_ENDPOINT"]
            ?? "unix://" + URL(fileURLWithPath: stateDir).standardizedFileURL.path + "/admin.sock"
        guard text.hasPrefix("unix:") else { throw ValidationError("--endpoint must be unix:///path/to/admin.sock") }
        var path = String(text.dropFirst("unix:".count))
        if path.hasPrefix("//") { path.removeFirst(2) }
        guard !path.isEmpty else { throw ValidationError("--endpoint \(text) names no socket") }
        return path
    }
}

struct TreeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tree",
        abstract: "Snapshots with the clones and volumes above them: depth, own and shared bytes.",
        discussion: "With OBJECT (a volume or snapshot id or name): its chain below and everything above it.")

    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print JSON.") var json = false
    @Argument(help: "A volume or snapshot, by id or name.") var object: String?

    func run() async throws {
        let response = try await AdminConnection.call(connection) { client in
            try await client.getTree(.with { $0.object = object ?? "" })
        }
        if json {
            print(Output.json(["roots": response.roots.map(Output.jsonObject), "remote_volumes": response.remoteVolumes.map(Output.jsonObject)]),
                  terminator: "")
        } else {
            print(TreePrinter.render(response.roots) + Output.remoteTable(response.remoteVolumes), terminator: "")
        }
    }
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "Volumes and snapshots with their sizes.")

    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let response = try await AdminConnection.call(connection) { client in try await client.listObjects(.init()) }
        if json {
            print(Output.json(["volumes": response.volumes.map(Output.jsonObject), "snapshots": response.snapshots.map(Output.jsonObject),
                               "remote_volumes": response.remoteVolumes.map(Output.jsonObject)]),
                  terminator: "")
        } else {
            print(Output.objectTable(response.volumes, title: "VOLUMES", sourceHeader: "SOURCE",
                                     withPlacement: response.volumes.contains { $0.hasPlacement }))
            print(Output.objectTable(response.snapshots, title: "SNAPSHOTS", sourceHeader: "VOLUME"), terminator: "")
            let remote = Output.remoteTable(response.remoteVolumes)
            if !remote.isEmpty { print("\n" + remote, terminator: "") }
        }
    }
}

struct SpaceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "df", abstract: "The pool: capacity, provisioned, allocated, reserve.")

    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let space = try await AdminConnection.call(connection) { client in try await client.getSpace(.init()) }
        print(json ? Output.json(Output.jsonObject(space)) : Output.spaceReport(space), terminator: "")
    }
}

struct FlattenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flatten",
        abstract: "Copy everything a volume inherits into it, so it no longer depends on its snapshots.",
        discussion: "I/O on the volume goes on meanwhile. Shows a progress bar on a terminal.")

    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print the result as JSON.") var json = false
    @Argument(help: "The volume, by id or name.") var volume: String

    func run() async throws {
        let bar = !json && isatty(STDERR_FILENO) == 1 ? ProgressBar() : nil
        let last = try await AdminConnection.flatten(connection, volume: volume) { progress in bar?.show(progress) }
        bar?.finish()
        if json {
            print(Output.json(["volume": volume, "finished": last.finished, "depth": Int(last.depthAfter),
                               "clusters": Int(last.totalClusters)]), terminator: "")
        } else {
            print("flattened \(volume): chain depth \(last.depthAfter)")
        }
    }
}
