import GRDB

/// The catalog's schema, one migration per change, in the order they were made; each runs once
/// per store, so a store written by any earlier version opens.
extension Catalog {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE layers (
                    id INTEGER PRIMARY KEY,
                    parent_id INTEGER REFERENCES layers(id),
                    depth INTEGER NOT NULL,
                    cluster_size INTEGER NOT NULL,
                    frozen INTEGER NOT NULL,
                    materialized INTEGER NOT NULL,
                    ref_count INTEGER NOT NULL,
                    allocated_bytes INTEGER NOT NULL DEFAULT 0,
                    created_at REAL NOT NULL
                );
                CREATE INDEX layers_parent ON layers(parent_id);
                CREATE TABLE volumes (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    name TEXT NOT NULL UNIQUE,
                    size INTEGER NOT NULL,
                    cluster_size INTEGER NOT NULL,
                    head_layer_id INTEGER NOT NULL REFERENCES layers(id),
                    source_kind TEXT,
                    source_id TEXT,
                    hidden_snapshot_id TEXT,
                    parameters TEXT NOT NULL,
                    created_at REAL NOT NULL
                );
                CREATE TABLE snapshots (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    name TEXT UNIQUE,
                    source_volume_id TEXT NOT NULL,
                    layer_id INTEGER NOT NULL REFERENCES layers(id),
                    size INTEGER NOT NULL,
                    group_id TEXT,
                    hidden INTEGER NOT NULL,
                    created_at REAL NOT NULL
                );
                CREATE INDEX snapshots_source ON snapshots(source_volume_id);
                CREATE INDEX snapshots_layer ON snapshots(layer_id);
                CREATE INDEX volumes_head ON volumes(head_layer_id);
                """)
        }
        // Group snapshot lookups scanned every snapshot; most have no group, so the index is partial.
        migrator.registerMigration("v2-group-index") { db in
            try db.execute(sql: "CREATE INDEX snapshots_group ON snapshots(group_id) WHERE group_id IS NOT NULL")
        }
        // Former chains of heads a flatten detached, for changed-block listings across it
        // (see LineageDirectory). Ancestors may be freed since: no reference to layers(id).
        migrator.registerMigration("v3-lineage") { db in
            try db.execute(sql: """
                CREATE TABLE layer_lineage (
                    layer_id INTEGER NOT NULL,
                    position INTEGER NOT NULL,
                    ancestor_id INTEGER NOT NULL,
                    PRIMARY KEY (layer_id, position)
                )
                """)
        }
        // Replication across nodes: every layer gets a cluster-wide identity (existing rows are
        // given one here), imported layers are marked, and a replica snapshot names its origin node.
        migrator.registerMigration("v4-replication") { db in
            try db.execute(sql: """
                ALTER TABLE layers ADD COLUMN uuid TEXT;
                ALTER TABLE layers ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
                UPDATE layers SET uuid = lower(hex(randomblob(16)));
                CREATE UNIQUE INDEX layers_uuid ON layers(uuid);
                ALTER TABLE snapshots ADD COLUMN origin_node TEXT;
                CREATE INDEX snapshots_origin ON snapshots(origin_node) WHERE origin_node IS NOT NULL;
                """)
        }
        // ReadWriteMany Block volumes: whether a volume may be staged on several nodes, its
        // ownership epoch (fencing), the node it is being handed to, and the other nodes that
        // stage it now, reaching it here.
        migrator.registerMigration("v5-sharing") { db in
            try db.execute(sql: """
                ALTER TABLE volumes ADD COLUMN multi_node INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE volumes ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;
                ALTER TABLE volumes ADD COLUMN moved_to TEXT;
                CREATE TABLE remote_stagers (
                    volume_id TEXT NOT NULL,
                    node_id TEXT NOT NULL,
                    since REAL NOT NULL,
                    PRIMARY KEY (volume_id, node_id)
                );
                """)
        }
        return migrator
    }
}
