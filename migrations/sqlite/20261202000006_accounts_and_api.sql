-- The admin service's accounts and API, SQLite dialect (lockstep with ../postgres).

-- Console logins: the cookie's random id is stored only as its SHA-256; a session ends at
-- expires_at (absolute lifetime) or after an idle gap longer than the configured timeout.
CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

-- Personal API tokens (tgp_…) for scripts: they act as their user; stored as SHA-256 digests.
CREATE TABLE personal_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL DEFAULT '',
    prefix        TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    last_used_at  TEXT,
    revoked_at    TEXT
);
CREATE INDEX personal_tokens_user ON personal_tokens(user_id);

-- When each gateway key was last seen in a stored event (one upsert per key per ledger batch).
-- Kept apart from api_keys, whose changes would move config_version and reload every gateway.
CREATE TABLE key_last_used (
    key_id        INTEGER PRIMARY KEY,
    last_used_at  TEXT NOT NULL
);

-- The daily rollups gain the user dimension (x-tollgate-user or the key's user) for the
-- by-user breakdown. They are rebuilt from the events, which they sum exactly. The key starts
-- with the org and the day, and the table is clustered on it (WITHOUT ROWID): a dashboard's
-- window of one org is one contiguous range.
CREATE TABLE usage_rollups_daily_v6 (
    day              TEXT NOT NULL,
    org_id           INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    provider         TEXT NOT NULL,
    model            TEXT NOT NULL,
    tool             TEXT NOT NULL DEFAULT '',
    user_ref         TEXT NOT NULL DEFAULT '',
    requests         BIGINT NOT NULL DEFAULT 0,
    input_tokens     BIGINT NOT NULL DEFAULT 0,
    output_tokens    BIGINT NOT NULL DEFAULT 0,
    thinking_tokens  BIGINT NOT NULL DEFAULT 0,
    cached_tokens    BIGINT NOT NULL DEFAULT 0,
    total_tokens     BIGINT NOT NULL DEFAULT 0,
    images           BIGINT NOT NULL DEFAULT 0,
    videos           BIGINT NOT NULL DEFAULT 0,
    video_seconds    BIGINT NOT NULL DEFAULT 0,
    cost_micros      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, day, provider, model, tool, user_ref)
) WITHOUT ROWID;
INSERT INTO usage_rollups_daily_v6 (day, org_id, provider, model, tool, user_ref, requests,
    input_tokens, output_tokens, thinking_tokens, cached_tokens, total_tokens, images, videos,
    video_seconds, cost_micros)
SELECT substr(occurred_at, 1, 10), org_id, provider, model, COALESCE(tool, ''),
    COALESCE(user_ref, ''), COUNT(*), SUM(input_tokens), SUM(output_tokens),
    SUM(thinking_tokens), SUM(cached_tokens), SUM(total_tokens), SUM(images), SUM(videos),
    SUM(video_seconds), SUM(cost_micros)
FROM usage_events
WHERE metered = 1 AND org_id IN (SELECT id FROM organizations)
GROUP BY 1, 2, 3, 4, 5, 6;
DROP TABLE usage_rollups_daily;
ALTER TABLE usage_rollups_daily_v6 RENAME TO usage_rollups_daily;
CREATE INDEX usage_rollups_day ON usage_rollups_daily(day);

-- The console's banner looks for events priced with a fallback; few are, so the index is small.
CREATE INDEX usage_events_unpriced ON usage_events(occurred_at) WHERE priced = FALSE;

-- The audit log is paged newest first and filtered by org.
CREATE INDEX audit_log_time ON audit_log(occurred_at);
