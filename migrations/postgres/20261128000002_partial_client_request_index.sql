-- Most requests carry no x-request-id: index only the ones that do (one index write less per
-- usage event; lookups by client request id use it, as `x = $1` implies `x IS NOT NULL`).
DROP INDEX usage_events_client_request;
CREATE INDEX usage_events_client_request ON usage_events(client_request_id)
    WHERE client_request_id IS NOT NULL;
