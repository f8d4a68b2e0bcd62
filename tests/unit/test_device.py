"""Device identity of a publication (pure): which initial PUBLISH replaces which."""

import pytest

from presence.pidf.device import (
    MAX_INSTANCE,
    device_key,
    instance_id,
    publishing_device,
    same_device,
    tuple_id_suffix,
)

LINPHONE_INSTANCE = '"<urn:uuid:B061A339-F4FE-006F-8BD7-D10173C4E40C>"'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # linphone's REGISTER Contact, as it sends it (upper case folded for urn:uuid).
        (LINPHONE_INSTANCE, "urn:uuid:b061a339-f4fe-006f-8bd7-d10173c4e40c"),
        ('"<urn:gsma:imei:35209900-176148-1>"', "urn:gsma:imei:35209900-176148-1"),
        ("<urn:uuid:1>", "urn:uuid:1"),
        (None, None),
        ('""', None),
        ('"<>"', None),
        ('"<sip:alice@example.com>"', None),  # not a URN
        ('"<urn:uuid:a b>"', None),
        ('"<urn:uuid:a\x00b>"', None),
        ('"<urn:uuid:é>"', None),
        (f'"<urn:uuid:{"a" * MAX_INSTANCE}>"', None),
    ],
)
def test_instance_id(value: str | None, expected: str | None) -> None:
    params = {} if value is None else {"+sip.instance": value}
    assert instance_id(params) == expected


def test_device_is_the_instance_when_known_else_the_flow() -> None:
    assert device_key("urn:uuid:1", "udp:192.0.2.1:5060") == "instance:urn:uuid:1"
    assert device_key(None, "udp:192.0.2.1:5060") == "flow:udp:192.0.2.1:5060"


FLOW = "udp:192.0.2.1:5060"


@pytest.mark.parametrize(
    ("instance", "registered", "device"),
    [
        ("urn:uuid:p", ["urn:uuid:r"], "instance:urn:uuid:p"),  # its own Contact first
        (None, ["urn:uuid:r"], "instance:urn:uuid:r"),  # linphone: from its REGISTER
        (None, ["urn:uuid:r", "urn:uuid:r"], "instance:urn:uuid:r"),  # two contacts, one UA
        (None, [None], f"flow:{FLOW}"),  # registered without instance id
        (None, [], f"flow:{FLOW}"),  # baresip with regint=0
        # A proxy's flow with several of the user's UAs on it: a device of its own.
        (None, ["urn:uuid:a", "urn:uuid:b"], "unknown:req-1"),
        (None, ["urn:uuid:a", None], "unknown:req-1"),
        (None, [None, None], "unknown:req-1"),
    ],
)
def test_publishing_device(instance: str | None, registered: list[str | None], device: str) -> None:
    assert publishing_device(instance, registered, FLOW, "req-1") == device


LINPHONE_A = frozenset({"id:vltpid", "contact:sip:alice@example.com"})
LINPHONE_B = frozenset({"id:pr8l0e", "contact:sip:alice@example.com"})
BARESIP = frozenset({"id:t4109", "contact:sip:alice@example.com"})


def test_two_linphones_of_one_user_are_two_devices() -> None:
    # Same contact (the AOR), their own instance ids.
    assert not same_device("instance:urn:uuid:a", LINPHONE_A, "instance:urn:uuid:b", LINPHONE_B)


def test_a_restarted_linphone_replaces_its_old_publication() -> None:
    # A new random tuple id after the restart, the same instance and contact.
    assert same_device("instance:urn:uuid:a", LINPHONE_A, "instance:urn:uuid:a", LINPHONE_B)


def test_two_baresips_of_one_user_are_two_devices() -> None:
    # Identical bodies (fixed tuple id, the AOR as contact), different flows.
    assert not same_device("flow:udp:192.0.2.1:5060", BARESIP, "flow:udp:192.0.2.2:5060", BARESIP)


def test_a_baresip_after_a_412_replaces_its_old_publication() -> None:
    flow = "flow:udp:192.0.2.1:5060"
    assert same_device(flow, BARESIP, flow, BARESIP)


def test_one_devices_publications_without_a_shared_mark_are_kept_apart() -> None:
    flow = "flow:udp:192.0.2.1:5060"
    assert not same_device(flow, frozenset({"id:im"}), flow, frozenset({"id:voice"}))


def test_publications_of_unknown_device_are_never_replaced() -> None:
    # Rows stored before devices were recorded.
    assert not same_device("", BARESIP, "", BARESIP)


def test_tuple_id_suffix_is_short_stable_and_differs_between_devices() -> None:
    one, other = tuple_id_suffix("flow:udp:192.0.2.1:5060"), tuple_id_suffix("instance:urn:uuid:a")
    assert one == tuple_id_suffix("flow:udp:192.0.2.1:5060")
    assert one != other and len(one) == 8 and one.isalnum()
