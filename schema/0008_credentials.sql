-- SIP digest credentials (RFC 3261 §22): one row per user of a realm (its domain),
-- holding HA1 = H(username:realm:password) for each algorithm (MD5, SHA-256 per
-- RFC 8760), never the password. Read by presence-store when it checks a digest
-- response; written through the admin API / presencectl.
CREATE TABLE credentials (
    id          bigserial    PRIMARY KEY,
    username    varchar(64)  NOT NULL,
    domain      varchar(128) NOT NULL,
    ha1_md5     char(32)     NOT NULL,
    ha1_sha256  char(64)     NOT NULL,
    updated_at  bigint       NOT NULL,
    UNIQUE (username, domain)
);
