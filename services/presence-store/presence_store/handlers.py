"""Bus requests -> database transactions -> replies and notifier events."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from presence.bus import events
from presence.bus.topics import Topics
from presence.packages.watcherinfo import Watcher
from presence.rules.authorization import watcher_identity
from presence.runtime import metrics
from presence.runtime.locks import LockTimeout, ShardedLocks
from presence.settings import Settings
from presence.sip.answers import Answer
from presence.subscriptions.state import State, Trigger, transition
from presence.tables import active_watchers, processed_requests
from presence_store.authentication import Authenticator, may_act_for
from presence_store.fencing import FencedOut, locked_write
from presence_store.outcome import Outcome
from presence_store.publish_store import apply_publish
from presence_store.registrar import apply_register
from presence_store.subscribe_store import apply_subscribe, watcher_info_notices

log = logging.getLogger(__name__)

Request = events.PublishRequest | events.RegisterRequest | events.SubscribeRequest
Apply = Callable[[asyncpg.Connection, Any, Settings, int], Awaitable[Outcome]]
APPLY: dict[type, Apply] = {
    events.PublishRequest: apply_publish,
    events.RegisterRequest: apply_register,
    events.SubscribeRequest: apply_subscribe,
}
FENCED_OUT_ATTEMPTS = 3
# The store commits a request only while it is younger than the edge's
# REPLY_DEADLINE by this margin: the time its reply has to reach the edge before
# the edge answers the client 503 itself. Without it a request committed just
# before the deadline was applied although its client had been told it failed.
APPLY_MARGIN = 1.0
REQUEST_EXPIRED = Answer(503, "Request Expired", [("Retry-After", "1")])
# The answer to a request that failed every attempt for a reason of its own: no
# Retry-After, a retransmission gets the same (processed_requests).
GIVEN_UP = Answer(500, "Server Internal Error")


class _TooLate(Exception):
    pass


def too_old(event: Request) -> bool:
    return time.time() - event.received_at > events.REPLY_DEADLINE - APPLY_MARGIN


class RequestHandler:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        locks: ShardedLocks,
        producer: AIOKafkaProducer,
        authenticator: Authenticator,
    ) -> None:
        self._settings = settings
        self._authenticator = authenticator
        self._pool = pool
        self._locks = locks
        self._producer = producer
        self._topics = Topics.of(settings)

    async def handle(self, event: events.Event) -> list[asyncio.Future[object]]:
        """Apply one request; returns the pending sends of its reply and notices (the
        caller awaits them before committing the Kafka offset)."""
        if isinstance(event, events.NotifyOutcome):
            return await self._send_notices(await self._notify_outcome(event), event.presentity)
        apply = APPLY.get(type(event))
        if apply is None:
            log.warning("ignoring unexpected %s event", event.TYPE)
            return []
        assert isinstance(event, Request)
        try:
            outcome = await self._apply_once(event, apply)
        except asyncpg.DataError as error:
            # A field the edge should have refused (presence.column_limits,
            # presence.sip.text_rules): the same on every retry, so it is answered
            # instead of failing, and holding up, the batch it came in.
            log.error("%s %s cannot be stored: %s", event.TYPE, event.presentity, error)
            metrics.UNSTORABLE_REQUESTS.labels(event.TYPE).inc()
            outcome = Outcome(Answer(400, "Unstorable Request"))
        except (FencedOut, LockTimeout) as error:
            # Contention this long is a fault to report, not to crash on: the client
            # is told to retry, the next request of the partition goes on.
            log.error("%s %s not applied: %s", event.TYPE, event.presentity, error)
            outcome = Outcome(Answer(500, "Presentity Busy", [("Retry-After", "1")]))
        sends = await self._reply(event, outcome)
        return sends + await self._send_notices(outcome.notices, event.presentity, event.edge_id)

    async def give_up(self, event: events.Event, error: str) -> list[asyncio.Future[object]]:
        """The final answer to a request the consumer loop gave up on (it failed every
        attempt, presence.bus.isolation): 500 Server Internal Error, recorded in
        processed_requests like any answer, so that a redelivery or a retransmission
        gets it again instead of failing again. Should the request have been applied
        after all (its row is there), its recorded answer is sent instead: a client is
        never told an applied request failed. Other records owe no answer."""
        if not isinstance(event, Request):
            return []
        failed = {"status": GIVEN_UP.status, "reason": GIVEN_UP.reason, "headers": []}
        async with self._pool.acquire() as connection:
            await processed_requests.record_unless_recorded(
                connection, event.request_id, json.dumps(failed), int(time.time())
            )
            done = await processed_requests.outcome_of(connection, event.request_id)
        if done is None:  # removed by the cleaner in between: nothing was applied
            return await self._reply(event, Outcome(GIVEN_UP))
        outcome = _stored_outcome(*done)
        sends = await self._reply(event, outcome)
        return sends + await self._send_notices(outcome.notices, event.presentity, event.edge_id)

    async def _reply(self, event: Request, outcome: Outcome) -> list[asyncio.Future[object]]:
        """Send the request's answer to the edge that holds its transaction."""
        reply = outcome.reply
        log.info("%s %s -> %s %s", event.TYPE, event.presentity, reply.status, reply.reason)
        metrics.STORE_REQUESTS.labels(event.TYPE, str(reply.status)).inc()
        answer = events.SipReply(
            event.request_id, reply.status, reply.reason or "", reply.headers, outcome.to_tag
        )
        try:
            return [
                await self._producer.send(
                    self._topics.edge_inbox(event.edge_id), events.encode(answer)
                )
            ]
        except KafkaError as error:
            # The edge replica (and its inbox) is gone: nobody waits for this reply.
            # The change notices must still go out.
            log.warning("reply to %s not sent: %s", event.edge_id, error)
            return []

    async def _send_notices(
        self, notices: list[events.Event], presentity: str, edge_id: str | None = None
    ) -> list[asyncio.Future[object]]:
        """Change notices to presence.changes; a NOTIFY the store built itself (the one
        a SUBSCRIBE calls for) to the inbox of the edge that holds its dialog, after
        the reply already sent there."""
        sends = []
        for notice in notices:
            if isinstance(notice, events.NotifyRequest):
                if edge_id is None:
                    log.error("NOTIFY %s without an edge to send it", notice.notify_id)
                    continue
                try:
                    sends.append(
                        await self._producer.send(
                            self._topics.edge_inbox(edge_id), events.encode(notice)
                        )
                    )
                except KafkaError as error:
                    # Its edge is gone (as for the reply before it): the dialog ends
                    # as one whose NOTIFY got no answer.
                    log.warning("NOTIFY to %s not sent: %s", edge_id, error)
                    outcome = events.NotifyOutcome.of(notice, 408, "Edge Gone")
                    sends.append(
                        await self._producer.send(
                            self._topics.notify_outcomes,
                            events.encode(outcome),
                            key=outcome.presentity.encode(),
                        )
                    )
                continue
            sends.append(
                await self._producer.send(
                    self._topics.changes,
                    events.encode(notice),
                    key=getattr(notice, "presentity", presentity).encode(),
                )
            )
        return sends

    async def _apply_once(self, event: Request, apply: Apply) -> Outcome:
        """Apply the request unless it was applied before (a redelivery after a crash).
        A holder whose lock lease ran out mid-way is fenced out and starts again."""
        for attempt in range(1, FENCED_OUT_ATTEMPTS):
            try:
                return await self._apply_under_lock(event, apply)
            except FencedOut as error:
                log.warning("%s (attempt %d): applying %s again", error, attempt, event.TYPE)
        return await self._apply_under_lock(event, apply)

    async def _apply_under_lock(self, event: Request, apply: Apply) -> Outcome:
        try:
            async with locked_write(self._locks, self._pool, event.presentity) as (
                connection,
                lease,
            ):
                done = await processed_requests.outcome_of(connection, event.request_id)
                if done is not None:
                    return _stored_outcome(*done)
                if too_old(event):
                    # The edge answers 503 (or has already); applying it now would
                    # change state behind the back of a client told it failed.
                    log.warning("%s %s too old, not applied", event.TYPE, event.presentity)
                    return Outcome(REQUEST_EXPIRED)
                now = int(time.time())
                identity = await self._authenticator.identify(connection, event)
                if isinstance(identity, Answer):
                    outcome = Outcome(identity)
                elif not isinstance(event, events.SubscribeRequest) and not may_act_for(
                    identity, event.presentity, self._settings.publish_for_others.split(",")
                ):
                    # Only alice publishes (and registers) alice, RFC 3261 §22.
                    metrics.AUTH_FAILURES.labels("not_own_aor").inc()
                    outcome = Outcome(Answer(403, "Not Your Address-Of-Record"))
                else:
                    event = replace(event, identity=identity)
                    outcome = await apply(connection, event, self._settings, now)
                outcome = replace(
                    outcome,
                    notices=[
                        replace(n, version=lease.fence)
                        if isinstance(n, events.PresentityChanged)
                        else n
                        for n in outcome.notices
                    ],
                )
                if too_old(event):
                    raise _TooLate  # the applying itself took too long
                await processed_requests.record(
                    connection,
                    event.request_id,
                    json.dumps(
                        {
                            "status": outcome.reply.status,
                            "reason": outcome.reply.reason,
                            "headers": outcome.reply.headers,
                            "to_tag": outcome.to_tag,
                        }
                    ),
                    json.dumps([events.encode(n).decode() for n in outcome.notices]),
                    now,
                )
                return outcome
        except _TooLate:
            # Rolled back: the reply would reach the edge after its own 503.
            log.warning("%s %s applied too late, rolled back", event.TYPE, event.presentity)
            return Outcome(REQUEST_EXPIRED)

    async def _notify_outcome(self, outcome: events.NotifyOutcome) -> list[events.Event]:
        """End the subscription when its final NOTIFY is done or the watcher is gone;
        the notices that tell winfo subscribers about a watcher that went away."""
        # The final NOTIFY was delivered (or failed for good): the dialog ends now, not
        # when it was built, so that a notifier crash before sending cannot lose it.
        if not outcome.ends_subscription(
            timeout_ends=bool(self._settings.notify_timeout_ends_subscription)
        ):
            if outcome.status >= 300:
                log.info(
                    "NOTIFY %s answered %s: subscription %s kept",
                    outcome.notify_id,
                    outcome.status,
                    outcome.subscription,
                )
            return []
        table = self._settings.active_watchers_table
        async with locked_write(self._locks, self._pool, outcome.presentity) as (db, _):
            # Every state ends the same way on both triggers (the row goes), so the
            # statement that deletes it reads the state the effects depend on.
            ended = await active_watchers.delete(db, table, outcome.subscription)
        log.info(
            "NOTIFY %s answered %s: subscription %s %s",
            outcome.notify_id,
            outcome.status,
            outcome.subscription,
            "ended" if ended else "already gone",
        )
        if ended is None:
            return []
        trigger = Trigger.FINAL_NOTIFY_DONE if outcome.final else Trigger.WATCHER_GONE
        winfo = transition(State(ended["status"]), trigger).effects.winfo
        if winfo is None:
            return []  # winfo subscribers heard of its end when it was terminated
        watcher = watcher_identity(ended["from_user"], ended["from_domain"])
        gone = Watcher(outcome.subscription, watcher, winfo.status, winfo.event)
        return watcher_info_notices(
            outcome.username, outcome.domain, outcome.event, [gone], outcome.notify_id,
            time.time(),
        )  # fmt: skip


def _stored_outcome(reply_json: str, notices_json: str) -> Outcome:
    reply = json.loads(reply_json)
    headers = [(name, value) for name, value in reply["headers"]]
    notices = [events.decode(text.encode()) for text in json.loads(notices_json)]
    return Outcome(Answer(reply["status"], reply["reason"], headers), notices, reply.get("to_tag"))
