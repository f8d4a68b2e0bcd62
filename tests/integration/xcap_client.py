"""An XCAP client for the integration tests: one HTTP request on a real socket to the
store's XCAP server, with the user's own credentials unless told otherwise."""

from __future__ import annotations

import base64
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from lxml import etree

from presence.xcap.credentials import password_for

from .conftest import XCAP_SECRET, Stack

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
RL = "urn:ietf:params:xml:ns:resource-lists"
XCAP_ERROR_NS = "urn:ietf:params:xml:ns:xcap-error"
EL = "application/xcap-el+xml"
ATT = "application/xcap-att+xml"


@dataclass
class XcapAnswer:
    status: int
    body: bytes
    headers: dict[str, str]  # lower-case names

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    def error(self) -> etree._Element:
        """The condition element of an application/xcap-error+xml body (RFC 4825 §11)."""
        assert self.content_type == "application/xcap-error+xml", (self.status, self.body)
        root = etree.fromstring(self.body)
        assert root.tag == f"{{{XCAP_ERROR_NS}}}xcap-error" and len(root) == 1
        return root[0]

    def condition(self) -> str:
        return etree.QName(self.error()).localname


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def owner_of(xui: str) -> str:
    return basic(xui, password_for(XCAP_SECRET, xui))


def document_path(auid: str, xui: str) -> str:
    return f"/xcap-root/{auid}/users/{urllib.parse.quote(xui, safe='')}/index"


def node_path(auid: str, xui: str, selector: str, bindings: str = "") -> str:
    """The URI path of a node: the selector percent-encoded as RFC 4825 §6 asks
    (quotes, brackets), the namespace bindings as the query."""
    path = document_path(auid, xui) + "/~~/" + urllib.parse.quote(selector, safe="/:@*")
    return path + ("?" + urllib.parse.quote(bindings, safe="=()") if bindings else "")


def xcap(
    stack: Stack,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = None,
    *,
    authorization: str | None = None,
    **headers: str,
) -> XcapAnswer:
    """One request; headers with _ for - (If_Match)."""
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if authorization is not None:
        sent["Authorization"] = authorization
    if content_type is not None:
        sent["Content-Type"] = content_type
    request = urllib.request.Request(
        stack.http("presence-store", path), data=body, method=method, headers=sent
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer_headers = {k.lower(): v for k, v in response.headers.items()}
            return XcapAnswer(response.status, response.read(), answer_headers)
    except urllib.error.HTTPError as error:
        answer_headers = {k.lower(): v for k, v in error.headers.items()}
        return XcapAnswer(error.code, error.read(), answer_headers)


class User:
    """One user's view of one of their documents: requests with their credentials."""

    def __init__(self, stack: Stack, auid: str, xui: str, bindings: str = "") -> None:
        self.stack, self.auid, self.xui, self.bindings = stack, auid, xui, bindings
        self.authorization = owner_of(xui)

    def document(
        self, method: str, body: bytes | None = None, media: str | None = None, **h: str
    ) -> XcapAnswer:
        path = document_path(self.auid, self.xui)
        return xcap(self.stack, method, path, body, media, authorization=self.authorization, **h)

    def node(
        self,
        method: str,
        selector: str,
        body: bytes | None = None,
        media: str | None = None,
        **h: str,
    ) -> XcapAnswer:
        path = node_path(self.auid, self.xui, selector, self.bindings)
        return xcap(self.stack, method, path, body, media, authorization=self.authorization, **h)


def canonical(document: bytes) -> bytes:
    """The document in canonical XML (C14N 2.0) without insignificant whitespace, to
    compare documents that differ only in how they are written."""
    parser = etree.XMLParser(remove_blank_text=True)
    return etree.tostring(etree.fromstring(document, parser), method="c14n2")
