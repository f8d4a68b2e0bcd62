-- What a NOTIFY needs beyond the seed's columns. The seed rebuilds From/To from
-- user and domain; the URIs as the watcher sent them are kept instead (sips:,
-- parameters), with the flow and the edge replica that reach the watcher.
ALTER TABLE {active_watchers_table}
    ADD COLUMN local_uri  text         NOT NULL DEFAULT '',  -- the presentity, as addressed (To)
    ADD COLUMN remote_uri text         NOT NULL DEFAULT '',  -- the watcher (From)
    ADD COLUMN flow       varchar(255) NOT NULL DEFAULT '',  -- "udp:203.0.113.5:5060"
    ADD COLUMN edge_id    varchar(128) NOT NULL DEFAULT '',  -- whose inbox sends its NOTIFYs
    ADD COLUMN reason     varchar(64);                       -- of a terminated subscription
