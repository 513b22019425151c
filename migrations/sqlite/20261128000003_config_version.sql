-- A counter bumped by every change to what the gateways load into memory (orgs, keys, feature
-- flags, limits), also by changes made with plain SQL. Gateways poll this one row and reload
-- their snapshot only when it moved, instead of re-reading every key every few seconds.
CREATE TABLE config_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  BIGINT NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 1);

CREATE TRIGGER organizations_insert_bumps_config AFTER INSERT ON organizations
    BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER organizations_update_bumps_config AFTER UPDATE ON organizations
    BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER organizations_delete_bumps_config AFTER DELETE ON organizations
    BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER api_keys_insert_bumps_config AFTER INSERT ON api_keys
    BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER api_keys_update_bumps_config AFTER UPDATE ON api_keys
    BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER api_keys_delete_bumps_config AFTER DELETE ON api_keys
    BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER feature_flags_insert_bumps_config AFTER INSERT ON feature_flags
    BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER feature_flags_update_bumps_config AFTER UPDATE ON feature_flags
    BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER feature_flags_delete_bumps_config AFTER DELETE ON feature_flags
    BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER usage_limits_insert_bumps_config AFTER INSERT ON usage_limits
    BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER usage_limits_update_bumps_config AFTER UPDATE ON usage_limits
    BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER usage_limits_delete_bumps_config AFTER DELETE ON usage_limits
    BEGIN UPDATE config_version SET version = version + 1; END;
