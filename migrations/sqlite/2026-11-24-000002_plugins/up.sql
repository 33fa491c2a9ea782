-- Installed plugins. Every version's component is kept in the database, so
-- any host can load it; `plugins` says which version serves new calls.

CREATE TABLE plugin_versions (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    api_version TEXT NOT NULL,
    manifest TEXT NOT NULL,
    wasm BLOB NOT NULL,
    wasm_sha256 TEXT NOT NULL,
    -- HTTP hosts the operator approved for this version, one per line.
    approved_hosts TEXT NOT NULL,
    installed_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE plugins (
    name TEXT PRIMARY KEY NOT NULL,
    active_version TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    FOREIGN KEY (name, active_version) REFERENCES plugin_versions (name, version)
);

-- A tenant's use of a plugin, with its settings (a JSON object).
CREATE TABLE plugin_enablements (
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    plugin TEXT NOT NULL REFERENCES plugins (name),
    settings TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, plugin)
);
