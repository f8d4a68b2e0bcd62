-- "How many subscriptions does this watcher hold": counted before each new dialog
-- (PRESENCE_MAX_SUBSCRIPTIONS_PER_WATCHER), so it needs an index of its own.
CREATE INDEX {active_watchers_table}_watcher
    ON {active_watchers_table} (from_domain, from_user);
