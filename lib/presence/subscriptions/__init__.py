"""A subscription's life: states, expiry and the NOTIFY that tells it. Pure, no I/O."""
