-- A counter bumped by every change to what the gateways load into memory (orgs, keys, feature
-- flags, limits), also by changes made with plain SQL. Gateways poll this one row and reload
-- their snapshot only when it moved, instead of re-reading every key every few seconds.
CREATE TABLE config_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  BIGINT NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 1);

CREATE FUNCTION bump_config_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE config_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER organizations_bumps_config AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON organizations FOR EACH STATEMENT EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER api_keys_bumps_config AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER feature_flags_bumps_config AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON feature_flags FOR EACH STATEMENT EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER usage_limits_bumps_config AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON usage_limits FOR EACH STATEMENT EXECUTE FUNCTION bump_config_version();
