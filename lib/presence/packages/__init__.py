"""The event packages served (RFC 6665 §7.2) and their document formats. Pure, no I/O."""
