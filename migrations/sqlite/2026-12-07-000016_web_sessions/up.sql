-- Dashboard sessions: a browser that signed in with an API key. The cookie
-- holds a random secret; only its SHA-256 is kept. A session ends when it
-- expires, when it signs out, or when its key is revoked.
CREATE TABLE web_sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    secret_sha256 TEXT NOT NULL UNIQUE,
    key_id BIGINT NOT NULL REFERENCES api_keys (id),
    -- The token each of its forms and script requests must send back.
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_by_expiry ON web_sessions (expires_at);
