-- The clean_period timer forgets pending watcher decisions older than
-- pending_watcher_days (subs_status = 'pending' AND inserted_time <= ...): without an
-- index that is a scan of the whole watchers table at every period (7.5 ms per
-- 100,000 decisions, almost all of them active, none due). Only pending rows are
-- indexed, so the index stays as small as the pending backlog.
CREATE INDEX {watchers_table}_pending
    ON {watchers_table} (inserted_time) WHERE subs_status = 'pending';
