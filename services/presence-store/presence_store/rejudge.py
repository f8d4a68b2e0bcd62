"""Re-judging a presentity's subscriptions by its pres-rules (RFC 5025), after the
rules changed: by XCAP (presence_store.xcap, in the transaction that stores the new
document) or on an operator's request (the admin API's update-watchers, Kamailio's
presence.updateWatchers, for rules changed behind the server's back)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from presence.bus import events
from presence.bus.topics import Topics
from presence.packages.registry import PACKAGES, Authorization
from presence.packages.watcherinfo import Watcher
from presence.rules.authorization import Judge, watcher_identity
from presence.runtime.locks import ShardedLocks
from presence.settings import Settings
from presence.subscriptions.state import Reason, RowWrite, State, Trigger, transition, verdict_of
from presence.tables import active_watchers, watchers
from presence.tables.presentity import load_sphere, needs_sphere
from presence.tables.xcap import load_pres_rules
from presence_store.fencing import locked_write
from presence_store.subscribe_store import watcher_info_notices


@dataclass
class Rejudged:
    """What re-judging changed: each subscription whose state changed (its new
    status and watcher-info event), its former status, and the events to emit."""

    changed: list[Watcher] = field(default_factory=list)
    before: dict[str, str] = field(default_factory=dict)  # to_tag -> former status
    notices: list[events.Event] = field(default_factory=list)


async def rejudge(
    connection: asyncpg.Connection,
    settings: Settings,
    username: str,
    domain: str,
    document: str | None,
    now: int,
    cause: str,
) -> Rejudged:
    """Apply `document` (None: no rules) to the presentity's live subscriptions of
    every package pres-rules govern (presence.packages.registry), in the caller's transaction
    under the presentity's lock: pending -> active when allowed, active -> terminated
    (deactivated, or probation) when no longer allowed, rejected when blocked; each
    decision recorded in the watchers table. The notices tell the notifier: a final
    NOTIFY for each ended subscription, the document as the rules now filter it for
    everyone else, and winfo subscribers the watchers that changed."""
    ruled = [n for n, p in PACKAGES.items() if p.authorization is Authorization.PRES_RULES]
    rows = await active_watchers.live_for_update(
        connection, settings.active_watchers_table, username, domain, ruled, now
    )
    result = Rejudged()
    changed_by_event: dict[str, list[Watcher]] = {}
    judged_at = datetime.now(UTC)
    withdrawn = Reason(settings.withdrawn_reason)
    sphere = None
    if rows and needs_sphere(document):
        sphere = await load_sphere(connection, settings, username, domain)
    # The rules are parsed once for all the subscriptions, not once per watcher.
    rules = Judge(document, settings.authorization_policy, judged_at, sphere=sphere)
    for row in rows:
        watcher = watcher_identity(row["from_user"], row["from_domain"])
        verdict = rules.verdict(watcher)
        step = transition(
            State(row["status"]),
            Trigger.RULES_CHANGED,
            verdict=verdict_of(verdict.status, verdict.polite_block),
            given=withdrawn,  # RFC 5025 §3.2.1 / RFC 6665: permission withdrawn
        )
        effects = step.effects
        if effects.row is RowWrite.NONE:
            continue
        assert step.state is not None and effects.winfo is not None
        # RFC 3857 §3.4: pending -> active is an approval; an end says its reason.
        await active_watchers.set_state(
            connection,
            settings.active_watchers_table,
            row["id"],
            step.state,
            step.reason,
            effects.winfo.event if step.state is State.ACTIVE else None,
        )
        if effects.decision is not None:
            await watchers.record_decision(
                connection,
                settings.watchers_table,
                presentity_user=username,
                presentity_domain=domain,
                watcher_user=row["from_user"],
                watcher_domain=row["from_domain"],
                state=effects.decision,
                reason=step.reason,
                now=now,
            )
        result.changed.append(Watcher(row["to_tag"], watcher, effects.winfo.status,
                                      effects.winfo.event))  # fmt: skip
        changed_by_event.setdefault(row["event"], []).append(result.changed[-1])
        result.before[row["to_tag"]] = row["status"]
        if effects.notify is not None:
            result.notices.append(
                events.WatcherChanged(
                    username, domain, row["event"], row["to_tag"], cause, time.time()
                )
            )
    # Every remaining watcher sees the document as the new rules filter it.
    result.notices += [
        events.PresentityChanged(username, domain, event, cause, time.time()) for event in ruled
    ]
    for package, changed in changed_by_event.items():
        result.notices += watcher_info_notices(
            username, domain, package, changed, cause, time.time()
        )
    return result


async def rejudge_presentity(
    settings: Settings,
    pool: asyncpg.Pool,
    locks: ShardedLocks,
    producer: AIOKafkaProducer,
    username: str,
    domain: str,
    cause: str,
) -> Rejudged:
    """Re-judge with the stored rules, under the presentity's lock in one
    transaction, then emit the notices (acknowledged by Kafka before returning)."""
    async with locked_write(locks, pool, f"{username}@{domain}") as (connection, _):
        document = await load_pres_rules(connection, settings, username, domain)
        result = await rejudge(
            connection, settings, username, domain, document, int(time.time()), cause
        )
    for notice in result.notices:
        await producer.send_and_wait(
            Topics.of(settings).changes,
            events.encode(notice),
            key=f"{username}@{domain}".encode(),
        )
    return result
