"""Messages on the Kafka bus: one typed, versioned definition each, shared by all services.

Every value is a JSON object {"type": ..., "v": ..., ...fields}. A consumer that
meets a type or version it does not know raises EventDecodeError and skips the
record (a poison message must not stall a partition); presence-store and the
notifier put it on the dead-letters topic first (presence.bus.isolation).

A change that is not only a new optional field raises the event's VERSION, and
the records of the version before (from a replica of the previous release still
running, or a dead letter put back) are decoded through `_UPGRADES`: a release
upgrades the consumers of an event before its producers.

Topic names live in presence.bus.topics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar

# How long the edge waits for the store's reply to a request before answering 503
# itself. The store does not apply a request older than this (by its received_at):
# the client was told it failed and will retry.
REPLY_DEADLINE = 8.0


class EventDecodeError(ValueError):
    pass


@dataclass(frozen=True, kw_only=True)
class Sender:
    """Who sent a SIP request, carried by the request events (keyword fields, after
    each event's own): the Authorization header for the store to check (digest
    mode) against the request-URI it covers, or the identity the edge established
    (trusted-proxy mode: P-Asserted-Identity); None when there is none."""

    request_uri: str = ""
    authorization: str | None = None
    identity: str | None = None  # "sip:user@domain", once authenticated


@dataclass(frozen=True)
class PublishRequest(Sender):
    """A PUBLISH (RFC 3903) the edge accepted for processing."""

    TYPE: ClassVar[str] = "publish"
    # 2: the flow is `flow`, as in the other requests (version 1 called it `source`).
    VERSION: ClassVar[int] = 2

    request_id: str  # unique per server transaction; also seeds the new entity tag
    edge_id: str  # whose inbox gets the reply
    received_at: float  # Unix time the edge received the request
    username: str
    domain: str
    event: str  # event package, e.g. "presence"
    expires: int | None  # the Expires header, None when absent
    if_match: str | None  # SIP-If-Match, None for an initial publication
    content_type: str | None
    body: str
    flow: str  # "udp:203.0.113.5:5060": for logs, and the device when nothing better
    # The +sip.instance of the PUBLISH's Contact (presence.pidf.device.instance_id); phones
    # rarely send one: the store then looks for the binding registered over `flow`.
    instance: str | None = None

    @property
    def presentity(self) -> str:
        return f"{self.username}@{self.domain}"


@dataclass(frozen=True)
class RegisterRequest(Sender):
    """A REGISTER for the built-in registrar (RFC 3261 §10.3)."""

    TYPE: ClassVar[str] = "register"
    VERSION: ClassVar[int] = 1

    request_id: str
    edge_id: str
    received_at: float
    username: str  # the address-of-record, from To
    domain: str
    # (contact URI, its expires parameter or None, its q parameter or None); the
    # wildcard "*" is the URI "*".
    contacts: list[tuple[str, int | None, float | None]]
    expires: int | None  # the Expires header
    call_id: str
    cseq: int
    flow: str  # "udp:203.0.113.5:5060"
    # contact URI -> its +sip.instance (presence.pidf.device.instance_id), where it has one.
    instances: dict[str, str] = field(default_factory=dict)

    @property
    def presentity(self) -> str:
        return f"{self.username}@{self.domain}"


@dataclass(frozen=True)
class SubscribeRequest(Sender):
    """A SUBSCRIBE (RFC 6665): a new subscription dialog, a refresh or an unsubscribe."""

    TYPE: ClassVar[str] = "subscribe"
    VERSION: ClassVar[int] = 1

    request_id: str
    edge_id: str
    received_at: float
    username: str  # the presentity: request-URI of an initial SUBSCRIBE, else To
    domain: str
    event: str
    event_id: str | None  # the Event header's id parameter
    expires: int | None
    accept: list[str]  # media types from Accept; empty when the header is absent
    call_id: str
    from_uri: str  # the watcher (remote URI of the dialog)
    from_tag: str
    to_uri: str  # the presentity as addressed (local URI of the dialog)
    to_tag: str | None  # None for an initial SUBSCRIBE
    cseq: int
    contact: str | None  # remote target
    record_route: list[str]  # Record-Route values, in order
    flow: str

    @property
    def presentity(self) -> str:
        return f"{self.username}@{self.domain}"


@dataclass(frozen=True)
class SipReply:
    """The final answer to a request; the edge adds it to the response it builds."""

    TYPE: ClassVar[str] = "reply"
    VERSION: ClassVar[int] = 1

    request_id: str
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    # The To-tag of the dialog a SUBSCRIBE created; None lets the edge pick one.
    to_tag: str | None = None


# Causes of a PresentityChanged that no PUBLISH is behind: the cleaner's expiry, a
# pres-rules change over XCAP, an operator's request through the admin API.
LOCAL_CAUSES = frozenset({"expiry", "xcap", "admin"})


@dataclass(frozen=True)
class PresentityChanged:
    """The publication state of one presentity changed; its watchers need NOTIFYs."""

    TYPE: ClassVar[str] = "presentity_changed"
    VERSION: ClassVar[int] = 1

    username: str
    domain: str
    event: str
    cause: str  # request_id of the PUBLISH, or one of LOCAL_CAUSES
    received_at: float  # when the cause reached the edge, for the publish-to-notify delay
    # Bodies of publications that just ended: their tuples are shown closed once.
    closed: list[str] = field(default_factory=list)
    # Grows with every change of this presentity's state: the fencing token of the
    # lock the change was committed under (0 for changes the cleaner emits).
    version: int = 0

    @property
    def presentity(self) -> str:
        return f"{self.username}@{self.domain}"


@dataclass(frozen=True)
class WatcherChanged:
    """One subscription needs a NOTIFY with the current state (it was created,
    refreshed or ended)."""

    TYPE: ClassVar[str] = "watcher_changed"
    VERSION: ClassVar[int] = 1

    username: str
    domain: str
    event: str
    subscription: str  # the dialog's To-tag
    cause: str
    received_at: float

    @property
    def presentity(self) -> str:
        return f"{self.username}@{self.domain}"


@dataclass(frozen=True)
class WatcherInfoChanged:
    """Watchers of a presentity's `package` changed state (RFC 3857): its winfo
    subscribers get a partial NOTIFY naming them. Each watcher is (id, uri, status,
    event) as in presence.packages.watcherinfo.Watcher; carried here, not read back, because
    a subscription may be gone from the database by the time the notifier runs."""

    TYPE: ClassVar[str] = "watcher_info_changed"
    VERSION: ClassVar[int] = 1

    username: str
    domain: str
    package: str
    watchers: list[tuple[str, str, str, str]]
    cause: str
    received_at: float

    @property
    def presentity(self) -> str:
        return f"{self.username}@{self.domain}"


@dataclass(frozen=True)
class NotifyRequest:
    """A NOTIFY for the edge to send within a subscription dialog."""

    TYPE: ClassVar[str] = "notify"
    VERSION: ClassVar[int] = 1

    notify_id: str  # unique per NOTIFY; names its outcome
    username: str  # the presentity, which keys the outcome event
    domain: str
    event: str
    subscription: str  # the dialog's local (To) tag
    request_uri: str  # the dialog's remote target (§12.2.1.1)
    route_set: list[str]  # Route header values, in order
    headers: list[tuple[str, str]]  # From, To, Call-ID, CSeq, Event, Subscription-State, ...
    body: str
    # The flow the SUBSCRIBE came on ("udp:203.0.113.5:5060", "tcp:..."); used when
    # there is no route set, so that phones behind NAT are reached. "" resolves the URI.
    flow: str
    final: bool = False  # Subscription-State: terminated; the dialog ends with it
    # When the PUBLISH whose change this NOTIFY carries reached the edge (its
    # received_at); 0 when no PUBLISH caused it. For the publish-to-notify delay.
    published_at: float = 0.0

    @property
    def presentity(self) -> str:
        return f"{self.username}@{self.domain}"


# NOTIFY answers that mean the watcher is gone (RFC 6665 §4.2.2). 430 Flow Failed
# (RFC 5626): the edge's answer for a WebSocket watcher whose connection is gone;
# nothing else can reach it, and it subscribes anew when back.
DEAD_SUBSCRIPTION_STATUSES = frozenset({404, 410, 430, 480, 481})


@dataclass(frozen=True)
class NotifyOutcome:
    """How a NOTIFY ended: its final status, or 408 when Timer F fired."""

    TYPE: ClassVar[str] = "notify_outcome"
    VERSION: ClassVar[int] = 1

    notify_id: str
    username: str
    domain: str
    event: str
    subscription: str
    status: int
    reason: str
    final: bool = False  # the outcome of a final NOTIFY: the subscription can go

    @property
    def presentity(self) -> str:
        return f"{self.username}@{self.domain}"

    def ends_subscription(self, *, timeout_ends: bool) -> bool:
        """Whether the subscription ends with this outcome (what presence-store acts
        on): its final NOTIFY is done, or the watcher is gone (RFC 6665 §4.2.2; 408,
        no answer at all, unless PRESENCE_NOTIFY_TIMEOUT_ENDS_SUBSCRIPTION=0). Any
        other outcome changes nothing, so the edge does not put it on the bus."""
        return (
            self.final
            or self.status in DEAD_SUBSCRIPTION_STATUSES
            or (self.status == 408 and timeout_ends)
        )

    @classmethod
    def of(cls, notify: NotifyRequest, status: int, reason: str) -> NotifyOutcome:
        """The outcome of `notify`: its final status and reason phrase."""
        return cls(
            notify_id=notify.notify_id,
            username=notify.username,
            domain=notify.domain,
            event=notify.event,
            subscription=notify.subscription,
            status=status,
            reason=reason,
            final=notify.final,
        )


@dataclass(frozen=True)
class DeadLetter:
    """A record a consumer gave up on (presence.bus.isolation): it failed every attempt for
    a reason that is not a dependency's outage. Kept on `<namespace>.dead-letters`
    for `presencectl dead-letters`; the record itself stays at topic/partition/offset
    while its topic retains it."""

    TYPE: ClassVar[str] = "dead_letter"
    VERSION: ClassVar[int] = 1

    service: str  # the consumer that gave up: presence-store, notifier
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str  # the record's value (its first MAX_DEAD_VALUE_BYTES), as value_encoding says
    value_encoding: str  # "utf-8" or "base64"
    value_bytes: int  # the whole value's size
    value_truncated: bool
    error: str  # the last attempt's exception, "Type: message"
    attempts: int
    failed_at: float  # Unix time
    correlation_id: str = ""


Event = (
    PublishRequest
    | RegisterRequest
    | SubscribeRequest
    | SipReply
    | PresentityChanged
    | WatcherChanged
    | WatcherInfoChanged
    | NotifyRequest
    | NotifyOutcome
    | DeadLetter
)
_EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        PublishRequest,
        RegisterRequest,
        SubscribeRequest,
        SipReply,
        PresentityChanged,
        WatcherChanged,
        WatcherInfoChanged,
        NotifyRequest,
        NotifyOutcome,
        DeadLetter,
    )
}


def encode(event: Event) -> bytes:
    payload: dict[str, Any] = {"type": event.TYPE, "v": event.VERSION, **asdict(event)}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _renamed(payload: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    upgraded = {key: value for key, value in payload.items() if key != old}
    if old in payload:
        upgraded.setdefault(new, payload[old])
    return upgraded


# (type, older version) -> the payload as the current version writes it.
_UPGRADES: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("publish", 1): lambda payload: _renamed(payload, "source", "flow"),
}


def decode(data: bytes) -> Event:
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise EventDecodeError(f"not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise EventDecodeError("not a JSON object")
    cls = _EVENT_TYPES.get(payload.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise EventDecodeError(f"unknown event type {payload.get('type')!r}")
    version = payload.get("v")
    if version != cls.VERSION:
        upgrade = _UPGRADES.get((cls.TYPE, version)) if isinstance(version, int) else None
        if upgrade is None:
            raise EventDecodeError(f"{cls.TYPE}: unsupported version {version!r}")
        payload = upgrade(payload)
    names = {f.name for f in fields(cls)}
    required = {
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    }
    missing = required - payload.keys()
    if missing:
        raise EventDecodeError(f"{cls.TYPE}: missing {', '.join(sorted(missing))}")
    values = {name: payload[name] for name in names if name in payload}
    # JSON has no tuples: restore the pairs and triples of the list fields.
    if "headers" in values:
        values["headers"] = [(str(k), str(v)) for k, v in values["headers"]]
    if "watchers" in values:
        values["watchers"] = [tuple(str(part) for part in w) for w in values["watchers"]]
    if "contacts" in values:
        values["contacts"] = [tuple(contact) for contact in values["contacts"]]
    return cls(**values)
