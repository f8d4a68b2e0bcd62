-- How each subscription reached its state, for watcher information (RFC 3857 §3.4):
-- "subscribe" (created pending or active), "approved" (pending, then allowed by a
-- rule). A terminated one's reason is in `reason`. The winfo subscribers' full-state
-- NOTIFYs are built from this table, so it is kept with the subscription.
ALTER TABLE {active_watchers_table}
    ADD COLUMN watcher_event varchar(16) NOT NULL DEFAULT 'subscribe';
