-- The admin service's accounts and API, PostgreSQL dialect (lockstep with ../sqlite).

-- Console logins: the cookie's random id is stored only as its SHA-256; a session ends at
-- expires_at (absolute lifetime) or after an idle gap longer than the configured timeout.
CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

-- Personal API tokens (tgp_…) for scripts: they act as their user; stored as SHA-256 digests.
CREATE TABLE personal_tokens (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL DEFAULT '',
    prefix        TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ
);
CREATE INDEX personal_tokens_user ON personal_tokens(user_id);

-- When each gateway key was last seen in a stored event (one upsert per key per ledger batch).
-- Kept apart from api_keys, whose changes would move config_version and reload every gateway.
CREATE TABLE key_last_used (
    key_id        BIGINT PRIMARY KEY,
    last_used_at  TIMESTAMPTZ NOT NULL
);

-- The daily rollups gain the user dimension (x-tollgate-user or the key's user) for the
-- by-user breakdown. They are rebuilt from the events, which they sum exactly. The key starts
-- with the org and the day, so a dashboard's window of one org is one index range.
ALTER TABLE usage_rollups_daily ADD COLUMN user_ref TEXT NOT NULL DEFAULT '';
DELETE FROM usage_rollups_daily;
ALTER TABLE usage_rollups_daily DROP CONSTRAINT usage_rollups_daily_pkey;
ALTER TABLE usage_rollups_daily ADD PRIMARY KEY (org_id, day, provider, model, tool, user_ref);
DROP INDEX IF EXISTS usage_rollups_org_day;
INSERT INTO usage_rollups_daily (day, org_id, provider, model, tool, user_ref, requests,
    input_tokens, output_tokens, thinking_tokens, cached_tokens, total_tokens, images, videos,
    video_seconds, cost_micros)
SELECT (occurred_at AT TIME ZONE 'UTC')::date, org_id, provider, model, COALESCE(tool, ''),
    COALESCE(user_ref, ''), COUNT(*), SUM(input_tokens), SUM(output_tokens),
    SUM(thinking_tokens), SUM(cached_tokens), SUM(total_tokens), SUM(images), SUM(videos),
    SUM(video_seconds), SUM(cost_micros)
FROM usage_events
WHERE metered AND org_id IN (SELECT id FROM organizations)
GROUP BY 1, 2, 3, 4, 5, 6;
CREATE INDEX usage_rollups_day ON usage_rollups_daily(day);

-- The console's banner looks for events priced with a fallback; few are, so the index is small.
CREATE INDEX usage_events_unpriced ON usage_events(occurred_at) WHERE priced = FALSE;

-- The audit log is paged newest first and filtered by org.
CREATE INDEX audit_log_time ON audit_log(occurred_at);
