"""Pres-rules (RFC 4745 common-policy + RFC 5025): parsing, conditions, combining."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from presence.rules import (
    ComponentGrant,
    RulesError,
    Transformations,
    UserInputLevel,
    evaluate,
    parse_rules,
)
from presence.rules.policy import identity_key

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

# RFC 5025 section 6 (example document).
RFC5025_EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns="urn:ietf:params:xml:ns:pres-rules"
 xmlns:pr="urn:ietf:params:xml:ns:pres-rules"
 xmlns:cr="urn:ietf:params:xml:ns:common-policy">
 <cr:rule id="a">
  <cr:conditions>
   <cr:identity>
    <cr:one id="sip:user@example.com"/>
   </cr:identity>
  </cr:conditions>
  <cr:actions>
   <pr:sub-handling>allow</pr:sub-handling>
  </cr:actions>
  <cr:transformations>
   <pr:provide-services>
     <pr:service-uri-scheme>sip</pr:service-uri-scheme>
     <pr:service-uri-scheme>mailto</pr:service-uri-scheme>
   </pr:provide-services>
   <pr:provide-persons>
     <pr:all-persons/>
   </pr:provide-persons>
   <pr:provide-activities>true</pr:provide-activities>
   <pr:provide-user-input>bare</pr:provide-user-input>
   <pr:provide-unknown-attribute
        ns="urn:vendor-specific:foo-namespace"
        name="foo">true</pr:provide-unknown-attribute>
  </cr:transformations>
 </cr:rule>
</cr:ruleset>
"""


def ruleset(*rules: str) -> bytes:
    return (f'<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}">{"".join(rules)}</cr:ruleset>').encode()


def rule(
    rule_id: str, conditions: str | None = "", sub: str | None = "allow", transforms: str = ""
) -> str:
    parts = "" if conditions is None else f"<cr:conditions>{conditions}</cr:conditions>"
    if sub is not None:
        parts += f"<cr:actions><pr:sub-handling>{sub}</pr:sub-handling></cr:actions>"
    if transforms:
        parts += f"<cr:transformations>{transforms}</cr:transformations>"
    return f'<cr:rule id="{rule_id}">{parts}</cr:rule>'


def decide(document: bytes, watcher: str | None, sphere: str | None = None, now=NOW):
    return evaluate(parse_rules(document), watcher, sphere=sphere, now=now)


def matches(conditions: str, watcher: str | None, sphere: str | None = None, now=NOW) -> bool:
    decision = decide(ruleset(rule("r", conditions)), watcher, sphere, now)
    return decision.sub_handling == "allow"


# -- the RFC 5025 example --------------------------------------------------------------


def test_rfc5025_example_is_parsed_into_its_grants() -> None:
    (only,) = parse_rules(RFC5025_EXAMPLE)
    assert only.id == "a"
    assert only.sub_handling == "allow"
    t = only.transformations
    assert t.services == ComponentGrant(service_uri_schemes=frozenset({"sip", "mailto"}))
    assert t.persons == ComponentGrant(all=True)
    assert t.devices == ComponentGrant()
    assert t.attributes == {"activities"}
    assert t.user_input is UserInputLevel.BARE
    assert t.unknown_attributes == {("urn:vendor-specific:foo-namespace", "foo")}
    assert not t.all_attributes
    assert t.declared


def test_rfc5025_example_allows_only_its_user() -> None:
    decision = decide(RFC5025_EXAMPLE, "sip:user@example.com")
    assert decision.sub_handling == "allow"
    assert decision.matched == ("a",)
    stranger = decide(RFC5025_EXAMPLE, "sip:other@example.com")
    assert stranger.sub_handling is None
    assert stranger.matched == ()
    assert stranger.transformations == Transformations()


# -- identity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("one", "watcher", "expected"),
    [
        ("sip:alice@example.com", "sip:alice@example.com", True),
        ("alice@example.com", "sip:alice@example.com", True),  # XCAP: "sip:" optional
        ("sip:alice@example.com", "alice@example.com", True),
        ("sip:alice@EXAMPLE.com", "sip:alice@example.COM", True),  # host case-insensitive
        ("sip:alice@example.com", "sips:alice@example.com", True),
        ("sip:alice@example.com", "sip:alice@example.com:5061;transport=tls", True),
        ("sip:alice@example.com", "Alice <sip:alice@example.com>;tag=1", True),
        ("sip:al%69ce@example.com", "sip:alice@example.com", True),
        ("sip:alice@example.com", "sip:Alice@example.com", False),  # user case-sensitive
        ("sip:alice@example.com", "sip:alice@example.org", False),
        ("sip:alice@example.com", "sip:bob@example.com", False),
        ("tel:+15551234", "tel:+15551234", True),
        ("tel:+15551234", "sip:+15551234@example.com", False),
    ],
)
def test_identity_one(one: str, watcher: str, expected: bool) -> None:
    assert matches(f'<cr:identity><cr:one id="{one}"/></cr:identity>', watcher) is expected


def test_identity_any_child_is_enough() -> None:
    identity = (
        '<cr:identity><cr:one id="sip:alice@example.com"/>'
        '<cr:one id="sip:bob@example.org"/></cr:identity>'
    )
    assert matches(identity, "sip:bob@example.org")
    assert matches(identity, "sip:alice@example.com")
    assert not matches(identity, "sip:carol@example.com")


def test_identity_never_matches_an_anonymous_watcher() -> None:
    assert not matches('<cr:identity><cr:one id="sip:a@example.com"/></cr:identity>', None)
    assert not matches("<cr:identity><cr:many/></cr:identity>", None)


def test_many_without_domain_is_every_authenticated_watcher() -> None:
    assert matches("<cr:identity><cr:many/></cr:identity>", "sip:anyone@anywhere.example")
    assert matches("<cr:identity><cr:many/></cr:identity>", "tel:+15551234")


def test_many_with_domain() -> None:
    many = '<cr:identity><cr:many domain="Example.com"/></cr:identity>'
    assert matches(many, "sip:bob@example.com")
    assert matches(many, "sip:bob@EXAMPLE.COM")
    assert not matches(many, "sip:bob@example.org")
    assert not matches(many, "sip:bob@sub.example.com")
    assert not matches(many, "tel:+15551234")


def test_many_except_id_and_except_domain() -> None:
    many = (
        "<cr:identity><cr:many>"
        '<cr:except id="sip:mallory@example.com"/><cr:except domain="spam.example"/>'
        "</cr:many></cr:identity>"
    )
    assert matches(many, "sip:alice@example.com")
    assert not matches(many, "sip:mallory@example.com")
    assert not matches(many, "mallory@EXAMPLE.com")
    assert not matches(many, "sip:anyone@spam.example")


def test_many_domain_with_except_id() -> None:
    many = (
        '<cr:identity><cr:many domain="example.com">'
        '<cr:except id="sip:boss@example.com"/></cr:many></cr:identity>'
    )
    assert matches(many, "sip:alice@example.com")
    assert not matches(many, "sip:boss@example.com")
    assert not matches(many, "sip:alice@example.org")


def test_identity_key() -> None:
    assert identity_key("sip:Alice@Example.COM:5060;transport=udp?x=y") == "Alice@example.com"
    assert identity_key("example.com") == "example.com"
    assert identity_key("TEL:+1") == "tel:+1"
    assert identity_key("sip:") is None


# -- sphere -----------------------------------------------------------------------------


def test_sphere_matches_the_current_sphere() -> None:
    sphere = '<cr:sphere value="work"/>'
    assert matches(sphere, "sip:a@example.com", sphere="work")
    assert not matches(sphere, "sip:a@example.com", sphere="home")


def test_sphere_unknown_never_matches() -> None:
    assert not matches('<cr:sphere value="work"/>', "sip:a@example.com", sphere=None)


def test_sphere_value_is_a_list() -> None:
    sphere = '<cr:sphere value="work  bowling"/>'
    assert matches(sphere, "sip:a@example.com", sphere="bowling")
    assert matches(sphere, "sip:a@example.com", sphere="work")
    assert not matches(sphere, "sip:a@example.com", sphere="home")


# -- validity ---------------------------------------------------------------------------

VALIDITY = (
    "<cr:validity>"
    "<cr:from>2024-03-01T08:00:00Z</cr:from><cr:until>2024-03-01T17:00:00Z</cr:until>"
    "<cr:from>2024-03-02T10:00:00+02:00</cr:from><cr:until>2024-03-02T12:00:00+02:00</cr:until>"
    "</cr:validity>"
)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2024, 3, 1, 12, 0, tzinfo=UTC), True),
        (datetime(2024, 3, 1, 8, 0, tzinfo=UTC), True),  # from is inclusive
        (datetime(2024, 3, 1, 17, 0, tzinfo=UTC), False),  # until is exclusive
        (datetime(2024, 3, 1, 7, 59, 59, tzinfo=UTC), False),
        (datetime(2024, 3, 2, 8, 30, tzinfo=UTC), True),  # second interval, in +02:00
        (datetime(2024, 3, 2, 10, 30, tzinfo=timezone(timedelta(hours=2))), True),
        (datetime(2024, 3, 2, 11, 0, tzinfo=UTC), False),
    ],
)
def test_validity(now: datetime, expected: bool) -> None:
    assert matches(VALIDITY, "sip:a@example.com", now=now) is expected


def test_validity_without_time_zone_is_utc() -> None:
    validity = (
        "<cr:validity><cr:from>2024-03-01T11:00:00</cr:from>"
        "<cr:until>2024-03-01T13:00:00</cr:until></cr:validity>"
    )
    assert matches(validity, "sip:a@example.com")
    assert not matches(validity, "sip:a@example.com", now=NOW + timedelta(hours=2))


def test_now_must_carry_a_time_zone() -> None:
    with pytest.raises(ValueError, match="time zone"):
        decide(ruleset(rule("r")), "sip:a@example.com", now=datetime(2024, 3, 1))


# -- conditions together ------------------------------------------------------------------


def test_empty_or_absent_conditions_match_everyone() -> None:
    for conditions in ("", None):
        document = ruleset(rule("r", conditions))
        assert decide(document, "sip:a@example.com").sub_handling == "allow"
        assert decide(document, None).sub_handling == "allow"


def test_all_conditions_must_hold() -> None:
    conditions = (
        '<cr:identity><cr:one id="sip:a@example.com"/></cr:identity><cr:sphere value="work"/>'
    )
    assert matches(conditions, "sip:a@example.com", sphere="work")
    assert not matches(conditions, "sip:a@example.com", sphere="home")
    assert not matches(conditions, "sip:b@example.com", sphere="work")
    assert not matches(conditions + VALIDITY, "sip:a@example.com", "work", NOW + timedelta(1))


def test_an_unknown_condition_makes_the_rule_not_match() -> None:
    conditions = '<x:weather xmlns:x="urn:example:weather">sunny</x:weather>'
    assert not matches(conditions, "sip:a@example.com")


# -- combining ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["block", "allow"], "allow"),
        (["allow", "confirm"], "allow"),
        (["block", "confirm"], "confirm"),
        (["polite-block", "confirm"], "polite-block"),
        (["block", "polite-block"], "polite-block"),
        (["block"], "block"),
    ],
)
def test_sub_handling_takes_the_most_permissive(values: list[str], expected: str) -> None:
    document = ruleset(*(rule(f"r{i}", sub=value) for i, value in enumerate(values)))
    decision = decide(document, "sip:a@example.com")
    assert decision.sub_handling == expected
    assert decision.matched == tuple(f"r{i}" for i in range(len(values)))


def test_only_matching_rules_are_combined() -> None:
    document = ruleset(
        rule("everyone", sub="confirm"),
        rule("friend", '<cr:identity><cr:one id="sip:f@example.com"/></cr:identity>'),
        rule("blocked", '<cr:identity><cr:one id="sip:m@example.com"/></cr:identity>', "block"),
    )
    assert decide(document, "sip:f@example.com").sub_handling == "allow"
    assert decide(document, "sip:x@example.com").sub_handling == "confirm"
    # Block is the lowest value: a broader rule that allows more wins (RFC 4745 section 10).
    assert decide(document, "sip:m@example.com").sub_handling == "confirm"


def test_transformations_are_unioned_and_booleans_ored() -> None:
    document = ruleset(
        rule(
            "one",
            transforms=(
                "<pr:provide-services><pr:occurrence-id>t1</pr:occurrence-id>"
                "<pr:class>work</pr:class></pr:provide-services>"
                "<pr:provide-mood>true</pr:provide-mood>"
                "<pr:provide-activities>false</pr:provide-activities>"
                "<pr:provide-user-input>thresholds</pr:provide-user-input>"
                '<pr:provide-unknown-attribute ns="urn:a" name="x">true'
                "</pr:provide-unknown-attribute>"
            ),
        ),
        rule(
            "two",
            sub="confirm",
            transforms=(
                "<pr:provide-services><pr:service-uri-scheme>SIP</pr:service-uri-scheme>"
                "<pr:service-uri>sip:a@example.com</pr:service-uri></pr:provide-services>"
                "<pr:provide-devices><pr:deviceID>urn:uuid:1</pr:deviceID></pr:provide-devices>"
                "<pr:provide-mood>false</pr:provide-mood>"
                "<pr:provide-activities>true</pr:provide-activities>"
                "<pr:provide-user-input>bare</pr:provide-user-input>"
                '<pr:provide-unknown-attribute ns="urn:b" name="y">true'
                "</pr:provide-unknown-attribute>"
                '<pr:provide-unknown-attribute ns="urn:a" name="z">false'
                "</pr:provide-unknown-attribute>"
            ),
        ),
    )
    decision = decide(document, "sip:w@example.com")
    assert decision.sub_handling == "allow"
    t = decision.transformations
    assert t.services == ComponentGrant(
        occurrence_ids=frozenset({"t1"}),
        classes=frozenset({"work"}),
        service_uris=frozenset({"sip:a@example.com"}),
        service_uri_schemes=frozenset({"sip"}),
    )
    assert t.devices == ComponentGrant(device_ids=frozenset({"urn:uuid:1"}))
    assert t.persons == ComponentGrant()
    assert t.attributes == {"mood", "activities"}
    assert t.user_input is UserInputLevel.THRESHOLDS
    assert t.unknown_attributes == {("urn:a", "x"), ("urn:b", "y")}


def test_all_wins_in_a_union() -> None:
    document = ruleset(
        rule("a", transforms="<pr:provide-persons><pr:all-persons/></pr:provide-persons>"),
        rule("b", transforms="<pr:provide-all-attributes/>"),
    )
    t = decide(document, "sip:w@example.com").transformations
    assert t.persons.all
    assert t.all_attributes
    assert t.grants_attribute("privacy")
    assert t.user_input_level() is UserInputLevel.FULL
    assert t.grants_unknown("urn:anything", "at-all")


def test_no_matching_rule_grants_nothing() -> None:
    document = ruleset(rule("r", '<cr:identity><cr:one id="sip:a@example.com"/></cr:identity>'))
    decision = decide(document, "sip:b@example.com")
    assert decision.sub_handling is None
    assert decision.transformations == Transformations()
    assert not decision.transformations.declared
    assert decide(ruleset(), "sip:b@example.com").sub_handling is None


def test_matching_rules_without_sub_handling_leave_it_open() -> None:
    document = ruleset(rule("r", sub=None, transforms="<pr:provide-mood>true</pr:provide-mood>"))
    decision = decide(document, "sip:b@example.com")
    assert decision.sub_handling is None
    assert decision.matched == ("r",)
    assert decision.transformations.attributes == {"mood"}


def test_declared_is_set_by_any_known_transformation_even_a_false_one() -> None:
    document = ruleset(rule("r", transforms="<pr:provide-mood>false</pr:provide-mood>"))
    t = decide(document, "sip:b@example.com").transformations
    assert t.declared
    assert not t.attributes
    foreign = ruleset(rule("r", transforms='<x:provide-x xmlns:x="urn:x">true</x:provide-x>'))
    assert not decide(foreign, "sip:b@example.com").transformations.declared


def test_boolean_lexical_forms_and_old_occurence_id_spelling() -> None:
    document = ruleset(
        rule(
            "r",
            transforms=(
                "<pr:provide-mood> 1 </pr:provide-mood><pr:provide-sphere>0</pr:provide-sphere>"
                "<pr:provide-persons><pr:occurence-id>p1</pr:occurence-id></pr:provide-persons>"
            ),
        )
    )
    t = decide(document, "sip:b@example.com").transformations
    assert t.attributes == {"mood"}
    assert t.persons.occurrence_ids == {"p1"}


# -- bad documents --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"not xml", "well-formed"),
        (b"<ruleset/>", "ruleset"),
        (f'<x:ruleset xmlns:x="{PR}"/>'.encode(), "ruleset"),
        (ruleset("<cr:rule/>"), "without id"),
        (ruleset(rule("a"), rule("a")), "Duplicate"),
        (ruleset("<cr:other/>"), "Unexpected"),
        (ruleset('<cr:rule id="a"><cr:conditions/><cr:conditions/></cr:rule>'), "Unexpected"),
        (ruleset(rule("a", sub="maybe")), "sub-handling"),
        (ruleset(rule("a", transforms="<pr:provide-mood>yes</pr:provide-mood>")), "boolean"),
        (
            ruleset(rule("a", transforms="<pr:provide-user-input>some</pr:provide-user-input>")),
            "user-input",
        ),
        (
            ruleset(
                rule(
                    "a",
                    transforms="<pr:provide-unknown-attribute>true</pr:provide-unknown-attribute>",
                )
            ),
            "ns and name",
        ),
        (ruleset(rule("a", "<cr:sphere/>")), "sphere"),
        (ruleset(rule("a", '<cr:identity><cr:one id=""/></cr:identity>')), "usable id"),
        (
            ruleset(
                rule("a", "<cr:validity><cr:from>2024-03-01T08:00:00Z</cr:from></cr:validity>")
            ),
            "pairs",
        ),
        (
            ruleset(
                rule(
                    "a",
                    "<cr:validity><cr:from>yesterday</cr:from>"
                    "<cr:until>2024-03-01T08:00:00Z</cr:until></cr:validity>",
                )
            ),
            "dateTime",
        ),
    ],
)
def test_bad_documents_raise_rules_error(document: bytes, reason: str) -> None:
    with pytest.raises(RulesError, match=reason):
        parse_rules(document)


def test_rules_error_is_a_value_error() -> None:
    assert issubclass(RulesError, ValueError)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy">
 <cr:rule id="&lol9;"/>
</cr:ruleset>
"""


def test_xml_bomb_is_refused() -> None:
    with pytest.raises(RulesError, match="DTD"):
        parse_rules(BILLION_LAUGHS)


def test_dtd_hidden_by_utf16_is_refused() -> None:
    # The byte check cannot see it; the parsed document's DTD is refused instead.
    harmless = b"<!DOCTYPE cr:ruleset [<!ELEMENT cr:ruleset ANY>]>" + ruleset(rule("r"))
    with pytest.raises(RulesError, match="DTD"):
        parse_rules(harmless.decode().encode("utf-16"))
    bomb = BILLION_LAUGHS.replace(b'<?xml version="1.0"?>', b"").decode().encode("utf-16")
    with pytest.raises(RulesError):
        parse_rules(bomb)


def test_external_entity_is_refused() -> None:
    document = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy">'
        b'<cr:rule id="&x;"/></cr:ruleset>'
    )
    with pytest.raises(RulesError):
        parse_rules(document)


def test_oversized_and_overly_deep_documents_are_refused() -> None:
    huge = ruleset(*(rule(f"r{i}", "<cr:identity><cr:many/></cr:identity>") for i in range(3000)))
    with pytest.raises(RulesError, match="too large"):
        parse_rules(huge)
    deep = ruleset(
        rule("r", "<cr:identity>" + "<cr:many>" * 40 + "</cr:many>" * 40 + "</cr:identity>")
    )
    with pytest.raises(RulesError, match="deeply"):
        parse_rules(deep)


@pytest.mark.parametrize(
    "name",
    [
        "activities", "class", "deviceID", "mood", "note", "place-is", "place-type",
        "privacy", "relationship", "sphere", "status-icon", "time-offset",
    ],
)  # fmt: skip
def test_each_boolean_transformation_is_read_from_the_document(name: str) -> None:
    granted = decide(
        ruleset(rule("r", transforms=f"<pr:provide-{name}>true</pr:provide-{name}>")), None
    ).transformations
    assert granted.attributes == frozenset({name}) and granted.declared
    refused = decide(
        ruleset(rule("r", transforms=f"<pr:provide-{name}>false</pr:provide-{name}>")), None
    ).transformations
    assert refused.attributes == frozenset() and refused.declared


def test_all_attributes_is_read_from_the_document() -> None:
    granted = decide(
        ruleset(rule("r", transforms="<pr:provide-all-attributes/>")), None
    ).transformations
    assert granted.all_attributes and granted.grants_attribute("mood")
