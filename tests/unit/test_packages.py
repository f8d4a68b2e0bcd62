"""The event package declarations (presence.packages.registry) and PRESENCE_EVENT_PACKAGES."""

import pytest

from presence.packages.registry import (
    PACKAGES,
    Aggregation,
    Authorization,
    EventPackage,
    accepted_types,
    allow_events,
    enabled,
)
from presence.pidf.aggregation import Publication, empty_document
from presence.settings import SettingsError, load

ENTITY = "sip:alice@example.com"


def pidf(basic: str) -> str:
    return (
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{ENTITY}">'
        f'<tuple id="t1"><status><basic>{basic}</basic></status></tuple></presence>'
    )


def test_every_package_is_declared_once_under_its_name() -> None:
    assert all(name == package.name for name, package in PACKAGES.items())
    assert {"presence", "presence.winfo"} <= set(PACKAGES)


def test_presence_merges_publications_and_pres_rules_decide() -> None:
    presence_package = PACKAGES["presence"]
    assert presence_package.publish_types == ("application/pidf+xml",)
    assert presence_package.aggregation is Aggregation.MERGE
    assert presence_package.authorization is Authorization.PRES_RULES
    assert presence_package.empty_state(ENTITY, load({}).document_policy) == empty_document(ENTITY)
    both = presence_package.state(
        ENTITY, [Publication("a", 1, pidf("open")), Publication("b", 2, pidf("closed"))], [],
        load({}).document_policy,
    )  # fmt: skip
    assert both.count(b"<tuple") == 1  # one tuple id: the newest copy wins


def test_watcher_info_is_not_publishable_and_only_for_the_owner() -> None:
    winfo = PACKAGES["presence.winfo"]
    assert not winfo.publishable
    assert winfo.watcher_info_of == "presence"
    assert winfo.authorization is Authorization.OWNER
    with pytest.raises(ValueError):
        winfo.check_body(b"<x/>")


def test_newest_publication_wins_when_the_package_does_not_aggregate() -> None:
    newest = EventPackage(
        "test",
        "text/plain",
        Aggregation.NEWEST,
        Authorization.OWNER,
        lambda entity, policy: b"none",
        publish_types=("text/plain",),
        document=lambda entity, live, closed, policy: b"|".join(str(p.body).encode() for p in live),
    )
    publications = [
        Publication("a", 5, "five"),
        Publication("b", 9, "nine"),
        Publication("c", 7, "seven"),
    ]
    assert newest.state(ENTITY, publications, [], load({}).document_policy) == b"nine"


def test_accept_allows_the_body_type_its_wildcards_or_nothing() -> None:
    presence_package = PACKAGES["presence"]
    assert presence_package.accepts([])
    assert presence_package.accepts(["application/pidf+xml"])
    assert presence_package.accepts(["application/*"])
    assert presence_package.accepts(["*/*"])
    assert not presence_package.accepts(["application/xpidf+xml"])


def test_package_expiry_is_bounded_by_the_settings() -> None:
    expiry = load({"PRESENCE_MAX_EXPIRES": "1800", "PRESENCE_DEFAULT_EXPIRES": "900"}).expiry_policy
    presence_package = PACKAGES["presence"]
    assert presence_package.expiry_default(expiry) == 900
    assert presence_package.expiry_max(expiry) == 1800
    short = EventPackage(
        "test", "text/plain", Aggregation.NEWEST, Authorization.OWNER,
        lambda entity, policy: b"", default_expires=3600, max_expires=600,
    )  # fmt: skip
    assert short.expiry_max(expiry) == 600
    assert short.expiry_default(expiry) == 600


def test_event_packages_setting_turns_packages_off() -> None:
    names = load({"PRESENCE_EVENT_PACKAGES": "presence"}).event_package_names
    assert list(enabled(names)) == ["presence"]
    assert allow_events(names) == "presence"
    assert accepted_types(names) == "application/pidf+xml"
    assert list(enabled(load({}).event_package_names)) == list(PACKAGES)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("presence,conference", "unknown event package 'conference'"),
        ("presence.winfo", "presence.winfo needs presence"),
        (" , ", "at least one"),
    ],
)
def test_event_packages_setting_is_checked(value: str, problem: str) -> None:
    with pytest.raises(SettingsError, match="PRESENCE_EVENT_PACKAGES") as raised:
        load({"PRESENCE_EVENT_PACKAGES": value})
    assert problem in str(raised.value)
