"""Applying a SUBSCRIBE to active_watchers (and watchers), in the caller's transaction:
the subscription's moves are presence.subscriptions.state's."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from presence.bus.events import Event, SubscribeRequest, WatcherChanged, WatcherInfoChanged
from presence.packages.registry import PACKAGES, Authorization, watcher_info_package
from presence.packages.watcherinfo import Watcher as WinfoWatcher
from presence.rules.authorization import judge, watcher_identity
from presence.runtime import metrics
from presence.settings import Settings
from presence.sip.answers import Answer
from presence.sip.grammar import parse_uri, same_aor
from presence.subscriptions.expiry import expires_at
from presence.subscriptions.state import (
    RowWrite,
    State,
    Transition,
    Trigger,
    Verdict,
    reason_of,
    transition,
    verdict_of,
)
from presence.tables import active_watchers, watchers
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
        to_tag, step, changed = await _create(connection, request, settings, now, granted)
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
        to_tag, (step, changed) = request.to_tag, refreshed
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
    notify = None
    if step.effects.notify is not None:
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
    held = await active_watchers.count_live_of_watcher(connection, table, user, domain, now)
    if held >= settings.max_subscriptions_per_watcher:
        metrics.CAP_REFUSALS.labels("subscriptions_per_watcher").inc()
        return TOO_MANY_SUBSCRIPTIONS
    watched = await active_watchers.count_live_of_presentity(
        connection, table, request.username, request.domain, request.event, now
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
    if not await active_watchers.watched(
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
) -> tuple[str | None, Transition, WinfoWatcher | None]:
    """The new dialog's To-tag (None when the presentity's rules block the watcher),
    its transition, and the watcher as winfo subscribers see it. The watcher is who
    authenticated, From only when authentication is off."""
    watcher = parse_uri(request.identity or request.from_uri)
    watcher_user, watcher_domain = watcher.user or "", watcher.host.lower()
    identity = watcher_identity(watcher_user, watcher_domain)
    judged = PACKAGES[request.event].authorization is not Authorization.OWNER
    if judged:
        rules = await load_pres_rules(connection, settings, request.username, request.domain)
        sphere = None
        if needs_sphere(rules):
            sphere = await load_sphere(connection, settings, request.username, request.domain)
        verdict = judge(
            rules, identity, settings.authorization_policy, datetime.now(UTC), sphere=sphere
        )
        step = transition(
            None, Trigger.SUBSCRIBE, verdict=verdict_of(verdict.status, verdict.polite_block)
        )
    else:
        step = transition(None, Trigger.SUBSCRIBE, verdict=Verdict.ALLOW)  # the owner
    effects = step.effects
    assert effects.winfo is not None and step.state is not None
    if judged and effects.decision is not None:
        # The decision of the rules for this pair (an owner's own needs none).
        await watchers.record_decision(
            connection,
            settings.watchers_table,
            presentity_user=request.username,
            presentity_domain=request.domain,
            watcher_user=watcher_user,
            watcher_domain=watcher_domain,
            state=effects.decision,
            reason=step.reason,
            now=now,
        )
    if effects.row is RowWrite.NONE:
        changed = WinfoWatcher(request.request_id, identity, effects.winfo.status,
                               effects.winfo.event)  # fmt: skip
        return None, step, changed
    to_tag = new_to_tag(settings.to_tag_pref)
    await active_watchers.insert(
        connection,
        settings.active_watchers_table,
        active_watchers.NewDialog(
            to_user=request.username,
            to_domain=request.domain,
            from_user=watcher_user,
            from_domain=watcher_domain,
            event=request.event,
            event_id=request.event_id,
            to_tag=to_tag,
            from_tag=request.from_tag,
            callid=request.call_id,
            remote_cseq=request.cseq,
            contact=request.contact,
            record_route=", ".join(request.record_route) or None,
            expires=expires_at(now, granted),
            status=step.state,
            local_uri=request.to_uri,
            remote_uri=request.from_uri,
            flow=request.flow,
            edge_id=request.edge_id,
        ),
    )
    changed = WinfoWatcher(to_tag, identity, effects.winfo.status, effects.winfo.event, granted)
    return to_tag, step, changed


async def _refresh(
    connection: asyncpg.Connection,
    request: SubscribeRequest,
    settings: Settings,
    now: int,
    granted: int,
) -> Answer | tuple[Transition, WinfoWatcher | None]:
    """Refresh or end an existing dialog: an Answer when the request is refused, else
    its transition and the watcher as winfo subscribers see it when that changed
    (Expires: 0)."""
    table = settings.active_watchers_table
    assert request.to_tag is not None
    row = await active_watchers.unexpired_for_update(connection, table, request.to_tag, now)
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
    step = transition(
        State(row["status"]),
        Trigger.UNSUBSCRIBE if granted == 0 else Trigger.REFRESH,
        reason=reason_of(row["reason"]),
    )
    assert step.effects.row is RowWrite.REFRESH
    await active_watchers.refresh(
        connection,
        table,
        row["id"],
        remote_cseq=request.cseq,
        expires=expires_at(now, granted),
        contact=request.contact,
        flow=request.flow,
        edge_id=request.edge_id,
    )
    winfo = step.effects.winfo
    if winfo is None:
        return step, None
    watcher = watcher_identity(row["from_user"], row["from_domain"])
    return step, WinfoWatcher(request.to_tag, watcher, winfo.status, winfo.event)
