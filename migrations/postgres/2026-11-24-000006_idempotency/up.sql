-- Requests made with an Idempotency-Key: the first one runs, and its
-- answer is kept so a retry with the same key gets the same answer and
-- moves nothing more. The request's hash refuses the key's reuse for
-- another request.
CREATE TABLE idempotency_keys (
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    key TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    -- running, then done.
    state TEXT NOT NULL,
    status INTEGER,
    response TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
