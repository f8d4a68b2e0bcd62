"""Dialog state (RFC 4235): checking published documents and aggregating them."""

import pytest
from lxml import etree

from presence.packages.dialoginfo import (
    DialogInfoError,
    aggregate_dialogs,
    dialog_ids,
    dialog_states,
    empty_dialog_info,
    parse_dialog_info,
    with_version,
)
from presence.packages.registry import PACKAGES, Aggregation, Authorization
from presence.pidf.aggregation import Publication
from presence.rules import Decision
from presence.rules.authorization import Verdict
from presence.settings import load

ENTITY = "sip:alice@example.com"
NS = "urn:ietf:params:xml:ns:dialog-info"


def document(*dialogs: tuple[str, str], entity: str = ENTITY, version: str = "3") -> bytes:
    body = "".join(
        f'<dialog id="{ident}" call-id="c-{ident}" local-tag="l{ident}" direction="initiator">'
        f"<state>{state}</state><duration>10</duration></dialog>"
        for ident, state in dialogs
    )
    return (
        f'<?xml version="1.0"?><dialog-info xmlns="{NS}" version="{version}" state="full" '
        f'entity="{entity}">{body}</dialog-info>'
    ).encode()


def pub(body: bytes, received: int, etag: str = "e") -> Publication:
    return Publication(etag, received, body.decode())


def test_the_rfc_example_passes() -> None:
    # RFC 4235 §5.2, first example (trimmed of whitespace).
    body = (
        b'<?xml version="1.0"?>'
        b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" '
        b'entity="sip:alice@example.com">'
        b'<dialog id="as7d900as8" call-id="a84b4c76e66710" local-tag="1928301774" '
        b'direction="initiator"><state>trying</state></dialog></dialog-info>'
    )
    root = parse_dialog_info(body)
    assert dialog_ids(root) == frozenset({"dialog:as7d900as8"})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<dialog-info", "not well-formed"),
        (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"/>', "not a dialog-info"),
        (f'<dialog-info xmlns="{NS}" version="0" state="full"/>'.encode(), "entity missing"),
        (
            f'<dialog-info xmlns="{NS}" version="0" state="full" entity="alice"/>'.encode(),
            "entity missing or not a URI",
        ),
        (
            f'<dialog-info xmlns="{NS}" state="full" entity="sip:a@b"/>'.encode(),
            "version missing or not a number",
        ),
        (
            f'<dialog-info xmlns="{NS}" version="two" state="full" entity="sip:a@b"/>'.encode(),
            "version missing or not a number",
        ),
        (
            f'<dialog-info xmlns="{NS}" version="-1" state="full" entity="sip:a@b"/>'.encode(),
            "version missing or not a number",
        ),
        (
            f'<dialog-info xmlns="{NS}" version="1" state="some" entity="sip:a@b"/>'.encode(),
            "state must be full or partial",
        ),
        (document(("", "early")), "dialog without id"),
        (document(("d1", "ringing")), "dialog state must be one of"),
        (
            b"<dialog-info xmlns='x' version='1' state='full' entity='sip:a@b'/>",
            "not a dialog-info",
        ),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', "DTDs are not allowed"),
    ],
)
def test_a_bad_document_says_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(DialogInfoError, match=reason):
        parse_dialog_info(body)


def test_nobody_publishing_is_an_idle_line() -> None:
    body = empty_dialog_info(ENTITY)
    root = etree.fromstring(body)
    assert root.tag == f"{{{NS}}}dialog-info"
    assert (root.get("version"), root.get("state"), root.get("entity")) == ("0", "full", ENTITY)
    assert len(root) == 0
    assert aggregate_dialogs(ENTITY, []) == body
    parse_dialog_info(body)  # what we send passes our own checks


def test_publishers_dialogs_are_united_by_id_newest_copy_wins() -> None:
    pbx = pub(document(("call-1", "early"), ("call-2", "confirmed")), 10)
    phone = pub(document(("call-1", "confirmed"), ("call-3", "trying")), 20)
    body = aggregate_dialogs(ENTITY, [pbx, phone])
    assert dialog_states(body) == {"call-1": "confirmed", "call-3": "trying", "call-2": "confirmed"}
    root = etree.fromstring(body)
    assert (root.get("entity"), root.get("state"), root.get("version")) == (ENTITY, "full", "0")
    # Order-independent input: the same publications in another order, the same bytes.
    assert aggregate_dialogs(ENTITY, [phone, pbx]) == body


def test_a_closed_publication_shows_its_dialogs_terminated_once() -> None:
    live = pub(document(("call-1", "confirmed")), 10)
    gone = pub(document(("call-1", "early"), ("call-2", "confirmed")), 20)
    body = aggregate_dialogs(ENTITY, [live], closed=[gone])
    assert dialog_states(body) == {"call-1": "confirmed", "call-2": "terminated"}
    ended = etree.fromstring(body).find(f"{{{NS}}}dialog[@id='call-2']")
    assert ended is not None
    assert dict(ended.attrib) == {
        "id": "call-2", "call-id": "c-call-2", "local-tag": "lcall-2", "direction": "initiator"
    }  # fmt: skip
    assert [child.tag for child in ended] == [f"{{{NS}}}state"]  # the duration is dropped
    # Without the closed notice (the next change), the dialog is gone.
    assert dialog_states(aggregate_dialogs(ENTITY, [live])) == {"call-1": "confirmed"}


def test_a_stored_body_that_does_not_parse_is_skipped() -> None:
    good = pub(document(("call-1", "early")), 10)
    bad = Publication("x", 20, "<dialog-info")
    assert aggregate_dialogs(ENTITY, [good, bad], closed=[bad]) == aggregate_dialogs(ENTITY, [good])


def test_extension_elements_keep_their_namespace() -> None:
    body = (
        f'<dialog-info xmlns="{NS}" xmlns:x="urn:example:x" version="1" state="full" '
        f'entity="{ENTITY}"><dialog id="d"><state>early</state><x:line>7</x:line></dialog>'
        f"</dialog-info>"
    ).encode()
    merged = aggregate_dialogs(ENTITY, [pub(body, 1)])
    assert etree.fromstring(merged).findtext(".//{urn:example:x}line") == "7"


def test_each_subscription_gets_its_own_version() -> None:
    body = aggregate_dialogs(ENTITY, [pub(document(("d", "early")), 1)])
    stamped = with_version(body, 41)
    assert etree.fromstring(stamped).get("version") == "41"
    assert dialog_states(stamped) == dialog_states(body)
    assert etree.fromstring(with_version(empty_dialog_info(ENTITY), 7)).get("version") == "7"


def test_the_dialog_package_declaration() -> None:
    dialog = PACKAGES["dialog"]
    assert dialog.aggregation is Aggregation.MERGE
    assert dialog.authorization is Authorization.PRES_RULES
    assert dialog.publish_types == ("application/dialog-info+xml",)
    assert dialog.body_type == "application/dialog-info+xml"
    policy = load({}).document_policy
    full = dialog.state(ENTITY, [pub(document(("d", "early")), 1)], [], policy)
    allowed = Verdict("active", decision=Decision(sub_handling="allow"))
    polite = Verdict("active", decision=Decision(sub_handling="polite-block"))
    assert dialog.as_seen_by(full, ENTITY, allowed, policy) == full
    assert dialog.as_seen_by(full, ENTITY, polite, policy) == empty_dialog_info(ENTITY)
    assert dialog.empty_state(ENTITY, policy) == empty_dialog_info(ENTITY)
    assert dialog.versioned is not None
    assert etree.fromstring(dialog.versioned(full, 5)).get("version") == "5"
