"""The admin API of presence-store: what Kamailio's presence RPC commands give an
operator (presence.presentity_list, presence.watcher_list, presence.refreshWatchers,
presence.updateWatchers, presence.cleanup), on the store's HTTP port under /admin.

    GET  /admin/presentities                       presentities with publications (paged;
                                                   ?domain= ?event= ?limit= ?offset=)
    GET  /admin/presentities/{aor}                 each publication (ETag, expiry, device)
                                                   and the aggregated document
    GET  /admin/presentities/{aor}/watchers        its subscriptions with their status, and
                                                   the authorization decisions
    GET  /admin/watchers/{aor}/subscriptions       what one watcher subscribes to
    POST /admin/presentities/{aor}/refresh         re-send the current state to its watchers
    POST /admin/presentities/{aor}/update-watchers re-judge its subscriptions by its rules
    POST /admin/cleanup                            run the clean_period timer now
    POST /admin/subscriptions/{id}/terminate       end a subscription (final NOTIFY)
    GET  /admin/users                              SIP digest users (paged; ?domain=)
    PUT  /admin/users/{aor}                        add a user or set the password
                                                   ({"password": ...}; HA1s are stored)
    DELETE /admin/users/{aor}                      remove a user
    GET  /admin/dead-letters                       records the consumers gave up on, oldest
                                                   first (?offset= a Kafka offset, ?limit=)

{aor} is "sip:alice@example.com" (or "alice@example.com"); {id} is the dialog's
To-tag. Every request carries `Authorization: Bearer <PRESENCE_ADMIN_TOKEN>`
(401 without it; 503 while no token is configured). Errors are JSON
{"error": "...", "field": "..."} naming the parameter at fault, 400 for a bad
one. Actions answer with the correlation id their log lines and change events
carry (also in the X-Correlation-Id header). OpenAPI: /openapi.json, /docs.

More endpoints join by adding routes to `router`: they get the token check, the
JSON errors and the correlation id for free, and the store's pool, settings, locks,
producer and cleaner as the dependency `context: Context` (presence_store.context).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from presence.bus import events
from presence.packages.registry import PACKAGES
from presence.packages.watcherinfo import Watcher
from presence.rules.authorization import watcher_identity
from presence.runtime.http_limits import storable_address
from presence.runtime.logs import correlated, correlation, new_correlation_id
from presence.settings import Settings
from presence.sip.grammar import parse_uri
from presence.sip.message import SipParseError
from presence.subscriptions.state import Reason, State, Trigger, transition
from presence.tables import active_watchers, presentity
from presence.tables.watchers import decisions_of
from presence_store import credentials
from presence_store.context import Context
from presence_store.dead_letters import DeadLettersUnreadable, read_dead_letters
from presence_store.fencing import locked_write
from presence_store.rejudge import rejudge_presentity
from presence_store.subscribe_store import watcher_info_notices

log = logging.getLogger(__name__)

# RFC 6665 §4.2.2 reasons an operator may end a subscription with.
TERMINATE_REASONS = ("deactivated", "probation", "rejected", "timeout", "giveup", "noresource")
MAX_PAGE = 1000


class AdminError(Exception):
    """An answer other than success: its status, and the parameter at fault if any."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def response(self) -> JSONResponse:
        body: dict[str, str] = {"error": self.message}
        if self.field:
            body["field"] = self.field
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, self.status, headers=headers)


class AdminRoute(APIRoute):
    """Every admin request runs under a correlation id of its own; bad parameters and
    AdminErrors become JSON errors that name the field (FastAPI's own are 422s)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            with correlated(new_correlation_id("admin")) as correlation_id:
                try:
                    response = await handler(request)
                except RequestValidationError as error:
                    response = _validation_error(error).response()
                except AdminError as error:
                    response = error.response()
                response.headers["X-Correlation-Id"] = correlation_id
                return response

        return route


def _validation_error(error: RequestValidationError) -> AdminError:
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ())]
    field = location[-1] if location else "request"
    return AdminError(400, f"{field}: {first.get('msg', 'invalid')}", field)


def parse_aor(text: str, field: str = "aor") -> tuple[str, str]:
    """(user, domain) of "sip:alice@example.com", "sips:…" or "alice@example.com"."""
    uri = text if text.startswith(("sip:", "sips:")) else f"sip:{text}"
    try:
        parsed = parse_uri(uri)
    except SipParseError as error:
        raise AdminError(400, f"{field}: not a SIP address ({error})", field) from None
    if not parsed.user or not parsed.host:
        raise AdminError(400, f"{field}: must be a SIP address with a user, got {text!r}", field)
    if (problem := storable_address(parsed.user, parsed.host)) is not None:
        raise AdminError(400, f"{field}: {problem}", field)
    return parsed.user, parsed.host.lower()


def _check_event(event: str, field: str = "event") -> str:
    if event not in PACKAGES:
        known = ", ".join(sorted(PACKAGES))
        raise AdminError(400, f"{field}: unknown event package {event!r} (one of {known})", field)
    return event


# At module level: the annotations are strings (PEP 563), resolved in this namespace.
_BEARER = HTTPBearer(auto_error=False, description="PRESENCE_ADMIN_TOKEN")
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")]
Offset = Annotated[int, Query(ge=0, description="rows to skip")]
Event = Annotated[str, Query(max_length=64, description="event package")]
Aor = Annotated[str, Path(max_length=320, description="sip:user@domain")]


class NewPassword(BaseModel):
    password: str = Field(min_length=1, max_length=256)


def log_startup_warnings(settings: Settings) -> None:
    if not settings.admin_token:
        log.warning("admin API: disabled (503) until PRESENCE_ADMIN_TOKEN is set")


async def require_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    context: Context,
) -> None:
    settings = context.settings
    if not settings.admin_token:
        raise AdminError(503, "the admin API is disabled: PRESENCE_ADMIN_TOKEN is not set")
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), settings.admin_token.encode()
    ):
        raise AdminError(401, "a valid admin token is needed (Authorization: Bearer …)")


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    route_class=AdminRoute,
    dependencies=[Depends(require_token)],
)


async def count_watchers(
    connection: asyncpg.Connection | asyncpg.Pool,
    table: str,
    user: str,
    domain: str,
    event: str,
) -> int:
    """The live subscriptions to a presentity's event package."""
    return await active_watchers.count_not_terminated(connection, table, user, domain, event)


@router.get("/presentities", summary="Presentities with publications (presentity_list)")
async def list_presentities(
    context: Context,
    domain: Annotated[str | None, Query(max_length=128)] = None,
    event: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    if event is not None:
        _check_event(event)
    now = int(time.time())
    rows = await presentity.page_presentities(
        context.pool,
        context.settings.presentity_table,
        context.settings.active_watchers_table,
        domain.lower() if domain else None,
        event,
        limit + 1,
        offset,
    )
    items = [
        {
            "presentity": f"sip:{r['username']}@{r['domain']}",
            "event": r["event"],
            "publications": r["publications"],
            "watchers": r["watchers"],
            "expires": r["expires"],
            "expires_in": r["expires"] - now,
        }
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return {
        "items": items,
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if more else None,
    }


@router.get("/presentities/{aor}", summary="One presentity: publications and document")
async def show_presentity(context: Context, aor: Aor, event: Event = "presence") -> dict[str, Any]:
    user, domain = parse_aor(aor)
    _check_event(event)
    now = int(time.time())
    async with context.pool.acquire() as connection:
        rows = await presentity.publications(
            connection, context.settings.presentity_table, user, domain, event
        )
        watchers = await count_watchers(
            connection, context.settings.active_watchers_table, user, domain, event
        )
        if not rows and not watchers:
            raise AdminError(
                404, f"sip:{user}@{domain} has no {event} publication or watcher", "aor"
            )
        document = await presentity.load_document(connection, context.settings, user, domain, event)
    return {
        "presentity": f"sip:{user}@{domain}",
        "event": event,
        "publications": [
            {
                "etag": r["etag"],
                "expires": r["expires"],
                "expires_in": r["expires"] - now,
                "received_time": r["received_time"],
                "device": list(r["device_marks"]),
                "device_id": r["device"],  # presence.pidf.device: instance id or flow
            }
            for r in rows
        ],
        "watchers": watchers,
        "document": document.decode(),
    }


@router.get("/presentities/{aor}/watchers", summary="Its subscriptions (watcher_list)")
async def list_watchers(
    context: Context, aor: Aor, event: Event = "presence", limit: Limit = 100, offset: Offset = 0
) -> dict[str, Any]:
    user, domain = parse_aor(aor)
    _check_event(event)
    now = int(time.time())
    rows = await active_watchers.page_of_presentity(
        context.pool, context.settings.active_watchers_table, user, domain, event, limit + 1, offset
    )
    decisions = await decisions_of(
        context.pool, context.settings.watchers_table, user, domain, MAX_PAGE
    )
    return {
        "presentity": f"sip:{user}@{domain}",
        "event": event,
        "items": [
            {
                "subscription": r["to_tag"],
                "watcher": watcher_identity(r["from_user"], r["from_domain"]),
                "from": r["remote_uri"],
                "status": r["status"],
                "reason": r["reason"],
                "expires": r["expires"],
                "expires_in": r["expires"] - now,
                "contact": r["contact"],
                "flow": r["flow"],
                "edge": r["edge_id"],
                "notifies": r["local_cseq"],
            }
            for r in rows[:limit]
        ],
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if len(rows) > limit else None,
        "decisions": [
            {
                "watcher": watcher_identity(r["w_user"], r["w_domain"]),
                "status": r["subs_status"],
                "reason": r["reason"],
                "since": r["inserted_time"],
            }
            for r in decisions
        ],
    }


@router.get("/watchers/{aor}/subscriptions", summary="What one watcher subscribes to")
async def list_subscriptions(
    context: Context, aor: Aor, limit: Limit = 100, offset: Offset = 0
) -> dict[str, Any]:
    user, domain = parse_aor(aor)
    now = int(time.time())
    rows = await active_watchers.page_of_watcher(
        context.pool, context.settings.active_watchers_table, user, domain, limit + 1, offset
    )
    return {
        "watcher": f"sip:{user}@{domain}",
        "items": [
            {
                "subscription": r["to_tag"],
                "presentity": f"sip:{r['to_user']}@{r['to_domain']}",
                "event": r["event"],
                "status": r["status"],
                "reason": r["reason"],
                "expires": r["expires"],
                "expires_in": r["expires"] - now,
                "edge": r["edge_id"],
            }
            for r in rows[:limit]
        ],
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if len(rows) > limit else None,
    }


@router.post("/presentities/{aor}/refresh", summary="Re-send the current state (refreshWatchers)")
async def refresh_watchers(context: Context, aor: Aor, event: Event = "presence") -> dict[str, Any]:
    user, domain = parse_aor(aor)
    _check_event(event)
    watchers = await count_watchers(
        context.pool, context.settings.active_watchers_table, user, domain, event
    )
    change = events.PresentityChanged(user, domain, event, "admin", time.time())
    await context.producer.send_and_wait(
        context.topics.changes, events.encode(change), key=change.presentity.encode()
    )
    log.info("admin: refresh %s %s (%d watchers)", change.presentity, event, watchers)
    return {
        "presentity": f"sip:{user}@{domain}",
        "event": event,
        "watchers": watchers,
        "correlation_id": correlation.get(),
    }


@router.post(
    "/presentities/{aor}/update-watchers",
    summary="Re-judge its subscriptions by its pres-rules (updateWatchers)",
)
async def update_watchers(context: Context, aor: Aor) -> dict[str, Any]:
    user, domain = parse_aor(aor)
    result = await rejudge_presentity(
        context.settings, context.pool, context.locks, context.producer, user, domain, "admin"
    )
    log.info("admin: update-watchers %s@%s: %d changed", user, domain, len(result.changed))
    return {
        "presentity": f"sip:{user}@{domain}",
        "changed": [
            {
                "subscription": w.id,
                "watcher": w.uri,
                "from": result.before.get(w.id),
                "to": w.status,
                "event": w.event,
            }
            for w in result.changed
        ],
        "correlation_id": correlation.get(),
    }


@router.post("/cleanup", summary="Run the clean_period timer now (cleanup)")
async def cleanup(context: Context) -> dict[str, Any]:
    removed = await context.cleaner.run_once()
    if not context.cleaner.leader:
        raise AdminError(
            409,
            "another store replica holds the cleaner lease: ask it (or wait for clean_period)",
        )
    return {"removed": removed, "correlation_id": correlation.get()}


@router.post("/subscriptions/{subscription}/terminate", summary="End a subscription")
async def terminate(
    context: Context,
    subscription: Annotated[str, Path(max_length=128, description="the dialog's To-tag")],
    reason: Annotated[str, Query(max_length=16)] = "deactivated",
) -> dict[str, Any]:
    if reason not in TERMINATE_REASONS:
        raise AdminError(400, f"reason: must be one of {', '.join(TERMINATE_REASONS)}", "reason")
    table = context.settings.active_watchers_table
    presentity_of = await active_watchers.presentity_of(context.pool, table, subscription)
    if presentity_of is None:
        raise AdminError(404, f"no subscription {subscription!r}", "subscription")
    user, domain = presentity_of
    # What an operator's end does, to a pending or an active subscription alike.
    step = transition(State.ACTIVE, Trigger.OPERATOR, given=Reason(reason))
    ended_as = step.effects.winfo
    assert step.state is not None and ended_as is not None
    async with locked_write(context.locks, context.pool, f"{user}@{domain}") as (connection, _):
        ended = await active_watchers.end_live(
            connection, table, subscription, step.state, step.reason
        )
        if ended is None:
            raise AdminError(
                409, f"subscription {subscription!r} has ended already", "subscription"
            )
        watcher = watcher_identity(ended["from_user"], ended["from_domain"])
        notices: list[events.Event] = [
            events.WatcherChanged(user, domain, ended["event"], subscription, "admin", time.time()),
            *watcher_info_notices(
                user,
                domain,
                ended["event"],
                [Watcher(subscription, watcher, ended_as.status, ended_as.event)],
                "admin",
                time.time(),
            ),
        ]
        # Committed only once the final NOTIFY is on its way, as the cleaner does.
        for notice in notices:
            await context.producer.send_and_wait(
                context.topics.changes, events.encode(notice), key=f"{user}@{domain}".encode()
            )
    log.info("admin: terminated subscription %s of %s@%s (%s)", subscription, user, domain,
             reason)  # fmt: skip
    return {
        "subscription": subscription,
        "presentity": f"sip:{user}@{domain}",
        "watcher": watcher,
        "event": ended["event"],
        "reason": reason,
        "correlation_id": correlation.get(),
    }


@router.get("/users", summary="SIP digest users (the credentials table)")
async def list_users(
    context: Context,
    domain: Annotated[str | None, Query(max_length=128)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    rows = await credentials.list_users(context.pool, domain, limit + 1, offset)
    items = [
        {"user": f"sip:{user}@{realm}", "updated_at": updated} for user, realm, updated in rows
    ]
    more = len(items) > limit
    return {
        "items": items[:limit],
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if more else None,
    }


@router.put("/users/{aor}", summary="Add a SIP user or set their password (HA1 only)")
async def put_user(
    context: Context, aor: Aor, body: NewPassword, response: Response
) -> dict[str, Any]:
    user, domain = parse_aor(aor)
    created = await credentials.set_password(context.pool, user, domain, body.password)
    response.status_code = 201 if created else 200
    log.info("admin: %s SIP user %s@%s", "added" if created else "new password for",
             user, domain)  # fmt: skip
    return {"user": f"sip:{user}@{domain}", "created": created}


@router.delete("/users/{aor}", summary="Remove a SIP user")
async def delete_user(context: Context, aor: Aor) -> dict[str, Any]:
    user, domain = parse_aor(aor)
    if not await credentials.remove_user(context.pool, user, domain):
        raise AdminError(404, f"no SIP user {user}@{domain}", "aor")
    log.info("admin: removed SIP user %s@%s", user, domain)
    return {"user": f"sip:{user}@{domain}", "removed": True}


@router.get("/dead-letters", summary="Records the consumers gave up on (dead letters)")
async def list_dead_letters(
    context: Context,
    limit: Limit = 100,
    offset: Annotated[int, Query(ge=0, description="Kafka offset to start at")] = 0,
) -> dict[str, Any]:
    try:
        page = await read_dead_letters(
            context.settings.kafka_bootstrap, context.topics.dead_letters, start=offset, limit=limit
        )
    except DeadLettersUnreadable as error:
        raise AdminError(503, str(error)) from None
    return {
        "items": page.items,
        "topic": context.topics.dead_letters,
        "first_offset": page.first,
        "end_offset": page.end,
        "limit": limit,
        "next_offset": page.next_offset,
    }
