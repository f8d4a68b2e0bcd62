"""XCAP (RFC 4825): selectors, application usages, error bodies, credentials. Pure, no I/O."""
