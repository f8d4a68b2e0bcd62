-- Which device a publication comes from (presence.device): "instance:<urn>" (the
-- UA's RFC 5626 instance id) or "flow:<transport:host:port>". An initial PUBLISH
-- replaces a live publication only with the same device AND a shared tuple id or
-- contact. Rows from before this column have '' and are never replaced by one.
ALTER TABLE {presentity_table} ADD COLUMN device text NOT NULL DEFAULT '';

-- The instance id (+sip.instance) a binding was registered with, or NULL: how a
-- PUBLISH that carries none is tied to its device (same AOR, same flow).
ALTER TABLE location ADD COLUMN instance text;
