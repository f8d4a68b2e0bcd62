"""The XCAP server for pres-rules documents (RFC 4825, RFC 5025 §9), on presence-store.

    PUT    /xcap-root/pres-rules/users/{xui}/index   store or replace (201 / 200)
    GET    /xcap-root/pres-rules/users/{xui}/index   the document (404 when none)
    DELETE /xcap-root/pres-rules/users/{xui}/index   remove it
    GET|PUT|DELETE .../index/~~/<node selector>      one element (or GET an attribute),
                                                      RFC 4825 §6.3 (presence.xcap_selectors)

xui is the presentity's SIP URI ("sip:alice@example.com", percent-encoded in the
path). A document that is not well-formed or not a valid ruleset is refused with
409 and an XCAP error body (RFC 4825 §11), and the stored one stays. Every change
re-judges the presentity's subscriptions at once: those now allowed become active,
those no longer allowed end (reason deactivated, or rejected when blocked), and
every watcher gets a NOTIFY with what it may now see.

Because of that, writes are limited per presentity: beyond
PRESENCE_XCAP_WRITES_PER_MINUTE PUTs and DELETEs in a minute, 429 with Retry-After
(a Redis counter, shared by the store replicas). A body is read with its limit
(MAX_DOCUMENT_BYTES) enforced while it arrives: 413 as soon as it is passed, or at
once when Content-Length says so.

Every request is authenticated (presence.xcap_credentials): HTTP Basic or Bearer
with the user's XCAP password, derived from PRESENCE_XCAP_SECRET; a user reads and
changes only their own document (401 without valid credentials, 403 with someone
else's). Credentials that cannot be read (not ASCII, bad base64, no colon) are no
credentials: 401. Without a secret XCAP answers 503; PRESENCE_XCAP_AUTH=none opens it
to anyone, for development.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Request, Response
from redis.asyncio import Redis
from redis.exceptions import RedisError

from presence import events, metrics
from presence import xcap_selectors as selectors
from presence.counters import WindowCounter
from presence.http_limits import storable_address
from presence.locks import LockTimeout, ShardedLocks
from presence.logs import correlated, new_correlation_id
from presence.rules import RulesError, parse_rules
from presence.safexml import XmlRefused, parse_untrusted
from presence.settings import Settings
from presence.sip.message import SipParseError, parse_uri
from presence.topics import Topics
from presence.xcap_credentials import REALM, authorizes, parse_authorization
from presence.xcap_documents import PRES_RULES_DOC_TYPE, load_pres_rules
from presence_store.fencing import enter_fence
from presence_store.rejudge import rejudge

log = logging.getLogger(__name__)

AUTH_POLICY = "application/auth-policy+xml"
MAX_DOCUMENT_BYTES = 256 * 1024
_PATH = "/xcap-root/pres-rules/users/{xui}/index"
# RFC 4825 §6: the document URI, "~~", then the node selector (element steps and
# an optional final @attribute; namespace prefixes bound in the query string).
_NODE_PATH = _PATH + "/~~/{selector:path}"
# pres-rules' default namespace for unprefixed selector steps (RFC 5025 §9.4).
COMMON_POLICY_NS = "urn:ietf:params:xml:ns:common-policy"
_NO_PRESENTITY = (
    "xui must be a SIP URI with a user part of at most 64 characters and a domain of at "
    "most 128, without control characters"
)


def _xcap_error(tag: str, status: int = 409) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<xcap-error xmlns="urn:ietf:params:xml:ns:xcap-error"><{tag}/></xcap-error>'
    )
    return Response(body, status, media_type="application/xcap-error+xml")


def _unavailable(what: str) -> Response:
    """503 while Redis (the write counter, the presentity locks) cannot be used."""
    return Response(f"XCAP writes are unavailable for now: {what}", 503, {"Retry-After": "5"})


def _etag(document: str) -> str:
    return '"' + hashlib.sha256(document.encode()).hexdigest()[:32] + '"'


class PreconditionFailed(Exception):
    pass


class NotFound(Exception):
    pass


class InvalidDocument(Exception):
    """The result is not a pres-rules document; tag names the RFC 4825 §11.2 error."""

    def __init__(self, tag: str, detail: str) -> None:
        super().__init__(detail)
        self.tag, self.detail = tag, detail


# From the stored document (None: there is none) to the new one (None: delete it),
# and whether the change creates the document or element (201) or not (200).
Derive = Callable[[bytes | None], tuple[bytes | None, bool]]


def _valid_document(document: bytes) -> str:
    """The document as text once it is well-formed XML and a valid ruleset
    (RFC 4825 §8.2.1 and §8.2.5: 409 with not-well-formed or schema-validation-error)."""
    try:
        parse_untrusted(document, what="document", max_bytes=MAX_DOCUMENT_BYTES, max_depth=64)
    except XmlRefused as error:
        raise InvalidDocument("not-well-formed", str(error)) from None
    try:
        parse_rules(document)
    except RulesError as error:
        raise InvalidDocument("schema-validation-error", str(error)) from None
    return document.decode()


def _check_preconditions(request: Request, current: str | None) -> None:
    """If-Match / If-None-Match (RFC 4825 §7.11, RFC 9110 §13): 412 when not met."""
    current_tag = _etag(current) if current is not None else None
    if_match = request.headers.get("if-match")
    if if_match is not None:
        tags = {tag.strip() for tag in if_match.split(",")}
        if current_tag is None or ("*" not in tags and current_tag not in tags):
            raise PreconditionFailed
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and current_tag is not None:
        tags = {tag.strip() for tag in if_none_match.split(",")}
        if "*" in tags or current_tag in tags:
            raise PreconditionFailed


def xcap_router(
    settings: Settings,
    pool: asyncpg.Pool,
    locks: ShardedLocks,
    producer: AIOKafkaProducer,
    redis: Redis,
) -> APIRouter:
    # A body over the limit is refused with 413 while it is read (presence.http_limits).
    router = APIRouter(max_body_size=MAX_DOCUMENT_BYTES)
    topics = Topics.of(settings)
    writes = WindowCounter(redis)
    writes_prefix = topics.lock_prefix + "xcap-writes:"
    table = settings.xcap_table
    if settings.xcap_auth == "none":
        log.warning("XCAP: PRESENCE_XCAP_AUTH=none, anyone may read and change anyone's rules")
    elif not settings.xcap_secret:
        log.warning("XCAP: disabled (503) until PRESENCE_XCAP_SECRET is set")

    def refusal(xui: str, request: Request) -> Response | None:
        """Why this request may not touch xui's document, or None when it may."""
        if settings.xcap_auth == "none":
            return None
        if not settings.xcap_secret:
            return Response("XCAP is disabled: PRESENCE_XCAP_SECRET is not set", 503)
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

    async def throttled(presentity: tuple[str, str], method: str) -> Response | None:
        """429 once the presentity's writes this minute are used up (each write
        re-judges every watcher), else None."""
        limit = settings.xcap_writes_per_minute
        if not limit:
            return None
        try:
            hit = await writes.hit(writes_prefix + "@".join(presentity), 60)
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

    @router.get(_PATH)
    async def get_rules(xui: str, request: Request) -> Response:
        return await get_node(xui, None, request)

    @router.get(_NODE_PATH)
    async def get_node(xui: str, selector: str | None, request: Request) -> Response:
        if (refused := refusal(xui, request)) is not None:
            return refused
        presentity = presentity_of(xui)
        if presentity is None:
            return Response(_NO_PRESENTITY, 404)
        document = await load_pres_rules(pool, settings, *presentity)
        if document is None:
            return Response(status_code=404)
        tag = _etag(document)
        if tag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers={"ETag": tag})
        if selector is None:
            return Response(document, media_type=AUTH_POLICY, headers={"ETag": tag})
        try:
            node = selectors.get_node(document.encode(), _selector(selector, request))
        except selectors.SelectorError as error:
            return Response(str(error), 404)
        if node is None:
            return Response(status_code=404)
        media_type, body = node
        return Response(body, media_type=media_type, headers={"ETag": tag})

    @router.put(_PATH)
    async def put_rules(xui: str, request: Request) -> Response:
        return await put_node(xui, None, request)

    @router.put(_NODE_PATH)
    async def put_node(xui: str, selector: str | None, request: Request) -> Response:
        if (refused := refusal(xui, request)) is not None:
            return refused
        presentity = presentity_of(xui)
        if presentity is None:
            return Response(_NO_PRESENTITY, 404)
        expected = AUTH_POLICY if selector is None else selectors.XCAP_EL
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != expected:
            return Response(f"Content-Type must be {expected}", 415)
        body = await request.body()
        if (limited := await throttled(presentity, "PUT")) is not None:
            return limited
        try:
            body.decode()
        except UnicodeDecodeError:
            return _xcap_error("not-utf-8")
        if selector is None:
            return await _store(xui, presentity, request, lambda current: (body, current is None))
        try:
            node = _selector(selector, request)
        except selectors.SelectorError as error:
            return Response(str(error), 404)

        def with_element(current: bytes | None) -> tuple[bytes, bool]:
            if current is None:
                raise selectors.XcapConflict("no-parent")
            return selectors.put_element(current, node, body)

        return await _store(xui, presentity, request, with_element)

    @router.delete(_PATH)
    async def delete_rules(xui: str, request: Request) -> Response:
        return await delete_node(xui, None, request)

    @router.delete(_NODE_PATH)
    async def delete_node(xui: str, selector: str | None, request: Request) -> Response:
        if (refused := refusal(xui, request)) is not None:
            return refused
        presentity = presentity_of(xui)
        if presentity is None:
            return Response(_NO_PRESENTITY, 404)
        if (limited := await throttled(presentity, "DELETE")) is not None:
            return limited
        try:
            node = None if selector is None else _selector(selector, request)
        except selectors.SelectorError as error:
            return Response(str(error), 404)

        def without(current: bytes | None) -> tuple[bytes | None, bool]:
            if current is None:
                raise NotFound
            if node is None:
                return None, False
            changed = selectors.delete_node(current, node)
            if changed is None:
                raise NotFound
            return changed, False

        return await _store(xui, presentity, request, without)

    def _selector(selector: str, request: Request) -> selectors.NodeSelector:
        return selectors.parse_selector(selector, request.url.query, COMMON_POLICY_NS)

    async def _store(
        xui: str,
        presentity: tuple[str, str],
        request: Request,
        derive: Derive,
    ) -> Response:
        """Apply a change and answer it: 201 when the document or element is new, 200
        when replaced or deleted; RFC 4825 409s when the result would not be a
        well-formed, valid pres-rules document."""
        try:
            with correlated(new_correlation_id("xcap")):
                created, document = await _change(presentity, derive, request)
        except PreconditionFailed:
            return Response(status_code=412)
        except LockTimeout:
            return _unavailable("the user's lock is busy")
        except RedisError:
            return _unavailable("cannot lock the user's document (Redis unreachable)")
        except NotFound:
            return Response(status_code=404)
        except selectors.XcapConflict as conflict:
            log.info("XCAP %s for %s refused: %s", request.method, xui, conflict.tag)
            return _xcap_error(conflict.tag)
        except InvalidDocument as invalid:
            log.info("XCAP %s for %s refused: %s", request.method, xui, invalid.detail)
            return _xcap_error(invalid.tag)
        headers = {} if document is None else {"ETag": _etag(document)}
        return Response(status_code=201 if created else 200, headers=headers)

    async def _change(
        presentity: tuple[str, str], derive: Derive, request: Request
    ) -> tuple[bool, str | None]:
        """Derive the new document from the stored one, check it, store it (or delete
        it) and re-judge the subscriptions, in one transaction under the presentity's
        lock, where the request's preconditions are checked too; then tell the
        notifier. Returns whether the change created something, and the new document."""
        username, domain = presentity
        now = int(time.time())
        notices: list[events.Event] = []
        async with locks.hold(f"{username}@{domain}") as lease, pool.acquire() as connection:
            async with connection.transaction():
                await enter_fence(connection, lease)
                current = await load_pres_rules(connection, settings, username, domain)
                _check_preconditions(request, current)
                derived, created = derive(None if current is None else current.encode())
                document = None if derived is None else _valid_document(derived)
                await connection.execute(
                    f"""DELETE FROM {table}
                        WHERE username = $1 AND domain = $2 AND doc_type = $3""",
                    username,
                    domain,
                    PRES_RULES_DOC_TYPE,
                )
                if document is not None:
                    await connection.execute(
                        f"""INSERT INTO {table} (username, domain, xcap, doc_type)
                            VALUES ($1, $2, $3, $4)""",
                        username,
                        domain,
                        document,
                        PRES_RULES_DOC_TYPE,
                    )
                rejudged = await rejudge(
                    connection, settings, username, domain, document, now, "xcap"
                )
                notices = rejudged.notices
        for notice in notices:
            await producer.send_and_wait(
                topics.changes, events.encode(notice), key=f"{username}@{domain}".encode()
            )
        return created, document

    return router
