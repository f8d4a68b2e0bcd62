-- A request's outcome now records the events it emitted for the notifier (not
-- just whether the presentity changed), so a redelivery re-emits exactly them.
ALTER TABLE processed_requests ADD COLUMN notices jsonb NOT NULL DEFAULT '[]';
ALTER TABLE processed_requests DROP COLUMN changed;

-- The minimal registrar's bindings (RFC 3261 §10.3): one row per contact of an
-- address-of-record. Some phones publish only after a successful REGISTER.
CREATE TABLE location (
    id        bigserial PRIMARY KEY,
    username  varchar(64)  NOT NULL,
    domain    varchar(128) NOT NULL,
    contact   text         NOT NULL,
    expires   bigint       NOT NULL,
    callid    varchar(255) NOT NULL,
    cseq      bigint       NOT NULL,
    q         real,
    -- The flow the REGISTER came on ("udp:203.0.113.5:5060"), for NAT traversal.
    received  varchar(255) NOT NULL DEFAULT '',
    CONSTRAINT location_udc UNIQUE (username, domain, contact)
);
CREATE INDEX location_expires ON location (expires);
