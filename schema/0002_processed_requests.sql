-- Idempotency of the bus consumers: Kafka delivers at least once, so a request
-- may be seen again after a crash between the database commit and the offset
-- commit. Its outcome is recorded in the same transaction as its effect; a
-- redelivered request is answered from here instead of being applied twice.
CREATE TABLE processed_requests (
    request_id   varchar(64) PRIMARY KEY,
    reply        jsonb       NOT NULL,
    -- Whether the request changed a presentity (its watchers must be notified);
    -- kept so that a redelivery re-emits the change event the crash may have lost.
    changed      boolean     NOT NULL,
    created_at   bigint      NOT NULL
);
CREATE INDEX processed_requests_created ON processed_requests (created_at);
