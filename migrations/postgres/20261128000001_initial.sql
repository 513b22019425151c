-- Tollgate schema, PostgreSQL dialect. Keep in lockstep with ../sqlite (same versions, same meaning).
-- Money is integer micro-dollars; timestamps are timestamptz.

CREATE TABLE organizations (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id             BIGSERIAL PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    is_superuser   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE memberships (
    org_id      BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);

CREATE TABLE api_keys (
    id          BIGSERIAL PRIMARY KEY,
    org_id      BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id     BIGINT REFERENCES users(id) ON DELETE SET NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('app', 'service')),
    name        TEXT NOT NULL DEFAULT '',
    prefix      TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_org ON api_keys(org_id);

CREATE TABLE feature_flags (
    org_id      BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    feature     TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, feature)
);

CREATE TABLE usage_limits (
    id               BIGSERIAL PRIMARY KEY,
    org_id           BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    limit_type       TEXT NOT NULL CHECK (limit_type IN ('monthly_tokens', 'monthly_cost', 'daily_ads', 'daily_requests')),
    value            BIGINT NOT NULL CHECK (value >= 0),
    alert_threshold  INTEGER NOT NULL DEFAULT 80 CHECK (alert_threshold BETWEEN 1 AND 100),
    enabled          BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, limit_type)
);

CREATE TABLE usage_events (
    id                   BIGSERIAL PRIMARY KEY,
    request_id           TEXT NOT NULL UNIQUE,   -- the gateway's own id: unique per request
    client_request_id    TEXT,                   -- the x-request-id the client sent, if any
    occurred_at          TIMESTAMPTZ NOT NULL,
    org_id               BIGINT REFERENCES organizations(id) ON DELETE CASCADE,
    key_id               BIGINT REFERENCES api_keys(id) ON DELETE SET NULL,
    user_ref             TEXT,
    tool                 TEXT,
    provider             TEXT NOT NULL,
    model                TEXT NOT NULL,
    operation            TEXT NOT NULL,
    status               INTEGER NOT NULL,
    streamed             BOOLEAN NOT NULL DEFAULT FALSE,
    -- forwarded and of a kind that counts toward usage and limits (not countTokens, polling,
    -- listing, files, or a refusal); only these enter the rollups
    metered              BOOLEAN NOT NULL DEFAULT FALSE,
    input_tokens         BIGINT NOT NULL DEFAULT 0,
    output_tokens        BIGINT NOT NULL DEFAULT 0,
    thinking_tokens      BIGINT NOT NULL DEFAULT 0,
    cached_tokens        BIGINT NOT NULL DEFAULT 0,
    tool_prompt_tokens   BIGINT NOT NULL DEFAULT 0,
    total_tokens         BIGINT NOT NULL DEFAULT 0,
    input_audio_tokens   BIGINT NOT NULL DEFAULT 0,
    output_image_tokens  BIGINT NOT NULL DEFAULT 0,
    images               BIGINT NOT NULL DEFAULT 0,
    videos               BIGINT NOT NULL DEFAULT 0,
    video_seconds        BIGINT NOT NULL DEFAULT 0,
    cost_micros          BIGINT NOT NULL DEFAULT 0,
    estimated            BOOLEAN NOT NULL DEFAULT FALSE,
    priced               BOOLEAN NOT NULL DEFAULT TRUE,
    upstream_latency_ms  BIGINT,
    total_latency_ms     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX usage_events_org_time ON usage_events(org_id, occurred_at);
CREATE INDEX usage_events_client_request ON usage_events(client_request_id);

-- Daily totals of metered events, for dashboards and for seeding the gateways' limit counters.
CREATE TABLE usage_rollups_daily (
    day              DATE NOT NULL,
    org_id           BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    provider         TEXT NOT NULL,
    model            TEXT NOT NULL,
    tool             TEXT NOT NULL DEFAULT '',
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
    PRIMARY KEY (day, org_id, provider, model, tool)
);
CREATE INDEX usage_rollups_org_day ON usage_rollups_daily(org_id, day);

CREATE TABLE limit_alerts (
    id            BIGSERIAL PRIMARY KEY,
    org_id        BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    limit_type    TEXT NOT NULL,
    period        TEXT NOT NULL,
    threshold_pct INTEGER NOT NULL,
    limit_value   BIGINT NOT NULL,
    usage_value   BIGINT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, limit_type, period, threshold_pct)
);

CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    occurred_at TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    org_id      BIGINT,
    target      TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_org ON audit_log(org_id, occurred_at);

CREATE TABLE gateway_instances (
    instance_id  TEXT PRIMARY KEY,
    version      TEXT NOT NULL,
    degraded     BOOLEAN NOT NULL DEFAULT FALSE,
    last_sync    TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL
);
