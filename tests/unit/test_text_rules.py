"""Which header text the edge refuses (presence.sip.text_rules), pure."""

from __future__ import annotations

import pytest

from presence.sip.text_rules import header_defect


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("Call-ID", "a\x00b", "control"),
        ("Subject", "a\x1bb", "control"),
        ("Call-ID", "café", "non_ascii"),
        ("Authorization", 'Digest username="zoë"', "non_ascii"),
        ("From", "Zoë <sip:z@example.com>", "non_ascii"),
        ("From", '"Zoë <sip:z@example.com>', "brackets"),
        ("Expires", "٣", "non_ascii"),
        ("Expires", "-1", "digits"),
        ("Expires", "4294967296", "digits"),
        ("Record-Route", "<sip:p.example.com;lr", "brackets"),
        ("Route", "sip:p.example.com;lr", "brackets"),
        ("Contact", "<sip:a@b>>", "brackets"),
    ],
)
def test_refused(name: str, value: str, kind: str) -> None:
    defect = header_defect(name, value)
    assert defect is not None and defect.kind == kind


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("From", '"Zoë Ünïcode" <sip:z@example.com>;tag=1'),
        ("Subject", "Grüße\tund so"),
        ("X-Anything", "ünïcode"),
        ("Expires", "4294967295"),
        ("Contact", "*"),
        ("Record-Route", '<sip:p1.example.com;lr>, "P2" <sip:p2.example.com;lr>'),
    ],
)
def test_allowed(name: str, value: str) -> None:
    assert header_defect(name, value) is None
