"""SIP message layer: parsing, serialization and stream framing, without I/O."""
