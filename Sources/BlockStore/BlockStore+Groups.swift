import GRDB

/// Looking up snapshots taken together by `createSnapshots(_:groupID:)`.
extension BlockStore {
    /// The visible snapshots of one group, in creation order; empty when the group is unknown.
    public func snapshots(inGroup groupID: String) throws -> [Snapshot] {
        try catalog.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM snapshots WHERE group_id = ? AND hidden = 0 ORDER BY seq", arguments: [groupID])
                .map { try makeSnapshot(SnapshotRow(row: $0), db) }
        }
    }

    /// Visible group members whose names start with `prefix` (callers name members after their group).
    public func groupSnapshots(namePrefix prefix: String) throws -> [Snapshot] {
        try catalog.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM snapshots
                    WHERE group_id IS NOT NULL AND hidden = 0 AND substr(name, 1, ?) = ? ORDER BY seq
                    """,
                arguments: [prefix.unicodeScalars.count, prefix]
            ).map { try makeSnapshot(SnapshotRow(row: $0), db) }
        }
    }
}
