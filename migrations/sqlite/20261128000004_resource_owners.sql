-- Which organization created each Google resource made through the gateway (files, cached
-- contents, batches, long-running operations, file search stores). Every org shares the provider
-- key, so Google sees one project: the gateway enforces ownership from this table. `resource` is
-- the collection and id (`files/abc123`, `operations/op1`), whatever prefix the full name has.
-- `id` orders rows for the gateways' incremental loads.
CREATE TABLE resource_owners (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    resource    TEXT NOT NULL UNIQUE,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL
);
