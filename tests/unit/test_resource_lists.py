"""Resource lists (RFC 4826 §3): schema and uniqueness checks, pure."""

from __future__ import annotations

import pytest
from lxml import etree

from presence.xcap.errors import XcapConflict
from presence.xcap.resource_lists import Entry, ResourceList, check_resource_lists

RL = "urn:ietf:params:xml:ns:resource-lists"


def lists(inner: str) -> etree._Element:
    return etree.fromstring(f'<resource-lists xmlns="{RL}">{inner}</resource-lists>')


def refusal(inner: str) -> XcapConflict:
    with pytest.raises(XcapConflict) as refused:
        check_resource_lists(lists(inner))
    return refused.value


def test_a_buddy_list_with_every_kind_of_member() -> None:
    document = lists(
        '<list name="friends"><display-name xml:lang="en">Friends</display-name>'
        '<entry uri="sip:bob@example.com"><display-name>Bob</display-name></entry>'
        '<entry-ref ref="resource-lists/users/sip:a@example.com/index/~~/x"/>'
        '<external anchor="http://xcap.example.com/resource-lists/users/x/index"/>'
        '<list name="close"><entry uri="sip:carol@example.com"/></list>'
        '<x:extra xmlns:x="urn:x"/></list><list name="work"/>'
    )
    friends, work = check_resource_lists(document)
    assert friends.name == "friends" and friends.display_name == "Friends"
    assert friends.members[0] == Entry("entry", "sip:bob@example.com", "Bob")
    assert [m.kind for m in friends.members[:3] if isinstance(m, Entry)] == [
        "entry",
        "entry-ref",
        "external",
    ]
    assert friends.members[3] == ResourceList(
        "close", None, (Entry("entry", "sip:carol@example.com", None),)
    )
    assert work == ResourceList("work", None, ())


@pytest.mark.parametrize(
    "inner",
    [
        "<entry uri='sip:a@b'/>",  # entries live in lists
        "<list><entry/></list>",  # uri is required
        "<list><entry-ref/></list>",  # ref is required
        "<list><entry uri='sip:a b@c'/></list>",  # not a URI
        "<list><entry uri='sip:a@b'/><display-name>late</display-name></list>",
        "<list><display-name>a</display-name><display-name>b</display-name></list>",
        "<list><x:y xmlns:x='urn:x'/><entry uri='sip:a@b'/></list>",  # foreign ones last
        "<list><member uri='sip:a@b'/></list>",
        "<list colour='red'/>",
        "<list>text</list>",
        "<list><entry uri='sip:a@b'><display-name><b/></display-name></entry></list>",
    ],
)
def test_what_the_schema_refuses(inner: str) -> None:
    assert refusal(inner).tag == "schema-validation-error"


def test_another_root_is_refused() -> None:
    with pytest.raises(XcapConflict) as refused:
        check_resource_lists(etree.fromstring(b'<resource-lists xmlns="urn:other"/>'))
    assert refused.value.tag == "schema-validation-error"


def test_uniqueness_failures_name_the_field_and_offer_a_free_name() -> None:
    two_lists = refusal('<list name="a"/><list name="a"/>')
    assert two_lists.tag == "uniqueness-failure"
    assert [(e.field, e.alt_values) for e in two_lists.exists] == [
        ("resource-lists/list/@name", ("a-2",))
    ]
    two_entries = refusal('<list name="f"><entry uri="sip:a@b"/><entry uri="sip:a@b"/></list>')
    assert two_entries.tag == "uniqueness-failure"
    assert two_entries.exists[0].field == 'resource-lists/list[@name="f"]/entry/@uri'
    nested = refusal('<list name="f"><list name="g"/><list name="g"/></list>')
    assert nested.exists[0].field == 'resource-lists/list[@name="f"]/list/@name'
    for kind, key in (("entry-ref", "ref"), ("external", "anchor")):
        twice = refusal(f'<list><{kind} {key}="x"/><{kind} {key}="x"/></list>')
        assert twice.tag == "uniqueness-failure"


def test_the_same_uri_in_two_lists_is_fine() -> None:
    check_resource_lists(
        lists(
            '<list name="a"><entry uri="sip:a@b"/></list>'
            '<list name="b"><entry uri="sip:a@b"/></list>'
        )
    )
