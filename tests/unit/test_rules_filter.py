"""RFC 5025 transformations applied to PIDF documents (pure, no I/O)."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from presence.pidf.document import PIDF_NS, PidfError, parse_pidf
from presence.rules import (
    ComponentGrant,
    Transformations,
    UserInputLevel,
    evaluate,
    filter_document,
    parse_rules,
    polite_block_document,
)
from tests.unit.test_aggregation import RFC3863, RFC4479, RFC4480
from tests.unit.test_rules import RFC5025_EXAMPLE

DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
IM_NS = "urn:ietf:params:xml:ns:pidf:im"
NS = {
    "p": PIDF_NS,
    "dm": DM_NS,
    "rpid": RPID_NS,
    "im": IM_NS,
    "caps": "urn:ietf:params:xml:ns:pidf:caps",
}
ALL = ComponentGrant(all=True)
EVERYTHING = Transformations(
    services=ALL, persons=ALL, devices=ALL, all_attributes=True, declared=True
)


def grant(**fields: object) -> Transformations:
    return Transformations(declared=True, **fields)  # type: ignore[arg-type]


def filtered(document: str | bytes, transformations: Transformations, **kwargs) -> etree._Element:
    body = document.encode() if isinstance(document, str) else document
    output = filter_document(body, transformations, **kwargs)
    assert output.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    return parse_pidf(output)


def ids(root: etree._Element, path: str) -> list[str]:
    return [element.get("id") for element in root.xpath(path, namespaces=NS)]


def found(root: etree._Element, path: str) -> int:
    return len(root.xpath(path, namespaces=NS))


# -- nothing granted ------------------------------------------------------------------------


@pytest.mark.parametrize("document", [RFC3863, RFC4479, RFC4480])
def test_nothing_granted_leaves_an_empty_presence_element(document: str) -> None:
    root = filtered(document, Transformations())
    assert len(root) == 0
    assert root.get("entity") == "pres:someone@example.com"


def test_attributes_without_components_show_nothing() -> None:
    root = filtered(RFC4480, grant(all_attributes=True))
    assert [child.tag for child in root] == [f"{{{PIDF_NS}}}note"]  # only the top-level note


# -- which tuples, persons, devices ---------------------------------------------------------


def test_all_services_keeps_every_tuple_with_basic_contact_and_timestamp_only() -> None:
    root = filtered(RFC4480, grant(services=ALL))
    assert ids(root, "p:tuple") == ["bs35r9", "ty4658", "eg92n8"]
    assert found(root, "dm:person | dm:device | p:note") == 0
    for tuple_ in root.iterfind(f"{{{PIDF_NS}}}tuple"):
        names = [etree.QName(child).localname for child in tuple_]
        assert names in (["status", "contact", "timestamp"], ["status", "contact"])
        assert tuple_.findtext("p:status/p:basic", namespaces=NS) == "open"
    assert root.findtext("p:tuple/p:contact", namespaces=NS) == "im:someone@mobile.example.net"


def test_status_extensions_need_a_grant_but_basic_stays() -> None:
    root = filtered(RFC3863, grant(services=ALL))
    assert [etree.QName(e).localname for e in root.find("p:tuple/p:status", NS)] == ["basic"]
    root = filtered(RFC3863, grant(services=ALL, unknown_attributes=frozenset({(IM_NS, "im")})))
    assert root.findtext("p:tuple/p:status/im:im", namespaces=NS) == "busy"
    assert found(root, "//*[local-name()='location']") == 0


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        (ComponentGrant(occurrence_ids=frozenset({"ty4658"})), ["ty4658"]),
        (ComponentGrant(classes=frozenset({"email"})), ["eg92n8"]),
        (ComponentGrant(service_uri_schemes=frozenset({"mailto"})), ["ty4658", "eg92n8"]),
        (ComponentGrant(service_uri_schemes=frozenset({"im"})), ["bs35r9"]),
        (ComponentGrant(service_uris=frozenset({"IM:someone@mobile.example.net"})), ["bs35r9"]),
        (ComponentGrant(service_uris=frozenset({"mailto:someone@example.com"})), ["eg92n8"]),
        (ComponentGrant(service_uris=frozenset({"mailto:nobody@example.com"})), []),
        (ComponentGrant(device_ids=frozenset({"urn:device:0003ba4811e3"})), []),  # devices only
    ],
)
def test_provide_services_selects_tuples(services: ComponentGrant, expected: list[str]) -> None:
    assert ids(filtered(RFC4480, grant(services=services)), "p:tuple") == expected


@pytest.mark.parametrize(
    ("persons", "expected"),
    [
        (ALL, ["p1"]),
        (ComponentGrant(occurrence_ids=frozenset({"p1"})), ["p1"]),
        (ComponentGrant(classes=frozenset({"calendar"})), ["p1"]),
        (ComponentGrant(classes=frozenset({"email"})), []),
    ],
)
def test_provide_persons_selects_persons(persons: ComponentGrant, expected: list[str]) -> None:
    root = filtered(RFC4480, grant(persons=persons))
    assert ids(root, "dm:person") == expected
    assert found(root, "p:tuple | dm:device") == 0


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (ALL, ["pc147"]),
        (ComponentGrant(occurrence_ids=frozenset({"pc147"})), ["pc147"]),
        (ComponentGrant(device_ids=frozenset({"urn:device:0003ba4811e3"})), ["pc147"]),
        (ComponentGrant(device_ids=frozenset({"urn:x-mac:0003ba4811e3"})), []),
    ],
)
def test_provide_devices_selects_devices(devices: ComponentGrant, expected: list[str]) -> None:
    assert ids(filtered(RFC4480, grant(devices=devices)), "dm:device") == expected


def test_kept_person_and_device_keep_timestamp_and_device_id_only() -> None:
    root = filtered(RFC4480, grant(persons=ALL, devices=ALL))
    person, device = root.find("dm:person", NS), root.find("dm:device", NS)
    assert [etree.QName(e).localname for e in person] == ["timestamp"]
    assert [etree.QName(e).localname for e in device] == ["deviceID"]


# -- attributes, one by one -----------------------------------------------------------------

PERSON_ATTRIBUTES = [
    "activities",
    "class",
    "mood",
    "place-is",
    "place-type",
    "privacy",
    "sphere",
    "status-icon",
    "time-offset",
]


@pytest.mark.parametrize("name", PERSON_ATTRIBUTES)
def test_each_person_attribute_needs_its_own_permission(name: str) -> None:
    root = filtered(RFC4480, grant(persons=ALL, attributes=frozenset({name})))
    person = root.find("dm:person", NS)
    assert [etree.QName(e).localname for e in person] == [name, "timestamp"]
    original = parse_pidf(RFC4480.encode()).find(f"dm:person/rpid:{name}", NS)
    kept = person.find(f"rpid:{name}", NS)
    assert etree.tostring(kept, method="c14n") == etree.tostring(original, method="c14n")


def test_activities_keep_their_own_children_and_attributes() -> None:
    root = filtered(RFC4480, grant(persons=ALL, attributes=frozenset({"activities"})))
    activities = root.find("dm:person/rpid:activities", NS)
    assert activities.get("from") == "2005-05-30T12:00:00+05:00"
    assert activities.findtext("rpid:note", namespaces=NS) == "Far away"
    assert activities.find("rpid:away", NS) is not None


def test_relationship_status_icon_and_class_of_tuples() -> None:
    root = filtered(RFC4480, grant(services=ALL, attributes=frozenset({"relationship"})))
    assert found(root, "p:tuple/rpid:relationship") == 2
    assert found(root, "p:tuple/rpid:status-icon | p:tuple/rpid:class") == 0
    root = filtered(RFC4480, grant(services=ALL, attributes=frozenset({"status-icon", "class"})))
    assert root.findtext("p:tuple/rpid:status-icon", namespaces=NS) == "http://example.com/mail.png"
    assert root.findtext("p:tuple/rpid:class", namespaces=NS) == "email"
    assert found(root, "p:tuple/rpid:relationship") == 0


def test_device_id_of_tuples_needs_provide_device_id() -> None:
    root = filtered(RFC4480, grant(services=ALL, devices=ALL))
    assert found(root, "p:tuple/dm:deviceID") == 0
    assert found(root, "dm:device/dm:deviceID") == 1
    root = filtered(RFC4480, grant(services=ALL, attributes=frozenset({"deviceID"})))
    assert found(root, "p:tuple/dm:deviceID") == 2


def test_notes_need_provide_note_at_every_level() -> None:
    everyone = grant(services=ALL, persons=ALL, devices=ALL)
    root = filtered(RFC4480, everyone)
    assert found(root, "//p:note | //dm:note") == 0
    root = filtered(
        RFC4480, grant(services=ALL, persons=ALL, devices=ALL, attributes=frozenset({"note"}))
    )
    assert found(root, "p:tuple/p:note") == 2
    assert root.findtext("p:note", namespaces=NS) == "I'll be in Tokyo next week"
    assert root.findtext("dm:person/dm:note", namespaces=NS) == "Scoring 120"
    assert root.findtext("dm:device/dm:note", namespaces=NS) == "PC"
    assert root.find("p:tuple/p:note", NS).get("{http://www.w3.org/XML/1998/namespace}lang") == "en"


@pytest.mark.parametrize(
    ("level", "attributes"),
    [
        (UserInputLevel.FALSE, None),
        (UserInputLevel.BARE, {}),
        (UserInputLevel.THRESHOLDS, {"idle-threshold": "600"}),
        (
            UserInputLevel.FULL,
            {"idle-threshold": "600", "last-input": "2004-10-21T13:20:00-05:00"},
        ),
    ],
)
def test_user_input_levels(level: UserInputLevel, attributes: dict[str, str] | None) -> None:
    root = filtered(RFC4480, grant(devices=ALL, user_input=level))
    user_input = root.find("dm:device/rpid:user-input", NS)
    if attributes is None:
        assert user_input is None
    else:
        assert user_input.text == "idle"
        assert dict(user_input.attrib) == attributes


def test_user_input_in_full_with_all_attributes() -> None:
    root = filtered(RFC4480, grant(devices=ALL, all_attributes=True))
    assert root.find("dm:device/rpid:user-input", NS).get("last-input") is not None


def test_unknown_attributes_need_their_namespace_and_name() -> None:
    rfc4479 = grant(services=ALL)
    assert found(filtered(RFC4479, rfc4479), "p:tuple/caps:servcaps") == 0
    caps = grant(
        services=ALL,
        unknown_attributes=frozenset({("urn:ietf:params:xml:ns:pidf:caps", "servcaps")}),
    )
    root = filtered(RFC4479, caps)
    assert found(root, "p:tuple/caps:servcaps/caps:methods/caps:supported/caps:MESSAGE") == 1
    wrong_ns = grant(services=ALL, unknown_attributes=frozenset({("urn:other", "servcaps")}))
    assert found(filtered(RFC4479, wrong_ns), "p:tuple/caps:servcaps") == 0
    service_class = grant(services=ALL, unknown_attributes=frozenset({(RPID_NS, "service-class")}))
    assert found(filtered(RFC4480, service_class), "p:tuple/rpid:service-class") == 2


def test_top_level_extension_is_an_unknown_attribute() -> None:
    document = RFC3863.replace(
        "</presence>", '<v:mood xmlns:v="urn:vendor">grumpy</v:mood></presence>'
    )
    assert found(filtered(document, grant(services=ALL)), "//*[local-name()='mood']") == 0
    vendor = grant(unknown_attributes=frozenset({("urn:vendor", "mood")}))
    assert found(filtered(document, vendor), "*[local-name()='mood']") == 1


@pytest.mark.parametrize("document", [RFC3863, RFC4479, RFC4480])
def test_all_components_and_all_attributes_is_the_whole_document(document: str) -> None:
    original = parse_pidf(document.encode())
    root = filtered(document, EVERYTHING)
    assert etree.tostring(root, method="c14n") == etree.tostring(original, method="c14n")


# -- the RFC 5025 example applied ------------------------------------------------------------

RFC5025_PRESENCE = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    xmlns:foo="urn:vendor-specific:foo-namespace"
    entity="sip:presentity@example.com">
  <tuple id="sip-phone">
    <status><basic>open</basic></status>
    <dm:deviceID>urn:uuid:d27459b7-8213-4395-aa77-ed859a3e5b3a</dm:deviceID>
    <contact>sip:presentity@192.0.2.1</contact>
  </tuple>
  <tuple id="email">
    <status><basic>open</basic></status>
    <contact>mailto:presentity@example.com</contact>
  </tuple>
  <tuple id="im">
    <status><basic>open</basic></status>
    <contact>im:presentity@example.com</contact>
  </tuple>
  <dm:person id="me">
    <rpid:activities><rpid:meeting/></rpid:activities>
    <rpid:mood><rpid:happy/></rpid:mood>
    <foo:foo>bar</foo:foo>
    <foo:baz>secret</foo:baz>
  </dm:person>
  <dm:device id="pc">
    <rpid:user-input idle-threshold="600" last-input="2024-03-01T11:50:00Z">idle</rpid:user-input>
    <dm:deviceID>urn:uuid:d27459b7-8213-4395-aa77-ed859a3e5b3a</dm:deviceID>
  </dm:device>
</presence>
"""


def test_rfc5025_example_rules_on_a_document() -> None:
    decision = evaluate(
        parse_rules(RFC5025_EXAMPLE),
        "sip:user@example.com",
        sphere=None,
        now=datetime(2024, 3, 1, tzinfo=UTC),
    )
    assert decision.sub_handling == "allow"
    root = filtered(RFC5025_PRESENCE, decision.transformations)
    assert ids(root, "p:tuple") == ["sip-phone", "email"]  # sip and mailto schemes
    assert found(root, "p:tuple/dm:deviceID") == 0
    person = root.find("dm:person", NS)
    assert [etree.QName(e).localname for e in person] == ["activities", "foo"]
    assert found(root, "dm:device") == 0  # no provide-devices, so no user-input either


def test_rfc5025_example_bare_user_input_on_a_person() -> None:
    document = RFC5025_PRESENCE.replace(
        "<foo:baz>secret</foo:baz>",
        '<rpid:user-input idle-threshold="60" last-input="2024-03-01T11:59:00Z">'
        "active</rpid:user-input>",
    )
    transformations = parse_rules(RFC5025_EXAMPLE)[0].transformations
    user_input = filtered(document, transformations).find("dm:person/rpid:user-input", NS)
    assert user_input.text == "active"
    assert dict(user_input.attrib) == {}


# -- Kamailio's default ------------------------------------------------------------------------


def test_kamailio_default_passes_everything_when_nothing_is_declared() -> None:
    body = RFC4480.encode()
    assert filter_document(body, Transformations(), default="kamailio") == body
    assert len(filtered(body, Transformations(), default="rfc5025")) == 0


def test_kamailio_default_filters_as_rfc5025_once_anything_is_declared() -> None:
    body = RFC4480.encode()
    declared = grant(services=ComponentGrant(occurrence_ids=frozenset({"eg92n8"})))
    assert filter_document(body, declared, default="kamailio") == filter_document(body, declared)
    nothing = grant()  # e.g. <provide-mood>false</provide-mood> alone
    assert len(filtered(body, nothing, default="kamailio")) == 0


def test_unknown_default_and_bad_pidf_are_refused() -> None:
    with pytest.raises(ValueError, match="default"):
        filter_document(RFC4480.encode(), Transformations(), default="opensips")  # type: ignore[arg-type]
    with pytest.raises(PidfError):
        filter_document(b"<presence/>", EVERYTHING)
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@example.com">'
        b"<note>&b;</note></presence>"
    )
    with pytest.raises(PidfError, match="DTD"):
        filter_document(bomb, EVERYTHING, default="kamailio")


# -- polite-block ------------------------------------------------------------------------------


def test_polite_block_document_says_only_closed() -> None:
    body = polite_block_document("sip:alice@example.com")
    root = parse_pidf(body)
    assert root.get("entity") == "sip:alice@example.com"
    assert [child.tag for child in root] == [f"{{{PIDF_NS}}}tuple"]
    (tuple_,) = root
    assert [etree.QName(e).localname for e in tuple_] == ["status"]
    assert [e.text for e in tuple_.iter(f"{{{PIDF_NS}}}basic")] == ["closed"]
    assert len(tuple_.find("p:status", NS)) == 1
    assert "block" not in tuple_.get("id")


def test_polite_block_document_is_stable_per_entity_and_escapes_it() -> None:
    assert polite_block_document("sip:a@example.com") == polite_block_document("sip:a@example.com")
    assert polite_block_document("sip:a@example.com") != polite_block_document("sip:b@example.com")
    root = parse_pidf(polite_block_document('sip:a"&<b@example.com'))
    assert root.get("entity") == 'sip:a"&<b@example.com'


# -- properties --------------------------------------------------------------------------------

component_grants = st.builds(
    ComponentGrant,
    all=st.booleans(),
    occurrence_ids=st.frozensets(st.sampled_from(["bs35r9", "ty4658", "eg92n8", "p1", "pc147"])),
    classes=st.frozensets(st.sampled_from(["email", "calendar", "work"])),
    device_ids=st.frozensets(st.sampled_from(["urn:device:0003ba4811e3"])),
    service_uri_schemes=st.frozensets(st.sampled_from(["im", "mailto", "sip"])),
)
transformations_strategy = st.builds(
    Transformations,
    services=component_grants,
    persons=component_grants,
    devices=component_grants,
    attributes=st.frozensets(st.sampled_from([*PERSON_ATTRIBUTES, "note", "relationship"])),
    user_input=st.sampled_from(list(UserInputLevel)),
    unknown_attributes=st.frozensets(st.sampled_from([(RPID_NS, "service-class")])),
    all_attributes=st.booleans(),
    declared=st.just(True),
)


def _signatures(body: bytes) -> set[tuple[object, ...]]:
    """Every element as (tag, text, attribute): what filtering may drop but never add."""
    return {
        (element.tag, (element.text or "").strip(), attribute)
        for element in parse_pidf(body).iter(etree.Element)
        for attribute in [None, *element.attrib.items()]
    }


@given(transformations_strategy, transformations_strategy)
def test_filtering_only_removes_and_granting_more_never_shows_less(
    first: Transformations, second: Transformations
) -> None:
    # Not idempotent by design: a tuple granted by its rpid:class loses that class
    # unless provide-class is granted too, so filtering the output again drops it.
    original = RFC4480.encode()
    less = _signatures(filter_document(original, first))
    more = _signatures(filter_document(original, first.union(second)))
    assert less <= more <= _signatures(original)
