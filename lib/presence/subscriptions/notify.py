"""A subscription's state and the NOTIFY that tells it (RFC 6665 §4.2.2, RFC 3856), pure."""

from __future__ import annotations

from dataclasses import dataclass

from presence.bus.events import NotifyRequest
from presence.packages.registry import PACKAGES
from presence.sip.message import split_list
from presence.subscriptions.expiry import seconds_left
from presence.subscriptions.state import Reason, State


@dataclass(frozen=True)
class Subscription:
    """One active_watchers row, as a NOTIFY needs it."""

    id: int
    to_user: str
    to_domain: str
    event: str
    event_id: str | None
    to_tag: str
    from_tag: str
    callid: str
    local_cseq: int  # already allocated for this NOTIFY
    version: int  # NOTIFYs of this subscription so far, this one included
    contact: str
    record_route: str | None
    expires: int
    status: str  # a State's value
    reason: str | None  # a Reason's value, of a terminated one
    local_uri: str
    remote_uri: str
    from_user: str  # the watcher's identity (authenticated, else From)
    from_domain: str
    flow: str
    edge_id: str

    @property
    def presentity(self) -> str:
        return f"{self.to_user}@{self.to_domain}"


def subscription_state(
    subscription: Subscription, now: int, retry_after: int = 0
) -> tuple[str, bool]:
    """The Subscription-State value, and whether this NOTIFY is the final one. A
    subscription on probation is told when to come back (RFC 6665 §4.2.2)."""
    remaining = subscription.expires - now
    if subscription.status == State.TERMINATED:
        reason = subscription.reason or Reason.DEACTIVATED
        if reason == Reason.PROBATION and retry_after:
            return f"{State.TERMINATED};reason={reason};retry-after={retry_after}", True
        return f"{State.TERMINATED};reason={reason}", True
    if remaining <= 0:
        return f"{State.TERMINATED};reason={Reason.TIMEOUT}", True
    # Never more than was granted (the stored expiry is rounded up, presence.subscriptions.expiry).
    told = max(seconds_left(subscription.expires, now), 1)
    return f"{subscription.status};expires={told}", False


def shows_state(subscription: Subscription) -> bool:
    """Only an active subscription sees the document; pending ones get NOTIFYs without
    body (the seed), and so does the final NOTIFY of one that was never active."""
    return subscription.status == State.ACTIVE


def build_notify(
    subscription: Subscription,
    *,
    document: bytes,
    now: int,
    contact_uri: str,
    notify_id: str,
    retry_after: int = 0,
) -> tuple[NotifyRequest, bool]:
    """The NOTIFY for the edge, and whether it ends the subscription."""
    state, final = subscription_state(subscription, now, retry_after)
    event = subscription.event
    if subscription.event_id:
        event += f";id={subscription.event_id}"
    headers = [
        ("From", f"<{subscription.local_uri}>;tag={subscription.to_tag}"),
        ("To", f"<{subscription.remote_uri}>;tag={subscription.from_tag}"),
        ("Call-ID", subscription.callid),
        ("CSeq", f"{subscription.local_cseq} NOTIFY"),
        ("Event", event),
        ("Subscription-State", state),
        ("Contact", f"<{contact_uri}>"),
    ]
    body = ""
    if shows_state(subscription) and document:
        # An empty document is a package's "no state" (presence.packages.registry): no body.
        headers.append(("Content-Type", PACKAGES[subscription.event].body_type))
        body = document.decode()
    notify = NotifyRequest(
        notify_id=notify_id,
        username=subscription.to_user,
        domain=subscription.to_domain,
        event=subscription.event,
        subscription=subscription.to_tag,
        request_uri=subscription.contact,
        route_set=split_list(subscription.record_route) if subscription.record_route else [],
        headers=headers,
        body=body,
        flow=subscription.flow,
        final=final,
    )
    return notify, final
