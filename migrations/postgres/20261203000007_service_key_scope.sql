-- Which organizations a service key may name with x-tollgate-org: '' its own only (the default
-- for new keys), '*' any, or a comma-separated list of organization ids besides its own.
-- Service keys made before this could name any organization, and keep doing so.
ALTER TABLE api_keys ADD COLUMN acts_for TEXT NOT NULL DEFAULT '';
UPDATE api_keys SET acts_for = '*' WHERE kind = 'service';
