"""The XCAP server for pres-rules documents (RFC 4825, RFC 5025 §9), on presence-store.

    PUT    /xcap-root/pres-rules/users/{xui}/index   store or replace (201 / 200)
    GET    /xcap-root/pres-rules/users/{xui}/index   the document (404 when none)
    DELETE /xcap-root/pres-rules/users/{xui}/index   remove it

xui is the presentity's SIP URI ("sip:alice@example.com", percent-encoded in the
path). A document that is not well-formed or not a valid ruleset is refused with
409 and an XCAP error body (RFC 4825 §11), and the stored one stays. Every change
re-judges the presentity's subscriptions at once: those now allowed become active,
those no longer allowed end (reason deactivated, or rejected when blocked), and
every watcher gets a NOTIFY with what it may now see.

Every request is authenticated (presence.xcap_credentials): HTTP Basic or Bearer
with the user's XCAP password, derived from PRESENCE_XCAP_SECRET; a user reads and
changes only their own document (401 without valid credentials, 403 with someone
else's). Without a secret XCAP answers 503; PRESENCE_XCAP_AUTH=none opens it to
anyone, for development.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Request, Response

from presence import events
from presence.authorization import Verdict, judge
from presence.locks import ShardedLocks
from presence.presentity_documents import load_sphere, needs_sphere
from presence.rules import RulesError, parse_rules
from presence.settings import Settings
from presence.sip.message import SipParseError, parse_uri
from presence.topics import Topics
from presence.watcherinfo import Watcher
from presence.xcap_credentials import REALM, authorizes, parse_authorization
from presence.xcap_documents import PRES_RULES_DOC_TYPE, load_pres_rules
from presence_store.fencing import enter_fence
from presence_store.subscribe_store import record_verdict, watcher_info_notices

log = logging.getLogger(__name__)

AUTH_POLICY = "application/auth-policy+xml"
MAX_DOCUMENT_BYTES = 256 * 1024
_PATH = "/xcap-root/pres-rules/users/{xui}/index"


def _xcap_error(tag: str, status: int = 409) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<xcap-error xmlns="urn:ietf:params:xml:ns:xcap-error"><{tag}/></xcap-error>'
    )
    return Response(body, status, media_type="application/xcap-error+xml")


def _etag(document: str) -> str:
    return '"' + hashlib.sha256(document.encode()).hexdigest()[:32] + '"'


class PreconditionFailed(Exception):
    pass


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
    settings: Settings, pool: asyncpg.Pool, locks: ShardedLocks, producer: AIOKafkaProducer
) -> APIRouter:
    router = APIRouter()
    topics = Topics.of(settings)
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
        credentials = parse_authorization(request.headers.get("authorization"))
        if credentials is not None and authorizes(credentials, settings.xcap_secret, xui):
            return None
        if (
            credentials is not None
            and credentials.user is not None
            and authorizes(credentials, settings.xcap_secret, credentials.user)
        ):
            return Response("these credentials open only their own user's documents", 403)
        challenge = f'Basic realm="{REALM}", charset="UTF-8"'
        return Response(status_code=401, headers={"WWW-Authenticate": challenge})

    def presentity_of(xui: str) -> tuple[str, str] | None:
        try:
            uri = parse_uri(xui)
        except SipParseError:
            return None
        return (uri.user, uri.host.lower()) if uri.user else None

    @router.get(_PATH)
    async def get_rules(xui: str, request: Request) -> Response:
        if (refused := refusal(xui, request)) is not None:
            return refused
        presentity = presentity_of(xui)
        if presentity is None:
            return Response("xui must be a SIP URI with a user part", 404)
        document = await load_pres_rules(pool, settings, *presentity)
        if document is None:
            return Response(status_code=404)
        tag = _etag(document)
        if tag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers={"ETag": tag})
        return Response(document, media_type=AUTH_POLICY, headers={"ETag": tag})

    @router.put(_PATH)
    async def put_rules(xui: str, request: Request) -> Response:
        if (refused := refusal(xui, request)) is not None:
            return refused
        presentity = presentity_of(xui)
        if presentity is None:
            return Response("xui must be a SIP URI with a user part", 404)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != AUTH_POLICY:
            return Response(f"Content-Type must be {AUTH_POLICY}", 415)
        body = await request.body()
        if len(body) > MAX_DOCUMENT_BYTES:
            return Response("document too large", 413)
        try:
            parse_rules(body)
        except RulesError as error:
            not_xml = "well-formed" in str(error).lower() or "xml" in str(error).lower()
            log.info("XCAP PUT for %s refused: %s", xui, error)
            return _xcap_error("not-well-formed" if not_xml else "schema-validation-error")
        try:
            document = body.decode()
        except UnicodeDecodeError:
            return _xcap_error("not-utf-8")
        try:
            created = await _change(presentity, document, request)
        except PreconditionFailed:
            return Response(status_code=412)
        return Response(status_code=201 if created else 200, headers={"ETag": _etag(document)})

    @router.delete(_PATH)
    async def delete_rules(xui: str, request: Request) -> Response:
        if (refused := refusal(xui, request)) is not None:
            return refused
        presentity = presentity_of(xui)
        if presentity is None:
            return Response("xui must be a SIP URI with a user part", 404)
        if await load_pres_rules(pool, settings, *presentity) is None:
            return Response(status_code=404)
        try:
            await _change(presentity, None, request)
        except PreconditionFailed:
            return Response(status_code=412)
        return Response(status_code=200)

    async def _change(presentity: tuple[str, str], document: str | None, request: Request) -> bool:
        """Store (or delete) the document and re-judge the subscriptions, in one
        transaction under the presentity's lock (where the request's preconditions
        are checked too); then tell the notifier."""
        username, domain = presentity
        now = int(time.time())
        notices: list[events.Event] = []
        async with locks.hold(f"{username}@{domain}") as lease, pool.acquire() as connection:
            async with connection.transaction():
                await enter_fence(connection, lease)
                _check_preconditions(
                    request, await load_pres_rules(connection, settings, username, domain)
                )
                existed = await connection.fetchval(
                    f"""DELETE FROM {table}
                        WHERE username = $1 AND domain = $2 AND doc_type = $3 RETURNING true""",
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
                notices = await _rejudge(connection, username, domain, document, now)
        for notice in notices:
            await producer.send_and_wait(
                topics.changes, events.encode(notice), key=f"{username}@{domain}".encode()
            )
        return not existed

    async def _rejudge(
        connection: asyncpg.Connection,
        username: str,
        domain: str,
        document: str | None,
        now: int,
    ) -> list[events.Event]:
        watchers = settings.active_watchers_table
        rows = await connection.fetch(
            f"""SELECT id, to_tag, remote_uri, status, event FROM {watchers}
                WHERE to_domain = $1 AND to_user = $2 AND status <> 'terminated'
                  AND expires > $3 AND event = 'presence' FOR UPDATE""",
            domain,
            username,
            now,
        )
        notices: list[events.Event] = []
        changed: list[Watcher] = []
        judged_at = datetime.now(UTC)
        sphere = None
        if rows and needs_sphere(document):
            sphere = await load_sphere(connection, settings, username, domain)
        for row in rows:
            verdict = judge(document, row["remote_uri"], settings, judged_at, sphere=sphere)
            status, reason = verdict.status, verdict.reason
            if row["status"] == "active" and status != "active":
                # RFC 5025 §3.2.1 / RFC 6665: permission withdrawn.
                status, reason = "terminated", verdict.reason or settings.withdrawn_reason
            if status == row["status"]:
                continue
            # RFC 3857 §3.4: pending -> active is an approval; an end says its reason.
            event = "approved" if status == "active" else reason or "deactivated"
            await connection.execute(
                f"""UPDATE {watchers}
                    SET status = $2, reason = $3, watcher_event = COALESCE($4, watcher_event)
                    WHERE id = $1""",
                row["id"],
                status,
                reason,
                "approved" if status == "active" else None,
            )
            await record_verdict(
                connection,
                settings,
                username,
                domain,
                parse_uri(row["remote_uri"]),
                Verdict(status, reason),
                now,
            )
            changed.append(Watcher(row["to_tag"], row["remote_uri"], status, event))
            if status == "terminated":
                notices.append(
                    events.WatcherChanged(
                        username, domain, row["event"], row["to_tag"], "xcap", time.time()
                    )
                )
        # Every remaining watcher sees the document as the new rules filter it.
        notices.append(events.PresentityChanged(username, domain, "presence", "xcap", time.time()))
        return notices + watcher_info_notices(
            username, domain, "presence", changed, "xcap", time.time()
        )

    return router
