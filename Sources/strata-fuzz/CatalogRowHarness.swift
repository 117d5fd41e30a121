import BlockStore
import Foundation
import GRDB

/// Catalog rows as SQLite hands them back. SQLite keeps no checksums, so a flipped bit in a
/// record can turn any column into any storage class (NULL, integer, real, text, blob) whatever
/// the schema says. The row types must then refuse the row as `.corrupt`, never trap, and never
/// wrap a value into a different one.
///
/// The rows live in an in-memory table with the real catalog's column names (read from the
/// fixture store's catalog) and no types or constraints, so every stored value reaches the decoder
/// exactly as written.
enum CatalogRowHarness {
    enum Table: String, CaseIterable {
        case layers, volumes, snapshots
    }

    static let database: (queue: DatabaseQueue, columns: [Table: [String]]) = {
        do {
            _ = StoreMetadataHarness.fixture
            var configuration = Configuration()
            configuration.readonly = true
            let catalog = try DatabaseQueue(path: Workspace.path + "/metadata-store/catalog.sqlite", configuration: configuration)
            let columns = try catalog.read { db in
                try Dictionary(uniqueKeysWithValues: Table.allCases.map { table in
                    (table, try Row.fetchAll(db, sql: "PRAGMA table_info(\(table.rawValue))").map { $0["name"] as String })
                })
            }
            try catalog.close()
            let queue = try DatabaseQueue()
            try queue.write { db in
                for (table, names) in columns {
                    try db.execute(sql: "CREATE TABLE \(table.rawValue) (\(names.joined(separator: ", ")))")
                }
            }
            return (queue, columns)
        } catch {
            fatalError("cannot set up the catalog row tables: \(error)")
        }
    }()

    static func run(_ input: inout FuzzInput) {
        let table = Table.allCases[Int(input.byte()) % Table.allCases.count]
        let names = database.columns[table]!
        var stored: [String: DatabaseValue] = [:]
        for name in names { stored[name] = value(&input) }
        let row: Row
        do {
            row = try database.queue.write { db in
                try db.execute(sql: "DELETE FROM \(table.rawValue)")
                try db.execute(
                    sql: "INSERT INTO \(table.rawValue) (\(names.joined(separator: ", "))) VALUES (\(names.map { _ in "?" }.joined(separator: ", ")))",
                    arguments: StatementArguments(names.map { stored[$0]! }))
                return try Row.fetchOne(db, sql: "SELECT * FROM \(table.rawValue)")!
            }
        } catch {
            fatalError("cannot store the row under test: \(error)")
        }
        let integers = stored.mapValues(integer)
        do {
            try checkDecoded(table, row, integers)
        } catch {
            check((error as? StoreError)?.code == .corrupt, "a bad \(table) row gave \(error), not .corrupt")
        }
    }

    static func checkDecoded(_ table: Table, _ row: Row, _ integers: [String: Int64?]) throws {
        switch table {
        case .layers:
            let layer = try LayerRow(row: row)
            checkSame(layer.id, integers["id"], "layers.id")
            checkSame(layer.depth, integers["depth"], "layers.depth")
            checkSame(layer.clusterSize, integers["cluster_size"], "layers.cluster_size")
            checkSame(layer.refCount, integers["ref_count"], "layers.ref_count")
            checkSame(layer.allocatedBytes, integers["allocated_bytes"], "layers.allocated_bytes")
            if let parent = layer.parentID { checkSame(parent, integers["parent_id"], "layers.parent_id") }
        case .volumes:
            let volume = try VolumeRow(row: row)
            checkSame(volume.seq, integers["seq"], "volumes.seq")
            checkSame(volume.size, integers["size"], "volumes.size")
            checkSame(volume.clusterSize, integers["cluster_size"], "volumes.cluster_size")
            checkSame(volume.headLayerID, integers["head_layer_id"], "volumes.head_layer_id")
        case .snapshots:
            let snapshot = try SnapshotRow(row: row)
            checkSame(snapshot.seq, integers["seq"], "snapshots.seq")
            checkSame(snapshot.size, integers["size"], "snapshots.size")
            checkSame(snapshot.layerID, integers["layer_id"], "snapshots.layer_id")
        }
    }

    /// A decoded integer field equals the stored number; a value stored as something that is no
    /// whole number must not have decoded at all.
    static func checkSame<T: FixedWidthInteger>(_ decoded: T, _ stored: Int64??, _ column: String) {
        guard let stored = stored ?? nil else {
            check(false, "\(column) decoded as \(decoded) from a value that is no integer")
            return
        }
        check(Int64(exactly: decoded) == stored, "\(column) decoded as \(decoded) from \(stored)")
    }

    /// The stored value as an integer, if it is one; a real in range counts, rounded toward
    /// zero (GRDB's documented reading, as SQLite's own CAST does).
    static func integer(_ value: DatabaseValue) -> Int64? {
        switch value.storage {
        case .int64(let number): number
        case .double(let number) where number >= -0x1p63 && number < 0x1p63: Int64(number)
        default: nil
        }
    }

    /// Mostly plausible values (small integers, short text), sometimes anything.
    static func value(_ input: inout FuzzInput) -> DatabaseValue {
        switch input.byte() % 8 {
        case 0: .null
        case 1: Int64(bitPattern: input.integer(UInt64.self)).databaseValue
        case 2: Double(bitPattern: input.integer(UInt64.self)).databaseValue
        case 3: input.string(limit: 64).databaseValue
        case 4: Data(input.chunk(limit: 64)).databaseValue
        default: Int64(Int8(bitPattern: input.byte())).databaseValue
        }
    }
}
