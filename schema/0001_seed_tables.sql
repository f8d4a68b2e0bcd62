-- The seed module's four tables (OpenSER presence), in PostgreSQL.
-- Names in braces are the configured table names (PRESENCE_*_TABLE).
-- Times (expires, received_time, inserted_time) are absolute Unix seconds, as in
-- the seed; bigint so they survive 2038.

-- One row per publication (RFC 3903): one device's document for one presentity
-- and event package, named by its entity tag.
CREATE TABLE {presentity_table} (
    id            bigserial PRIMARY KEY,
    username      varchar(64)  NOT NULL,
    domain        varchar(128) NOT NULL,
    event         varchar(64)  NOT NULL,
    etag          varchar(64)  NOT NULL,
    expires       bigint       NOT NULL,
    received_time bigint       NOT NULL,
    body          text         NOT NULL,
    -- The seed's unique key; its (username, domain, event) prefix also serves the
    -- hot lookup "all publications of this presentity", so no second index.
    CONSTRAINT {presentity_table}_udee UNIQUE (username, domain, event, etag)
);
CREATE INDEX {presentity_table}_expires ON {presentity_table} (expires);

-- One row per subscription dialog (RFC 6665).
CREATE TABLE {active_watchers_table} (
    id           bigserial PRIMARY KEY,
    to_user      varchar(64)  NOT NULL,
    to_domain    varchar(128) NOT NULL,
    from_user    varchar(64)  NOT NULL,
    from_domain  varchar(128) NOT NULL,
    event        varchar(64)  NOT NULL DEFAULT 'presence',
    event_id     varchar(64),
    to_tag       varchar(128) NOT NULL,
    from_tag     varchar(128) NOT NULL,
    callid       varchar(255) NOT NULL,
    remote_cseq  bigint       NOT NULL,
    local_cseq   bigint       NOT NULL,
    -- The seed has varchar(128) and varchar(255); real Contacts (GRUUs, ;ob,
    -- +sip.instance) and route sets are longer, and text costs nothing extra here.
    contact      text         NOT NULL,
    record_route text,
    expires      bigint       NOT NULL,
    status       varchar(32)  NOT NULL DEFAULT 'pending',
    version      integer      DEFAULT 0,
    CONSTRAINT {active_watchers_table}_tt UNIQUE (to_tag)
);
-- "Who watches this presentity": the fan-out query after every PUBLISH.
CREATE INDEX {active_watchers_table}_due
    ON {active_watchers_table} (to_domain, to_user, event);
CREATE INDEX {active_watchers_table}_expires ON {active_watchers_table} (expires);

-- The authorization decision per (presentity, watcher) pair.
CREATE TABLE {watchers_table} (
    id            bigserial PRIMARY KEY,
    p_user        varchar(64)  NOT NULL,
    p_domain      varchar(128) NOT NULL,
    w_user        varchar(64)  NOT NULL,
    w_domain      varchar(128) NOT NULL,
    subs_status   varchar(64)  NOT NULL,
    reason        varchar(64),
    inserted_time bigint       NOT NULL,
    CONSTRAINT {watchers_table}_udud UNIQUE (p_user, p_domain, w_user, w_domain)
);

-- XCAP documents (pres-rules and others), one per (user, domain, doc_type).
CREATE TABLE {xcap_table} (
    id       bigserial PRIMARY KEY,
    username varchar(66)  NOT NULL,
    domain   varchar(128) NOT NULL,
    xcap     text         NOT NULL,
    doc_type integer      NOT NULL,
    CONSTRAINT {xcap_table}_udd UNIQUE (username, domain, doc_type)
);
