"""Which device a publication comes from (pure): the rule that decides when an initial
PUBLISH replaces a live publication of the same presentity instead of adding one.

RFC 3903 has no device identity. What PIDF bodies say is no help: linphone writes the
address-of-record as every tuple's <contact> and a random tuple id, baresip a fixed
tuple id ("t4109") and the address-of-record. So two phones of one user look alike in
their bodies, and a phone after a restart may look different from itself.

What really differs between two devices is, in order of preference:

1. their instance id (RFC 5626 ``+sip.instance``, a URN the UA keeps for life), from
   the PUBLISH's own Contact or, since phones send none in PUBLISH, from the
   registrar binding the UA registered over the same flow (when that flow carries
   bindings of several UAs, a proxy's, the publication is a device of its own);
2. the flow the PUBLISH arrived on (transport, source address and port): no two
   devices send from one address and port at one time.

A publication's *device* is ``instance:<urn>`` or ``flow:<transport:host:port>``. An
initial PUBLISH replaces a live publication when both have the same device AND share
a tuple id or a contact (``presence.pidf.document.device_marks``): the second condition keeps
apart several publications one UA keeps on purpose (one per service).

The trade-off: a device with no instance id that comes back on another flow (a
restart on a new port, a new TCP connection, a NAT rebinding) is not recognised; its
old publication is shown beside the new one until it expires or is removed, as RFC
3903 says without this feature. Merging two real devices would lose a live state;
this loses nothing and shows a stale one for at most its Expires.
"""

from __future__ import annotations

import hashlib

# An instance id longer than this is not used (the flow decides): no URN a UA
# generates comes near it, and a stored device must stay small.
MAX_INSTANCE = 256
INSTANCE_PARAM = "+sip.instance"


def instance_id(params: dict[str, str | None]) -> str | None:
    """The ``+sip.instance`` of a Contact's header parameters, normalised, or None.

    RFC 5626 §4.1: ``+sip.instance="<urn:uuid:...>"``; quotes and angle brackets are
    dropped. A ``urn:uuid:`` is compared without case (RFC 4122 §3); anything that is
    not a printable, space-free URN of at most MAX_INSTANCE characters is ignored.
    """
    value = params.get(INSTANCE_PARAM)
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    if not value or len(value) > MAX_INSTANCE or not value.lower().startswith("urn:"):
        return None
    if any(not ("!" <= char <= "~") or char in '"<>\\' for char in value):
        return None
    if value.lower().startswith("urn:uuid:"):
        value = value.lower()
    return value


def device_key(instance: str | None, flow: str) -> str:
    """The device behind a publication: its instance id when known, else its flow."""
    return f"instance:{instance}" if instance else f"flow:{flow}"


def publishing_device(
    instance: str | None, registered: list[str | None], flow: str, unique: str
) -> str:
    """The device of a PUBLISH that came on `flow`, with `instance` from its own
    Contact and `registered` the instance ids (None: none) of the user's live
    bindings registered over the same flow.

    Several bindings on one flow that do not all name one instance mean the flow may
    carry several UAs of the user (a proxy or SBC in front): then neither the flow
    nor one of the instances names the publisher, and the publication gets a device
    of its own (``unique``, e.g. the request id), which nothing replaces.
    """
    if instance:
        return device_key(instance, flow)
    if len(registered) > 1 and (len(set(registered)) > 1 or None in registered):
        return f"unknown:{unique}"
    return device_key(registered[0] if registered else None, flow)


def same_device(
    old_device: str, old_marks: frozenset[str], new_device: str, new_marks: frozenset[str]
) -> bool:
    """Whether a new initial publication replaces an old one (the rule above; the
    store's DELETE says the same in SQL: device = $new AND device_marks && $new)."""
    return bool(old_device) and old_device == new_device and bool(old_marks & new_marks)


def tuple_id_suffix(device: str) -> str:
    """A short, stable tag of a device, appended to a tuple id that two devices'
    publications share (RFC 3863 §4.1.1: tuple ids are unique in a document)."""
    return hashlib.sha256(device.encode()).hexdigest()[:8]
