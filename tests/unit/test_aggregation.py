"""Aggregation of a presentity's publications into one PIDF document (pure, no I/O)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from presence.pidf.aggregation import Publication, aggregate, empty_document
from presence.pidf.device import tuple_id_suffix
from presence.pidf.document import PIDF_NS, parse_pidf

ENTITY = "sip:alice@example.com"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
TUPLE, NOTE, BASIC, CONTACT = (
    f"{{{PIDF_NS}}}{name}" for name in ("tuple", "note", "basic", "contact")
)
PERSON, DEVICE = f"{{{DM_NS}}}person", f"{{{DM_NS}}}device"

# RFC 3863 section 6 (the example with a status extension and notes).
RFC3863 = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:im="urn:ietf:params:xml:ns:pidf:im"
    xmlns:myex="http://id.example.com/presence/"
    entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status>
      <basic>open</basic>
      <im:im>busy</im:im>
      <myex:location>home</myex:location>
    </status>
    <contact priority="0.8">im:someone@mobilecarrier.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <note xml:lang="fr">Ne derangez pas, s'il vous plait</note>
    <timestamp>2001-10-27T16:49:29Z</timestamp>
  </tuple>
  <tuple id="eg92n8">
    <status>
      <basic>open</basic>
    </status>
    <contact priority="1.0">mailto:someone@example.com</contact>
  </tuple>
  <note>I'll be in Tokyo next week</note>
</presence>
"""

# RFC 3863 section 4.1.2: the PIDF namespace under a prefix instead of as default.
RFC3863_PREFIXED = """<?xml version="1.0" encoding="UTF-8"?>
<impp:presence xmlns:impp="urn:ietf:params:xml:ns:pidf"
    entity="pres:someone@example.com">
  <impp:tuple id="mobile-im">
    <impp:status>
      <impp:basic>open</impp:basic>
    </impp:status>
    <impp:contact priority="0.8">tel:+09012345678</impp:contact>
  </impp:tuple>
</impp:presence>
"""

# RFC 4479 section 7: person, service (tuple with caps) and device.
RFC4479 = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rp="urn:ietf:params:xml:ns:pidf:rpid"
    xmlns:caps="urn:ietf:params:xml:ns:pidf:caps"
    entity="pres:someone@example.com">
  <tuple id="sg89ae">
    <status>
      <basic>open</basic>
    </status>
    <dm:deviceID>mac:8asd7d7d70</dm:deviceID>
    <caps:servcaps>
      <caps:extensions>
        <caps:supported>
          <caps:pref/>
        </caps:supported>
      </caps:extensions>
      <caps:methods>
        <caps:supported>
          <caps:MESSAGE/>
          <caps:OPTIONS/>
        </caps:supported>
      </caps:methods>
    </caps:servcaps>
    <contact>sip:someone@example.com</contact>
  </tuple>
  <dm:person id="p1">
    <rp:activities>
      <rp:on-the-phone/>
    </rp:activities>
  </dm:person>
  <dm:device id="pc122">
    <rp:user-input>idle</rp:user-input>
    <dm:deviceID>mac:8asd7d7d70</dm:deviceID>
  </dm:device>
</presence>
"""

# RFC 4480 section 4 (RPID); its device comes before its person.
RFC4480 = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:lt="urn:ietf:params:xml:ns:location-type"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status>
      <basic>open</basic>
    </status>
    <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
    <rpid:relationship><rpid:self/></rpid:relationship>
    <rpid:service-class><rpid:electronic/></rpid:service-class>
    <contact priority="0.8">im:someone@mobile.example.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <note xml:lang="fr">Ne derangez pas, s'il vous plait</note>
    <timestamp>2005-10-27T16:49:29Z</timestamp>
  </tuple>
  <tuple id="ty4658">
    <status>
      <basic>open</basic>
    </status>
    <rpid:relationship><rpid:assistant/></rpid:relationship>
    <contact priority="1.0">mailto:secretary@example.com</contact>
  </tuple>
  <tuple id="eg92n8">
    <status>
      <basic>open</basic>
    </status>
    <dm:deviceID>urn:x-mac:0003ba4811e3</dm:deviceID>
    <rpid:class>email</rpid:class>
    <rpid:service-class><rpid:electronic/></rpid:service-class>
    <rpid:status-icon>http://example.com/mail.png</rpid:status-icon>
    <contact priority="1.0">mailto:someone@example.com</contact>
  </tuple>
  <note>I'll be in Tokyo next week</note>
  <dm:device id="pc147">
    <rpid:user-input idle-threshold="600"
        last-input="2004-10-21T13:20:00-05:00">idle</rpid:user-input>
    <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
    <dm:note>PC</dm:note>
  </dm:device>
  <dm:person id="p1">
    <rpid:activities from="2005-05-30T12:00:00+05:00"
        until="2005-05-30T17:00:00+05:00">
      <rpid:note>Far away</rpid:note>
      <rpid:away/>
    </rpid:activities>
    <rpid:class>calendar</rpid:class>
    <rpid:mood>
      <rpid:angry/>
      <rpid:other>brooding</rpid:other>
    </rpid:mood>
    <rpid:place-is>
      <rpid:audio>
        <rpid:noisy/>
      </rpid:audio>
    </rpid:place-is>
    <rpid:place-type><lt:residence/></rpid:place-type>
    <rpid:privacy><rpid:unknown/></rpid:privacy>
    <rpid:sphere>bowling league</rpid:sphere>
    <rpid:status-icon>http://example.com/play.gif</rpid:status-icon>
    <rpid:time-offset>-240</rpid:time-offset>
    <dm:note>Scoring 120</dm:note>
    <dm:timestamp>2005-05-30T16:09:44+05:00</dm:timestamp>
  </dm:person>
</presence>
"""

# A desk phone (Polycom/Yealink style) in a call: person with on-the-phone.
DESK_PHONE = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
 xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
 xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
 xmlns:c="urn:ietf:params:xml:ns:pidf:cipid"
 entity="sip:alice@example.com">
<tuple id="t6a5ed77e">
<status><basic>open</basic></status>
<contact>sip:alice@192.0.2.10:5060</contact>
</tuple>
<dm:person id="p06360c4a">
<rpid:activities><rpid:on-the-phone/></rpid:activities>
<dm:note>On the Phone</dm:note>
</dm:person>
</presence>"""

# baresip style: minimal, person written before the tuple (out of schema order).
BARESIP = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
 xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
 xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
 entity="sip:alice@example.com">
<dm:person id="p4421"><rpid:activities/></dm:person>
<tuple id="t4422"><status><basic>open</basic></status>\
<contact>sip:alice@198.51.100.7:5060;transport=udp</contact></tuple>
</presence>
"""

# Android softphone (Linphone style): away, with a note on the document.
SOFTPHONE = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    entity="sip:alice@example.com">
  <tuple id="wmtu9s">
    <status>
      <basic>open</basic>
    </status>
    <contact>sip:alice@203.0.113.20:44216;transport=tls</contact>
    <timestamp>2024-03-01T10:15:00Z</timestamp>
  </tuple>
  <note xml:lang="en">Busy</note>
  <dm:person id="ao4tkd">
    <rpid:activities>
      <rpid:away/>
    </rpid:activities>
    <dm:note>Back soon</dm:note>
  </dm:person>
</presence>
"""

# What some deployed clients publish: a basic value the schema does not allow.
UNKNOWN_BASIC = (
    '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
    'entity="sip:alice@example.com"><tuple id="a"><status><basic>unknown</basic>'
    "</status></tuple></presence>"
)

# A vendor's extensions, one inside the tuple, one with an id, one without.
VENDOR = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:acme="urn:example:acme:presence"
    entity="sip:alice@example.com">
  <tuple id="acme-1">
    <status><basic>closed</basic><acme:dnd reason="meeting">true</acme:dnd></status>
    <acme:line-key index="3"/>
  </tuple>
  <acme:profile id="prof-1"><acme:ring-tone>bells</acme:ring-tone></acme:profile>
  <acme:heartbeat interval="60"/>
</presence>
"""

EXAMPLES = {
    "rfc3863": RFC3863,
    "rfc3863-prefixed": RFC3863_PREFIXED,
    "rfc4479": RFC4479,
    "rfc4480": RFC4480,
    "desk-phone": DESK_PHONE,
    "baresip": BARESIP,
    "softphone": SOFTPHONE,
    "unknown-basic": UNKNOWN_BASIC,
    "vendor": VENDOR,
}


def pub(body: str | bytes, received_time: int = 1000, etag: str = "e") -> Publication:
    return Publication(etag=etag, received_time=received_time, body=body)


def combined(*publications: Publication, closed: tuple[Publication, ...] = ()) -> etree._Element:
    """Aggregate, then check what every output must satisfy, and return the parsed root."""
    body = aggregate(ENTITY, publications, closed=closed)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    root = parse_pidf(body)
    assert root.get("entity") == ENTITY
    assert_schema_order(root)
    ids = [(child.tag, child.get("id")) for child in root if child.get("id") is not None]
    assert len(ids) == len(set(ids))
    return root


def assert_schema_order(root: etree._Element) -> None:
    """pidf.xsd: tuple*, note*, any##other*; here person, then device, then the others."""
    ranks = []
    for child in root:
        rank = {TUPLE: 0, NOTE: 1, PERSON: 2, DEVICE: 3}.get(child.tag, 4)
        if rank == 4:
            assert etree.QName(child).namespace not in (PIDF_NS, None)
        ranks.append(rank)
    assert ranks == sorted(ranks)


def shape(element: etree._Element) -> tuple[object, ...]:
    """An element's names, attributes, text and children, whatever prefixes it uses."""
    children = tuple((shape(child), child.tail) for child in element)
    return element.tag, sorted(element.attrib.items()), element.text, children


def children(root: etree._Element, tag: str) -> list[etree._Element]:
    return [child for child in root if child.tag == tag]


def resolve(element: etree._Element, qname: str) -> str:
    prefix, _, local = qname.rpartition(":")
    return f"{{{element.nsmap[prefix or None]}}}{local}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_single_publication_round_trip_keeps_every_element_and_namespace(name: str) -> None:
    source = parse_pidf(EXAMPLES[name].encode())
    root = combined(pub(EXAMPLES[name]))
    assert sorted(map(shape, root), key=repr) == sorted(map(shape, source), key=repr)
    for child in root:
        assert source.nsmap.items() <= child.nsmap.items()


def test_rfc4480_comes_out_in_schema_order() -> None:
    root = combined(pub(RFC4480))
    assert [(etree.QName(child).localname, child.get("id")) for child in root] == [
        ("tuple", "bs35r9"),
        ("tuple", "ty4658"),
        ("tuple", "eg92n8"),
        ("note", None),
        ("person", "p1"),
        ("device", "pc147"),
    ]


def test_out_of_order_source_is_put_in_schema_order() -> None:
    scrambled = """<presence xmlns="urn:ietf:params:xml:ns:pidf"
        xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:x="urn:example:x"
        entity="sip:alice@example.com">
      <x:thing/><dm:device id="d"/><dm:person id="p"/><note>n</note>
      <tuple id="t"><status><basic>open</basic></status></tuple>
    </presence>"""
    root = combined(pub(scrambled))
    assert [etree.QName(child).localname for child in root] == [
        "tuple",
        "note",
        "person",
        "device",
        "thing",
    ]


def three_devices() -> list[Publication]:
    # The desk phone and the softphone are provisioned with the same person id.
    softphone = SOFTPHONE.replace('id="ao4tkd"', 'id="p06360c4a"')
    baresip = BARESIP.replace("</tuple>", '</tuple><note xml:lang="en">Busy</note>')
    return [
        pub(DESK_PHONE, received_time=100, etag="desk"),
        pub(softphone, received_time=300, etag="soft"),
        pub(baresip, received_time=200, etag="bare"),
    ]


def test_three_devices_are_combined() -> None:
    root = combined(*three_devices())
    # Tuples of all three, newest publication first.
    assert [t.get("id") for t in children(root, TUPLE)] == ["wmtu9s", "t4422", "t6a5ed77e"]
    # One person p06360c4a: the softphone's (newest), away rather than on the phone.
    persons = children(root, PERSON)
    assert [p.get("id") for p in persons] == ["p06360c4a", "p4421"]
    assert persons[0].find(f"{{{RPID_NS}}}activities/{{{RPID_NS}}}away") is not None
    assert not root.findall(f".//{{{RPID_NS}}}on-the-phone")
    # The same note from two devices appears once.
    assert [(n.get(XML_LANG), n.text) for n in children(root, NOTE)] == [("en", "Busy")]


@given(st.permutations(range(3)))
def test_input_order_is_irrelevant(order: list[int]) -> None:
    publications = three_devices()
    expected = aggregate(ENTITY, publications)
    assert aggregate(ENTITY, [publications[i] for i in order]) == expected


def test_same_id_newest_wins_and_a_tie_goes_to_the_later_in_input() -> None:
    older = UNKNOWN_BASIC
    newer = UNKNOWN_BASIC.replace("unknown", "open")
    for publications in ([pub(newer, 2), pub(older, 1)], [pub(older, 1), pub(newer, 2)]):
        assert [b.text for b in combined(*publications).iter(BASIC)] == ["open"]
    assert [b.text for b in combined(pub(older), pub(newer)).iter(BASIC)] == ["open"]
    assert [b.text for b in combined(pub(newer), pub(older)).iter(BASIC)] == ["unknown"]


def test_notes_differing_in_language_or_text_are_all_kept() -> None:
    german = SOFTPHONE.replace('xml:lang="en"', 'xml:lang="de"')
    root = combined(pub(RFC3863, 1), pub(RFC4480, 2), pub(SOFTPHONE, 3), pub(german, 4))
    assert [(n.get(XML_LANG), n.text) for n in children(root, NOTE)] == [
        ("de", "Busy"),
        ("en", "Busy"),
        (None, "I'll be in Tokyo next week"),
    ]


def test_unknown_basic_is_passed_through() -> None:
    root = combined(pub(UNKNOWN_BASIC))
    assert [b.text for b in root.iter(BASIC)] == ["unknown"]


def test_closed_publication_tuples_are_shown_closed_once() -> None:
    desk = pub(DESK_PHONE, 100, "desk")
    root = combined(pub(BARESIP, 200), closed=(desk, desk))
    tuples = children(root, TUPLE)
    assert [t.get("id") for t in tuples] == ["t4422", "t6a5ed77e"]
    gone = tuples[1]
    assert [b.text for b in gone.iter(BASIC)] == ["closed"]
    assert gone.findtext(CONTACT) == "sip:alice@192.0.2.10:5060"
    # Its person (on the phone) is not carried: the busy lamp goes dark.
    assert [p.get("id") for p in children(root, PERSON)] == ["p4421"]
    assert not root.findall(f".//{{{RPID_NS}}}on-the-phone")


def test_closed_tuple_keeps_contact_priority_and_drops_stale_status() -> None:
    root = combined(closed=(pub(RFC3863),))
    assert [t.get("id") for t in children(root, TUPLE)] == ["bs35r9", "eg92n8"]
    first = children(root, TUPLE)[0]
    assert [etree.QName(e).localname for e in first.iter()] == [
        "tuple",
        "status",
        "basic",
        "contact",
    ]
    assert first.find(CONTACT).get("priority") == "0.8"
    assert not children(root, NOTE)


def test_live_tuple_wins_over_a_closed_one_with_the_same_id() -> None:
    old = pub(DESK_PHONE.replace("<basic>open</basic>", "<basic>closed</basic>"), 100)
    live = pub(DESK_PHONE, 50)  # older than the closed row, still live
    root = combined(live, closed=(old,))
    assert [
        (t.get("id"), t.findtext(f"{{{PIDF_NS}}}status/{{{PIDF_NS}}}basic"))
        for t in children(root, TUPLE)
    ] == [("t6a5ed77e", "open")]
    assert len(children(root, PERSON)) == 1


def basic_of(root: etree._Element) -> dict[str, str]:
    return {
        t.get("id"): t.findtext(f"{{{PIDF_NS}}}status/{{{PIDF_NS}}}basic")
        for t in children(root, TUPLE)
    }


def baresip_device(basic: str, device: str, received_time: int) -> Publication:
    """baresip writes the same tuple id (and the AOR as contact) on every install."""
    body = BARESIP.replace("<basic>open</basic>", f"<basic>{basic}</basic>")
    return Publication(device, received_time, body, device=device)


def test_two_devices_with_one_tuple_id_both_show_under_ids_of_their_own() -> None:
    phone = baresip_device("open", "flow:udp:192.0.2.1:5060", 100)
    desk = baresip_device("closed", "flow:udp:192.0.2.2:5060", 200)
    shown = basic_of(combined(phone, desk))
    assert shown == {
        f"t4422-{tuple_id_suffix(desk.device)}": "closed",
        f"t4422-{tuple_id_suffix(phone.device)}": "open",
    }
    # The ids depend on the device, not on which one published last.
    phone_again = Publication("phone", 300, phone.body, device=phone.device)
    assert basic_of(combined(desk, phone_again)) == shown


def test_one_devices_publications_with_one_tuple_id_keep_it_and_the_newest_wins() -> None:
    older = baresip_device("closed", "instance:urn:uuid:1", 100)
    newer = baresip_device("open", "instance:urn:uuid:1", 200)
    assert basic_of(combined(older, newer)) == {"t4422": "open"}


def test_a_device_leaving_leaves_the_other_devices_tuple_with_its_plain_id() -> None:
    staying = baresip_device("open", "flow:udp:192.0.2.1:5060", 100)
    leaving = baresip_device("open", "flow:udp:192.0.2.2:5060", 200)
    assert basic_of(combined(staying, closed=(leaving,))) == {"t4422": "open"}


def test_nothing_published_is_the_empty_document() -> None:
    body = empty_document(ENTITY)
    assert aggregate(ENTITY, []) == body
    root = parse_pidf(body)
    assert root.tag == f"{{{PIDF_NS}}}presence" and root.get("entity") == ENTITY
    assert len(root) == 0


BAD_BODIES = [
    "",
    "<presence",
    b"\xff\xfe\x00garbage",
    "<note xmlns='urn:x'/>",
    '<presence xmlns="urn:ietf:params:xml:ns:pidf"/>',  # no entity
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><presence/>',
    "\ud800",  # not encodable: a lone surrogate
    RFC3863.replace("</presence>", "<note>" + "x" * 70000 + "</note></presence>"),
]


@pytest.mark.parametrize("bad", BAD_BODIES)
def test_unparsable_stored_body_is_skipped(bad: str | bytes) -> None:
    good = pub(SOFTPHONE, 1)
    assert aggregate(ENTITY, [pub(bad, 2), good], closed=[pub(bad, 3)]) == aggregate(ENTITY, [good])
    assert aggregate(ENTITY, [pub(bad)]) == empty_document(ENTITY)


def test_namespace_prefix_clash_keeps_each_elements_own_declarations() -> None:
    acme = """<presence xmlns="urn:ietf:params:xml:ns:pidf"
        xmlns:v="urn:example:acme" xmlns:q="urn:example:acme:states"
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
        entity="sip:alice@example.com">
      <tuple id="a"><status><basic>open</basic></status></tuple>
      <v:line-state kind="q:busy" xsi:type="v:LineState">busy</v:line-state>
    </presence>"""
    globex = """<presence xmlns="urn:ietf:params:xml:ns:pidf"
        xmlns:v="urn:example:globex" xmlns:q="urn:example:globex:states"
        entity="sip:alice@example.com">
      <tuple id="g"><status><basic>open</basic></status></tuple>
      <v:line-state kind="q:idle">idle</v:line-state>
      <rpid:activities xmlns:rpid="urn:example:not-rpid"/>
    </presence>"""
    root = combined(pub(acme, 2), pub(globex, 1), pub(DESK_PHONE, 0))
    states = {el.text: el for el in root if etree.QName(el).localname == "line-state"}
    assert states["busy"].tag == "{urn:example:acme}line-state"
    assert resolve(states["busy"], states["busy"].get("kind")) == "{urn:example:acme:states}busy"
    xsi_type = states["busy"].get("{http://www.w3.org/2001/XMLSchema-instance}type")
    assert resolve(states["busy"], xsi_type) == "{urn:example:acme}LineState"
    assert states["idle"].tag == "{urn:example:globex}line-state"
    assert resolve(states["idle"], states["idle"].get("kind")) == "{urn:example:globex:states}idle"
    # The vendor's "rpid" prefix does not capture the desk phone's real RPID elements.
    assert root.find(f"{PERSON}/{{{RPID_NS}}}activities") is not None
    assert root.find("{urn:example:not-rpid}activities") is not None
    assert [t.get("id") for t in children(root, TUPLE)] == ["a", "g", "t6a5ed77e"]


def test_shared_namespaces_are_declared_once_on_the_root() -> None:
    body = aggregate(ENTITY, [pub(DESK_PHONE, 1), pub(SOFTPHONE, 2), pub(RFC4479, 3)])
    assert body.count(b'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"') == 1
    assert body.count(b"xmlns:") == body.split(b">", 2)[1].count(b"xmlns:")
    root = parse_pidf(body)
    assert {"dm", "rpid", "rp", "caps", "c"} <= set(root.nsmap)


def test_unknown_vendor_extensions_are_carried() -> None:
    other = VENDOR.replace('id="acme-1"', 'id="acme-2"').replace("bells", "chimes")
    root = combined(pub(VENDOR, 2), pub(other, 1), pub(RFC4479, 0))
    acme = "urn:example:acme:presence"
    assert root.find(f"{TUPLE}/{{{PIDF_NS}}}status/{{{acme}}}dnd").get("reason") == "meeting"
    assert root.find(f"{TUPLE}/{{{acme}}}line-key").get("index") == "3"
    assert root.find(".//{urn:ietf:params:xml:ns:pidf:caps}MESSAGE") is not None
    # Same id: the newest wins; identical id-less element: once.
    profiles = root.findall(f"{{{acme}}}profile")
    assert [p.findtext(f"{{{acme}}}ring-tone") for p in profiles] == ["bells"]
    assert len(root.findall(f"{{{acme}}}heartbeat")) == 1
    assert [etree.QName(child).localname for child in root][-2:] == ["profile", "heartbeat"]


def test_elements_the_schema_cannot_hold_at_the_top_are_dropped() -> None:
    odd = UNKNOWN_BASIC.replace(
        "</presence>", '<timestamp>2024-01-01T00:00:00Z</timestamp><stray xmlns=""/></presence>'
    )
    root = combined(pub(odd))
    assert [etree.QName(child).localname for child in root] == ["tuple"]


def test_text_and_bytes_bodies_with_non_ascii_content() -> None:
    text = SOFTPHONE.replace(">Busy<", ">Im Büro, bitte nicht stören<")
    for body in (text, text.encode()):
        root = combined(pub(body))
        assert children(root, NOTE)[0].text == "Im Büro, bitte nicht stören"


publication_sets = st.lists(
    st.builds(pub, st.sampled_from([*EXAMPLES.values(), *BAD_BODIES]), st.integers(0, 5)),
    max_size=6,
)


def newest_first_roots(publications: list[Publication]) -> list[etree._Element]:
    order = sorted(enumerate(publications), key=lambda p: (p[1].received_time, p[0]), reverse=True)
    roots = []
    for _, publication in order:
        body = publication.body
        try:
            roots.append(parse_pidf(body.encode() if isinstance(body, str) else body))
        except ValueError:
            pass
    return roots


@given(publication_sets, publication_sets)
def test_any_mix_of_publications_gives_one_valid_document(
    live: list[Publication], closed: list[Publication]
) -> None:
    root = combined(*live, closed=tuple(closed))
    expected: dict[str, etree._Element] = {}
    for source in newest_first_roots(live):
        for element in source.iter(TUPLE):
            expected.setdefault(element.get("id"), element)
    shown_closed = set()
    for source in newest_first_roots(closed):
        shown_closed |= {t.get("id") for t in source.iter(TUPLE)} - set(expected)
    tuples = {t.get("id"): t for t in children(root, TUPLE)}
    assert set(tuples) == set(expected) | shown_closed
    for ident, element in expected.items():
        assert shape(tuples[ident]) == shape(element)
    for ident in shown_closed:
        assert [b.text for b in tuples[ident].iter(BASIC)] == ["closed"]
