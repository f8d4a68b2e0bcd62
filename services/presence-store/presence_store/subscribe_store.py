"""Applying a SUBSCRIBE to active_watchers (and watchers), in the caller's transaction."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from presence.bus.events import Event, SubscribeRequest, WatcherChanged, WatcherInfoChanged
from presence.packages.registry import PACKAGES, Authorization, watcher_info_package
from presence.packages.watcherinfo import Watcher as WinfoWatcher
from presence.rules.authorization import Verdict, judge, watcher_identity
from presence.runtime import metrics
from presence.settings import Settings
from presence.sip.answers import Answer
from presence.sip.grammar import SipUri, parse_uri, same_aor
from presence.subscriptions.expiry import expires_at
from presence.tables.active_watchers import watched
from presence.tables.notify_views import notify_of_dialog
from presence.tables.presentity import load_sphere, needs_sphere
from presence.tables.xcap import load_pres_rules
from presence_store.outcome import Outcome
from presence_store.subscription import grant_expires, new_to_tag

# Caps on new dialogs (refreshes and unsubscribes always pass). 403, not 503: the
# condition does not clear in seconds, a Retry-After would invite the retry loop a
# flood already is, and RFC 3263 clients treat 503 as "try the next server", which
# answers the same.
TOO_MANY_SUBSCRIPTIONS = Answer(403, "Too Many Subscriptions")  # the watcher's
TOO_MANY_WATCHERS = Answer(403, "Too Many Watchers")  # the presentity's
# Serializes the count-then-insert of one watcher's dialogs across presentities
# (each presentity has its own lock): the two-key advisory lock space, this class.
_WATCHER_LOCK_CLASS = 0x57415443  # "WATC"
# WatcherInfoChanged notices carry at most this many watchers each (a rules change
# can touch thousands), so that no bus record nears Kafka's 1 MiB limit.
WATCHER_INFO_CHUNK = 100


async def apply_subscribe(
    connection: asyncpg.Connection, request: SubscribeRequest, settings: Settings, now: int
) -> Outcome:
    granted = grant_expires(request, settings.expiry_policy)
    if isinstance(granted, Answer):
        return Outcome(granted)
    if request.to_tag is None:
        owner_only = PACKAGES[request.event].authorization is Authorization.OWNER
        if owner_only and not _is_owner(request):
            # RFC 3857 §5.3: a user's watcher list is theirs alone to see (and the
            # same holds for every package declared so, a mailbox's summary).
            return Outcome(Answer(403, "Forbidden"))
        if granted:  # a fetch (Expires: 0) leaves no dialog behind
            refused = await _over_cap(connection, request, settings, now)
            if refused is not None:
                return Outcome(refused)
        to_tag, changed = await _create(connection, request, settings, now, granted)
        if to_tag is None:
            # RFC 5025 block: refused outright (polite-block, by contrast, looks like
            # an accepted subscription to a presentity that is offline).
            return Outcome(
                Answer(403, "Forbidden"),
                await _watcher_info(connection, settings, request, changed),
            )
    else:
        refreshed = await _refresh(connection, request, settings, now, granted)
        if isinstance(refreshed, Answer):
            return Outcome(refreshed)
        to_tag, changed = request.to_tag, refreshed
    contact = settings.contact_uri_for(request.flow)
    reply = Answer(200, "OK", [("Expires", str(granted)), ("Contact", f"<{contact}>")])
    # The NOTIFY that follows every accepted SUBSCRIBE (RFC 6665 §4.2.1.1); with
    # Expires 0 it is the final one, carrying the state (a fetch, §4.4.3). Built
    # here, in this transaction and under the presentity's lock, and sent to the edge
    # right after the 200: no trip through presence.changes and the notifier. Its
    # CSeq is allocated like the notifier's (presence.tables.notify_views), so a NOTIFY the
    # notifier sends later for a newer state has a higher one.
    own_change = WatcherChanged(
        username=request.username,
        domain=request.domain,
        event=request.event,
        subscription=to_tag,
        cause=request.request_id,
        received_at=request.received_at,
    )
    notify = await notify_of_dialog(connection, settings, own_change)
    notifies: list[Event] = []
    if notify is not None:
        metrics.STORE_NOTIFIES_BUILT.labels(notify.event).inc()
        notifies.append(notify)
    winfo = await _watcher_info(connection, settings, request, changed)
    return Outcome(reply, [*notifies, *winfo], to_tag=to_tag)


def _is_owner(request: SubscribeRequest) -> bool:
    return same_aor(request.identity or request.from_uri, request.username, request.domain)


async def _over_cap(
    connection: asyncpg.Connection, request: SubscribeRequest, settings: Settings, now: int
) -> Answer | None:
    """The refusal when a new dialog would pass the watcher's or the presentity's cap
    on live subscriptions."""
    table = settings.active_watchers_table
    watcher = parse_uri(request.identity or request.from_uri)
    user, domain = watcher.user or "", watcher.host.lower()
    await connection.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", _WATCHER_LOCK_CLASS, f"{user}@{domain}"
    )
    held = await connection.fetchval(
        f"""SELECT count(*) FROM {table}
            WHERE from_domain = $1 AND from_user = $2 AND status <> 'terminated'
              AND expires > $3""",
        domain,
        user,
        now,
    )
    if held >= settings.max_subscriptions_per_watcher:
        metrics.CAP_REFUSALS.labels("subscriptions_per_watcher").inc()
        return TOO_MANY_SUBSCRIPTIONS
    watched = await connection.fetchval(
        f"""SELECT count(*) FROM {table}
            WHERE to_domain = $1 AND to_user = $2 AND event = $3 AND status <> 'terminated'
              AND expires > $4""",
        request.domain,
        request.username,
        request.event,
        now,
    )
    if watched >= settings.max_subscriptions_per_presentity:
        metrics.CAP_REFUSALS.labels("subscriptions_per_presentity").inc()
        return TOO_MANY_WATCHERS
    return None


async def _watcher_info(
    connection: asyncpg.Connection,
    settings: Settings,
    request: SubscribeRequest,
    changed: WinfoWatcher | None,
) -> list[Event]:
    """The winfo notice of a watcher that changed state, when someone watches the
    presentity's watchers: asked under the presentity's lock, which a winfo
    SUBSCRIBE takes too, so one that comes later starts from the full list."""
    winfo = watcher_info_package(request.event)
    if changed is None or winfo is None:
        return []
    if not await watched(
        connection, settings.active_watchers_table, request.domain, request.username, winfo
    ):
        return []
    return watcher_info_notices(
        request.username, request.domain, request.event, [changed], request.request_id,
        request.received_at,
    )  # fmt: skip


def watcher_info_notices(
    username: str,
    domain: str,
    package: str,
    changed: list[WinfoWatcher],
    cause: str,
    received_at: float,
) -> list[Event]:
    """The notice that tells the presentity's winfo subscribers (RFC 3857) about
    watchers of `package` that changed state; none for a package nobody can watch
    that way (presence.winfo itself)."""
    if not changed or not any(p.watcher_info_of == package for p in PACKAGES.values()):
        return []
    watchers = [(w.id, w.uri, w.status, w.event) for w in changed]
    return [
        WatcherInfoChanged(
            username, domain, package, watchers[start : start + WATCHER_INFO_CHUNK], cause,
            received_at,
        )
        for start in range(0, len(watchers), WATCHER_INFO_CHUNK)
    ]  # fmt: skip


async def _create(
    connection: asyncpg.Connection,
    request: SubscribeRequest,
    settings: Settings,
    now: int,
    granted: int,
) -> tuple[str | None, WinfoWatcher | None]:
    """The new dialog's To-tag (None when the presentity's rules block the watcher),
    and the watcher as winfo subscribers see it. The watcher is who authenticated,
    From only when authentication is off."""
    watcher = parse_uri(request.identity or request.from_uri)
    identity = watcher_identity(watcher.user or "", watcher.host.lower())
    if PACKAGES[request.event].authorization is Authorization.OWNER:
        verdict = Verdict("active")  # the owner, checked by the caller
    else:
        rules = await load_pres_rules(connection, settings, request.username, request.domain)
        sphere = None
        if needs_sphere(rules):
            sphere = await load_sphere(connection, settings, request.username, request.domain)
        verdict = judge(
            rules, identity, settings.authorization_policy, datetime.now(UTC), sphere=sphere
        )
        await record_verdict(
            connection, settings, request.username, request.domain, watcher, verdict, now
        )
    if verdict.status == "terminated":
        return None, WinfoWatcher(request.request_id, identity, "terminated", "rejected")
    to_tag = new_to_tag(settings.to_tag_pref)
    await connection.execute(
        f"""INSERT INTO {settings.active_watchers_table} (
                to_user, to_domain, from_user, from_domain, event, event_id, to_tag, from_tag,
                callid, remote_cseq, local_cseq, contact, record_route, expires, status,
                version, local_uri, remote_uri, flow, edge_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13, $14, 0,
                    $15, $16, $17, $18)""",
        request.username,
        request.domain,
        watcher.user or "",
        watcher.host.lower(),
        request.event,
        request.event_id,
        to_tag,
        request.from_tag,
        request.call_id,
        request.cseq,
        request.contact,
        ", ".join(request.record_route) or None,
        expires_at(now, granted),
        verdict.status,
        request.to_uri,
        request.from_uri,
        request.flow,
        request.edge_id,
    )
    return to_tag, WinfoWatcher(to_tag, identity, verdict.status, "subscribe", granted)


async def record_verdict(
    connection: asyncpg.Connection,
    settings: Settings,
    username: str,
    domain: str,
    watcher: SipUri,
    verdict: Verdict,
    now: int,
) -> None:
    """The decision for this (presentity, watcher) pair, in the seed's watchers table."""
    await connection.execute(
        f"""INSERT INTO {settings.watchers_table}
                (p_user, p_domain, w_user, w_domain, subs_status, reason, inserted_time)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (p_user, p_domain, w_user, w_domain) DO UPDATE
                SET subs_status = EXCLUDED.subs_status, reason = EXCLUDED.reason""",
        username,
        domain,
        watcher.user or "",
        watcher.host.lower(),
        verdict.status,
        verdict.reason,
        now,
    )


async def _refresh(
    connection: asyncpg.Connection,
    request: SubscribeRequest,
    settings: Settings,
    now: int,
    granted: int,
) -> Answer | WinfoWatcher | None:
    """Refresh or end an existing dialog: a Answer when the request is refused, the
    watcher as winfo subscribers see it when it ends (Expires: 0)."""
    table = settings.active_watchers_table
    row = await connection.fetchrow(
        f"""SELECT id, callid, from_tag, remote_cseq, from_user, from_domain FROM {table}
            WHERE to_tag = $1 AND expires > $2 FOR UPDATE""",
        request.to_tag,
        now,
    )
    if row is None or (row["callid"], row["from_tag"]) != (request.call_id, request.from_tag):
        return Answer(481, "Subscription Does Not Exist")
    if request.identity is not None and not same_aor(
        request.identity, row["from_user"], row["from_domain"]
    ):
        # The dialog is its authenticated watcher's: knowing its Call-ID and tags
        # does not let another user refresh, move or end it.
        metrics.AUTH_FAILURES.labels("not_own_subscription").inc()
        return Answer(403, "Not Your Subscription")
    if request.cseq <= row["remote_cseq"]:
        # RFC 3261 §12.2.2: a lower (or repeated) CSeq within a dialog is refused.
        return Answer(500, "CSeq Out Of Order")
    await connection.execute(
        f"""UPDATE {table} SET remote_cseq = $2, expires = $3, contact = COALESCE($4, contact),
                flow = $5, edge_id = $6
            WHERE id = $1""",
        row["id"],
        request.cseq,
        expires_at(now, granted),
        request.contact,
        request.flow,
        request.edge_id,
    )
    if granted == 0:
        # The watcher unsubscribed: to winfo that is the subscription timing out.
        watcher = watcher_identity(row["from_user"], row["from_domain"])
        return WinfoWatcher(request.to_tag or "", watcher, "terminated", "timeout")
    return None
