"""The XCAP server (RFC 4825) on presence-store: each user's pres-rules (RFC 5025 §9)
and resource-lists (RFC 4826 §3) documents, and the global xcap-caps document.

    PUT    /xcap-root/<auid>/users/{xui}/index   store or replace (201 / 200)
    GET    /xcap-root/<auid>/users/{xui}/index   the document (404 when none)
    DELETE /xcap-root/<auid>/users/{xui}/index   remove it
    GET|PUT|DELETE .../index/~~/<node selector>  one element or attribute; GET also
                                                  namespace::* (presence.xcap.selectors)
    GET    /xcap-root/xcap-caps/global/index     what the server supports (§12)

A node selector outside the grammar is a 404, one with a prefix no xmlns() of the
query binds a 400 (RFC 4825 §8); an attribute's body is an XML AttValue with its
quotes, both ways (§7.7, §7.9).

auid is pres-rules or resource-lists (presence.xcap.usages). xui is the user's SIP
URI ("sip:alice@example.com", percent-encoded in the path). A change that would
leave a document that is not UTF-8, not well-formed or not valid for its usage is
refused with 409 and an XCAP error body (RFC 4825 §11, presence.xcap.errors), and
the stored one stays. Every pres-rules change re-judges the presentity's
subscriptions at once: those now allowed become active, those no longer allowed
end (reason deactivated, or rejected when blocked), and every watcher gets a
NOTIFY with what it may now see. GET, PUT and DELETE honour If-Match and
If-None-Match (RFC 9110 §13: 412, and 304 for a GET that If-None-Match matches);
the ETag is the document's, also for its elements and attributes (RFC 4825 §7.11).

Writes are limited per user: beyond PRESENCE_XCAP_WRITES_PER_MINUTE PUTs and
DELETEs in a minute (of all the user's documents), 429 with Retry-After (a Redis
counter, shared by the store replicas). A body is read with its limit
(MAX_DOCUMENT_BYTES) enforced while it arrives: 413 as soon as it is passed, or at
once when Content-Length says so.

Every request for a user's document is authenticated (presence.xcap.credentials):
HTTP Basic or Bearer with the user's XCAP password, derived from
PRESENCE_XCAP_SECRET; a user reads and changes only their own documents (401
without valid credentials, 403 with someone else's). Credentials that cannot be
read (not ASCII, bad base64, no colon) are no credentials: 401. Without a secret
XCAP answers 503; PRESENCE_XCAP_AUTH=none opens it to anyone, for development.
xcap-caps is the same for everyone and is read without credentials.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from redis.exceptions import RedisError

from presence.bus import events
from presence.runtime import metrics
from presence.runtime.http_limits import storable_address
from presence.runtime.locks import LockTimeout
from presence.runtime.logs import correlated, new_correlation_id
from presence.settings import Settings
from presence.sip.grammar import parse_uri
from presence.sip.message import SipParseError
from presence.tables.xcap import load_document, store_document
from presence.xcap import selectors
from presence.xcap.credentials import REALM, authorizes, parse_authorization
from presence.xcap.errors import XCAP_ERROR, XcapConflict, error_body, node_selector_uri
from presence.xcap.usages import (
    MAX_DOCUMENT_BYTES,
    USER_USAGES,
    XCAP_CAPS_DOCUMENT,
    XCAP_CAPS_USAGE,
    ApplicationUsage,
    check_document,
)
from presence_store.context import Context, StoreContext
from presence_store.fencing import locked_write
from presence_store.rejudge import rejudge

log = logging.getLogger(__name__)

_CAPS_PATH = "/xcap-root/xcap-caps/global/index"
_NO_PRESENTITY = (
    "xui must be a SIP URI with a user part of at most 64 characters and a domain of at "
    "most 128, without control characters"
)


def _unavailable(what: str) -> Response:
    """503 while Redis (the write counter, the presentity locks) cannot be used."""
    return Response(f"XCAP writes are unavailable for now: {what}", 503, {"Retry-After": "5"})


def _etag(document: str) -> str:
    return '"' + hashlib.sha256(document.encode()).hexdigest()[:32] + '"'


def _tags(header: str, *, weak: bool) -> set[str]:
    """The entity tags of an If-Match (strong comparison: a weak tag matches nothing,
    RFC 9110 §13.1.1) or If-None-Match (weak comparison, §13.1.2) header."""
    tags = {tag.strip() for tag in header.split(",")}
    return {tag.removeprefix("W/") for tag in tags} if weak else tags


class PreconditionFailed(Exception):
    pass


class NotFound(Exception):
    pass


# From the stored document (None: there is none) to the new one (None: delete it),
# and whether the change creates the document, element or attribute (201) or not (200).
Derive = Callable[[bytes | None], tuple[bytes | None, bool]]


def _check_preconditions(request: Request, current: str | None) -> None:
    """If-Match / If-None-Match of a write (RFC 4825 §7.11, RFC 9110 §13): 412 when
    not met."""
    current_tag = _etag(current) if current is not None else None
    if_match = request.headers.get("if-match")
    if if_match is not None:
        tags = _tags(if_match, weak=False)
        if current_tag is None or ("*" not in tags and current_tag not in tags):
            raise PreconditionFailed
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and current_tag is not None:
        tags = _tags(if_none_match, weak=True)
        if "*" in tags or current_tag in tags:
            raise PreconditionFailed


def _read_precondition(request: Request, tag: str) -> Response | None:
    """If-Match / If-None-Match of a GET of something that exists (RFC 9110 §13.1.1,
    §13.1.2): 412 when If-Match names another tag, 304 when If-None-Match is * or
    names this one; None: answer the GET."""
    if_match = request.headers.get("if-match")
    if if_match is not None and not ({"*", tag} & _tags(if_match, weak=False)):
        return Response(status_code=412, headers={"ETag": tag})
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and {"*", tag} & _tags(if_none_match, weak=True):
        return Response(status_code=304, headers={"ETag": tag})
    return None


# A body over the limit is refused with 413 while it is read (presence.runtime.http_limits).
router = APIRouter(max_body_size=MAX_DOCUMENT_BYTES)


def log_startup_warnings(settings: Settings) -> None:
    if settings.xcap_auth == "none":
        log.warning("XCAP: PRESENCE_XCAP_AUTH=none, anyone may read and change anyone's rules")
    elif not settings.xcap_secret:
        log.warning("XCAP: disabled (503) until PRESENCE_XCAP_SECRET is set")


def refusal(settings: Settings, xui: str | None, request: Request) -> Response | None:
    """Why this request may not touch xui's document (None: the global xcap-caps),
    or None when it may."""
    if settings.xcap_auth == "none":
        return None
    if not settings.xcap_secret:
        return Response("XCAP is disabled: PRESENCE_XCAP_SECRET is not set", 503)
    if xui is None:
        return None
    header = request.headers.get("authorization")
    credentials = parse_authorization(header)
    if credentials is not None and authorizes(credentials, settings.xcap_secret, xui):
        return None
    if (
        credentials is not None
        and credentials.user is not None
        and authorizes(credentials, settings.xcap_secret, credentials.user)
    ):
        metrics.XCAP_AUTH_FAILURES.labels("other_user").inc()
        return Response("these credentials open only their own user's documents", 403)
    reason = "missing" if not header else "unreadable" if credentials is None else "wrong"
    metrics.XCAP_AUTH_FAILURES.labels(reason).inc()
    challenge = f'Basic realm="{REALM}", charset="UTF-8"'
    return Response(status_code=401, headers={"WWW-Authenticate": challenge})


async def throttled(
    context: StoreContext, presentity: tuple[str, str], method: str
) -> Response | None:
    """429 once the presentity's writes this minute are used up (each pres-rules
    write re-judges every watcher), else None."""
    limit = context.settings.xcap_writes_per_minute
    if not limit:
        return None
    key = context.topics.lock_prefix + "xcap-writes:" + "@".join(presentity)
    try:
        hit = await context.xcap_writes.hit(key, 60)
    except RedisError:
        return _unavailable("cannot count writes (Redis unreachable)")
    if not hit.over(limit):
        return None
    metrics.XCAP_RATE_LIMITED.labels(method).inc()
    return Response(
        f"more than {limit} XCAP writes a minute for this user",
        429,
        headers={"Retry-After": str(hit.window_left)},
    )


def presentity_of(xui: str) -> tuple[str, str] | None:
    """(user, domain) of a SIP URI that the tables can hold, else None."""
    try:
        uri = parse_uri(xui)
    except SipParseError:
        return None
    if not uri.user or storable_address(uri.user, uri.host) is not None:
        return None
    return uri.user, uri.host.lower()


def answer_get(
    usage: ApplicationUsage,
    document: str,
    node: selectors.NodeSelector | None,
    request: Request,
) -> Response:
    tag = _etag(document)
    if node is None:
        if (conditional := _read_precondition(request, tag)) is not None:
            return conditional
        return Response(document, media_type=usage.media_type, headers={"ETag": tag})
    found = selectors.get_node(document.encode(), node)
    if found is None:
        return Response(status_code=404)
    if (conditional := _read_precondition(request, tag)) is not None:
        return conditional
    media_type, body = found
    return Response(body, media_type=media_type, headers={"ETag": tag})


def _target(
    context: StoreContext,
    usage: ApplicationUsage,
    xui: str,
    selector: str | None,
    request: Request,
    *,
    writes: bool,
) -> tuple[tuple[str, str], selectors.NodeSelector | None] | Response:
    """The presentity and node a request for a user's document names, or the answer that
    refuses it: credentials, an address the tables cannot hold, a bad selector, and for a
    write a namespace selector (read only)."""
    if (refused := refusal(context.settings, xui, request)) is not None:
        return refused
    presentity = presentity_of(xui)
    if presentity is None:
        return Response(_NO_PRESENTITY, 404)
    node = parse_node(usage, selector, request)
    if isinstance(node, Response):
        return node
    if writes and node is not None and node.namespaces:
        return _only_get("namespace bindings are read only (RFC 4825 §8.2.1)")
    return presentity, node


async def get_user_node(
    context: StoreContext,
    usage: ApplicationUsage,
    xui: str,
    selector: str | None,
    request: Request,
) -> Response:
    target = _target(context, usage, xui, selector, request, writes=False)
    if isinstance(target, Response):
        return target
    presentity, node = target
    document = await load_document(context.pool, context.settings, *presentity, usage.doc_type)
    if document is None:
        return Response(status_code=404)
    return answer_get(usage, document, node, request)


async def put_user_node(
    context: StoreContext,
    usage: ApplicationUsage,
    xui: str,
    selector: str | None,
    request: Request,
) -> Response:
    target = _target(context, usage, xui, selector, request, writes=True)
    if isinstance(target, Response):
        return target
    presentity, node = target
    if node is None:
        expected = usage.media_type
    else:
        expected = selectors.XCAP_EL if node.attribute is None else selectors.XCAP_ATT
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != expected:
        return Response(f"Content-Type must be {expected}", 415)
    body = await request.body()
    if (limited := await throttled(context, presentity, "PUT")) is not None:
        return limited
    try:
        body.decode()
    except UnicodeDecodeError:
        return xcap_error(XcapConflict("not-utf-8", "the body is not UTF-8"), request)
    if node is None:
        return await store(
            context, usage, xui, presentity, request, lambda now: (body, now is None)
        )
    change = selectors.put_element if node.attribute is None else selectors.put_attribute

    def with_node(current: bytes | None) -> tuple[bytes, bool]:
        if current is None:
            raise XcapConflict("no-parent", "the document does not exist", ancestor="")
        try:
            return change(current, node, body)
        except XcapConflict as conflict:
            if conflict.tag == "no-parent":
                conflict.ancestor = selectors.closest_ancestor(current, node)
            raise

    return await store(context, usage, xui, presentity, request, with_node)


async def delete_user_node(
    context: StoreContext,
    usage: ApplicationUsage,
    xui: str,
    selector: str | None,
    request: Request,
) -> Response:
    target = _target(context, usage, xui, selector, request, writes=True)
    if isinstance(target, Response):
        return target
    presentity, node = target
    if (limited := await throttled(context, presentity, "DELETE")) is not None:
        return limited

    def without(current: bytes | None) -> tuple[bytes | None, bool]:
        if current is None:
            raise NotFound
        if node is None:
            return None, False
        changed = selectors.delete_node(current, node)
        if changed is None:
            raise NotFound
        return changed, False

    return await store(context, usage, xui, presentity, request, without)


def parse_node(
    usage: ApplicationUsage, selector: str | None, request: Request
) -> selectors.NodeSelector | Response | None:
    """The node selector as the URI carries it (None: the whole document),
    percent-decoded once (by parse_selector): the path parameter is decoded
    already, and decoding it again would turn a value's "%2541" into "A". A
    selector this server does not understand is a 404 (RFC 4825 §8: "If the URI
    includes extension-selectors that the server doesn't understand, it MUST reject
    the request with a 404"), one with a prefix no xmlns() of the query binds a
    400 (§8), whatever the method and whether or not the document exists."""
    if selector is None:
        return None
    raw_path = request.scope.get("raw_path") or b""
    encoded = raw_path.decode("latin-1").partition("/~~/")[2] or selector
    try:
        return selectors.parse_selector(encoded, request.url.query, usage.default_namespace)
    except selectors.UnboundPrefix as error:
        return Response(str(error), 400)
    except selectors.SelectorError as error:
        return Response(str(error), 404)


def xcap_error(conflict: XcapConflict, request: Request) -> Response:
    """409 with the condition's body; a no-parent names the closest ancestor that
    exists by its HTTP URI (the document's, or the document's with a selector)."""
    ancestor_uri = None
    if conflict.ancestor is not None:
        document_uri = str(request.url.replace(query="")).partition("/~~/")[0]
        ancestor_uri = document_uri
        if conflict.ancestor:
            path = node_selector_uri(conflict.ancestor)
            query = f"?{request.url.query}" if request.url.query else ""
            ancestor_uri = f"{document_uri}/~~/{path}{query}"
    return Response(error_body(conflict, ancestor_uri), 409, media_type=XCAP_ERROR)


async def store(
    context: StoreContext,
    usage: ApplicationUsage,
    xui: str,
    presentity: tuple[str, str],
    request: Request,
    derive: Derive,
) -> Response:
    """Apply a change and answer it: 201 when the document, element or attribute
    is new, 200 when replaced or deleted; RFC 4825 409s when the result would not
    be a well-formed, valid document of its usage."""
    try:
        with correlated(new_correlation_id("xcap")):
            created, document = await change(context, usage, presentity, derive, request)
    except PreconditionFailed:
        return Response(status_code=412)
    except LockTimeout:
        return _unavailable("the user's lock is busy")
    except RedisError:
        return _unavailable("cannot lock the user's document (Redis unreachable)")
    except NotFound:
        return Response(status_code=404)
    except XcapConflict as conflict:
        log.info("XCAP %s for %s refused: %s %s", request.method, xui, conflict.tag, conflict)
        return xcap_error(conflict, request)
    headers = {} if document is None else {"ETag": _etag(document)}
    return Response(status_code=201 if created else 200, headers=headers)


async def change(
    context: StoreContext,
    usage: ApplicationUsage,
    presentity: tuple[str, str],
    derive: Derive,
    request: Request,
) -> tuple[bool, str | None]:
    """Derive the new document from the stored one, check it, store it (or delete
    it) and, for pres-rules, re-judge the subscriptions, in one transaction under
    the presentity's lock, where the request's preconditions are checked too; then
    tell the notifier. Returns whether the change created something, and the new
    document."""
    username, domain = presentity
    settings = context.settings
    now = int(time.time())
    notices: list[events.Event] = []
    async with locked_write(context.locks, context.pool, f"{username}@{domain}") as (connection, _):
        current = await load_document(connection, settings, username, domain, usage.doc_type)
        _check_preconditions(request, current)
        derived, created = derive(None if current is None else current.encode())
        document = None if derived is None else check_document(usage, derived)
        await store_document(
            connection, settings.xcap_table, username, domain, usage.doc_type, document
        )
        if usage.governs_subscriptions:
            rejudged = await rejudge(connection, settings, username, domain, document, now, "xcap")
            notices = rejudged.notices
    for notice in notices:
        await context.producer.send_and_wait(
            context.topics.changes, events.encode(notice), key=f"{username}@{domain}".encode()
        )
    return created, document


_CAPS_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the xcap-caps document",
        "content": {XCAP_CAPS_USAGE.media_type: {"schema": {"type": "string"}}},
    },
    304: {"description": "If-None-Match matched"},
    412: {"description": "If-Match not met"},
}


@router.get(_CAPS_PATH, tags=["xcap-caps"], response_class=Response, responses=_CAPS_ANSWERS)
async def get_xcap_caps(request: Request, context: Context) -> Response:
    """The server's capabilities (RFC 4825 §12): AUIDs, extensions, namespaces."""
    return await get_xcap_caps_node(None, request, context)


@router.get(
    _CAPS_PATH + "/~~/{selector:path}",
    tags=["xcap-caps"],
    response_class=Response,
    responses={**_CAPS_ANSWERS, 404: {"description": "the selector selects nothing"}},
)
async def get_xcap_caps_node(selector: str | None, request: Request, context: Context) -> Response:
    """One element or attribute of xcap-caps."""
    if (refused := refusal(context.settings, None, request)) is not None:
        return refused
    node = parse_node(XCAP_CAPS_USAGE, selector, request)
    if isinstance(node, Response):
        return node
    return answer_get(XCAP_CAPS_USAGE, XCAP_CAPS_DOCUMENT, node, request)


@router.api_route(
    _CAPS_PATH,
    methods=["PUT", "DELETE"],
    tags=["xcap-caps"],
    response_class=Response,
    responses={405: {"description": "read only (Allow: GET)"}},
)
async def change_xcap_caps(request: Request) -> Response:
    """xcap-caps is the server's to write: 405 (RFC 4825 §12.4: nobody may write it)."""
    return _only_get("xcap-caps is read only")


def _only_get(why: str) -> Response:
    return Response(why, 405, headers={"Allow": "GET"})


def _user_routes(usage: ApplicationUsage) -> None:
    """The routes of one application usage's per-user documents (one name each in
    OpenAPI)."""
    path = f"/xcap-root/{usage.auid}/users/{{xui}}/index"
    node_path = path + "/~~/{selector:path}"
    name = usage.auid.replace("-", "_")

    async def get_document(xui: str, request: Request, context: Context) -> Response:
        return await get_user_node(context, usage, xui, None, request)

    async def get_node(xui: str, selector: str, request: Request, context: Context) -> Response:
        return await get_user_node(context, usage, xui, selector, request)

    async def put_document(xui: str, request: Request, context: Context) -> Response:
        return await put_user_node(context, usage, xui, None, request)

    async def put_node(xui: str, selector: str, request: Request, context: Context) -> Response:
        return await put_user_node(context, usage, xui, selector, request)

    async def delete_document(xui: str, request: Request, context: Context) -> Response:
        return await delete_user_node(context, usage, xui, None, request)

    async def delete_node(xui: str, selector: str, request: Request, context: Context) -> Response:
        return await delete_user_node(context, usage, xui, selector, request)

    what = f"{usage.auid} document ({usage.media_type})"
    nodes = (selectors.XCAP_EL, selectors.XCAP_ATT)
    for method, endpoint, route, summary, media_types in (
        ("GET", get_document, path, f"Read the user's {what}", (usage.media_type,)),
        (
            "GET",
            get_node,
            node_path,
            f"Read one element, attribute or namespace::* of the {what}",
            (*nodes, selectors.XCAP_NS),
        ),
        ("PUT", put_document, path, f"Store or replace the user's {what}", (usage.media_type,)),
        (
            "PUT",
            put_node,
            node_path,
            f"Create or replace one element or attribute of the {what}",
            nodes,
        ),
        ("DELETE", delete_document, path, f"Delete the user's {what}", ()),
        ("DELETE", delete_node, node_path, f"Delete one element or attribute of the {what}", ()),
    ):
        router.add_api_route(
            route,
            endpoint,
            methods=[method],
            name=f"{method.lower()}_{name}_{endpoint.__name__.split('_')[1]}",
            summary=summary,
            tags=[usage.auid],
            response_class=Response,
            responses=_openapi_responses(method, media_types, node=route == node_path),
            openapi_extra=_openapi_body(media_types) if method == "PUT" else None,
        )


def _openapi_body(media_types: tuple[str, ...]) -> dict[str, Any]:
    """The raw XML body a PUT takes (read as bytes, so OpenAPI is told here)."""
    content = {media: {"schema": {"type": "string"}} for media in media_types}
    return {"requestBody": {"required": True, "content": content}}


_XCAP_ERROR_CONTENT = {XCAP_ERROR: {"schema": {"type": "string"}}}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid credentials (Basic challenge)"},
    403: {"description": "another user's credentials"},
    404: {
        "description": "no such document or node, a selector outside the grammar, or an xui"
        " the tables cannot hold"
    },
    412: {"description": "If-Match or If-None-Match not met"},
    503: {"description": "XCAP disabled (no secret), or Redis unreachable for a write"},
}
_SELECTOR_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the node selector uses a prefix no xmlns() of the query binds"},
}


def _openapi_responses(
    method: str, media_types: tuple[str, ...], *, node: bool
) -> dict[int | str, Any]:
    """What OpenAPI says a route answers: XML of its media types, not JSON."""
    refusals = {**_REFUSALS, **_SELECTOR_REFUSALS} if node else _REFUSALS
    if method == "GET":
        content = {media: {"schema": {"type": "string"}} for media in media_types}
        return {
            200: {
                "description": "the document or node, with the document's ETag",
                "content": content,
            },
            304: {"description": "If-None-Match matched (also *)"},
            **refusals,
        }
    changed = {
        200: {"description": "replaced or deleted; ETag of the new document"},
        405: {"description": "namespace::* is read only"},
        409: {"description": "RFC 4825 §11 conflict", "content": _XCAP_ERROR_CONTENT},
        429: {"description": "too many writes this minute for this user (Retry-After)"},
        **refusals,
    }
    if method == "PUT":
        changed[201] = {"description": "created; ETag of the new document"}
        changed[413] = {"description": "body over 256 KiB"}
        changed[415] = {"description": f"Content-Type is not {' or '.join(media_types)}"}
    return changed


for _usage in USER_USAGES.values():
    _user_routes(_usage)
