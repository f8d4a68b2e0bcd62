-- The entity tag a publication had before its last refresh or modify, accepted
-- until prev_etag_expires (PRESENCE_ETAG_GRACE): phones that pipeline PUBLISHes
-- send it again before the 200 with the new tag reaches them.
ALTER TABLE {presentity_table}
    ADD COLUMN prev_etag         varchar(64),
    ADD COLUMN prev_etag_expires bigint NOT NULL DEFAULT 0;
CREATE INDEX {presentity_table}_prev_etag ON {presentity_table} (prev_etag)
    WHERE prev_etag IS NOT NULL;

-- Fencing tokens of the Redis lock shards: a holder whose lease ran out (a long
-- pause) must not write after the next holder did. Each write transaction first
-- raises its shard's token to its own and fails if a newer one is there.
CREATE TABLE lock_fences (
    lock  varchar(200) PRIMARY KEY,  -- the Redis key of the lock shard
    token bigint       NOT NULL
);
