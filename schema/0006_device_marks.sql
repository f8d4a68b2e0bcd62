-- What identifies the device behind a publication (its tuple ids and contact URIs,
-- see presence.pidf.device_marks), kept so that "does this new publication come
-- from a device that already has one" is an index-free array overlap in SQL, not
-- a parse of every stored document.
ALTER TABLE {presentity_table} ADD COLUMN device_marks text[] NOT NULL DEFAULT '{{}}';
