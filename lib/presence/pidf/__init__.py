"""PIDF (RFC 3863): parsing, device identity, aggregation. Pure, no I/O."""
