"""The event packages this server serves (RFC 6665 §7.2): one declaration each.

A package says, in one place, everything the request paths ask of it: its event
name; the body types a PUBLISH may carry and how such a body is checked; the body
type of its NOTIFYs (what a SUBSCRIBE's Accept must allow); its default and
maximum expiry; how several publications make one state (merged, newest wins, or
no publications at all: the state comes from the subscriptions); the body of a
subscription while there is no state; and who may watch (the presentity's
pres-rules, or only the resource's owner). The edge, presence-store and notifier
look packages up here and never name one, so adding a package is a declaration
and its pure body code. PRESENCE_EVENT_PACKAGES turns packages off.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from presence.packages import dialoginfo, message_summary
from presence.packages.watcherinfo import CONTENT_TYPE as WATCHERINFO_TYPE
from presence.pidf.aggregation import Publication, aggregate, empty_document
from presence.pidf.document import device_marks, parse_pidf
from presence.rules.authorization import AuthorizationPolicy, Verdict, watcher_document


class Aggregation(Enum):
    """How a presentity's live publications of one package make the watchers' state."""

    MERGE = "merge"  # every live publication, combined into one document
    NEWEST = "newest"  # the newest publication alone (no aggregation)
    SUBSCRIPTIONS = "subscriptions"  # not published: built from the subscriptions (winfo)


class Authorization(Enum):
    """Who may subscribe, and in which state the subscription starts."""

    PRES_RULES = "pres-rules"  # the presentity's pres-rules decide (RFC 5025)
    OWNER = "owner"  # only the resource's owner; active at once (RFC 3857 §5.3)


@dataclass(frozen=True)
class ExpiryPolicy:
    """The configured expiry of publications, subscriptions and registrations, in seconds:
    PRESENCE_DEFAULT_EXPIRES, PRESENCE_MAX_EXPIRES, PRESENCE_MIN_EXPIRES and the seed's
    expires_offset (Settings.expiry_policy builds it once)."""

    default: int
    max: int
    min: int
    offset: int  # taken off the Expires told to a publisher, so it refreshes in time


@dataclass(frozen=True)
class DocumentPolicy:
    """What the configuration says about the packages' documents
    (Settings.document_policy builds it once)."""

    authorization: AuthorizationPolicy
    # PRESENCE_MESSAGE_SUMMARY_EMPTY_BODY: "Messages-Waiting: no" rather than no body.
    message_summary_empty_body: bool


# The state of a presentity from its publications: (entity, live publications,
# publications that just ended (shown ended once, where the package can say so),
# policy) -> the body of a NOTIFY.
StateDocument = Callable[[str, Sequence[Publication], Sequence[Publication], DocumentPolicy], bytes]
# The body for a presentity without state: (entity, policy) -> body (b"": none).
EmptyState = Callable[[str, DocumentPolicy], bytes]
# What one watcher sees of the document: (document, entity, verdict, policy).
WatcherView = Callable[[bytes, str, Verdict, DocumentPolicy], bytes]


def _not_publishable(_: bytes) -> None:
    raise ValueError("this event package cannot be published")


def _no_document(entity: str, *_: object) -> bytes:
    raise ValueError(f"the state of this package is not published ({entity})")


def _whole_document(document: bytes, *_: object) -> bytes:
    return document


@dataclass(frozen=True)
class EventPackage:
    name: str
    body_type: str  # of NOTIFY bodies: what a SUBSCRIBE's Accept must allow
    aggregation: Aggregation
    authorization: Authorization
    empty_state: EmptyState
    # Accepted PUBLISH body types; empty: the package cannot be published (489).
    publish_types: tuple[str, ...] = ()
    # Parses and checks a published body; raises ValueError (with a reason phrase).
    check_body: Callable[[bytes], Any] = _not_publishable
    # What identifies the publishing device in a checked body (see pidf.device_marks).
    device_marks: Callable[[Any], frozenset[str]] = lambda _: frozenset()
    document: StateDocument = _no_document
    # The document as a watcher allowed by pres-rules sees it (RFC 5025 filtering).
    as_seen_by: WatcherView = _whole_document
    # The last touch per subscription (a document version counted from 0, RFC 4235
    # §4.1); None: every watcher of a change gets the same bytes.
    versioned: Callable[[bytes, int], bytes] | None = None
    # A template-package (RFC 6665 §8.2.4) about the subscriptions of another package.
    watcher_info_of: str | None = None
    # Seconds; None: PRESENCE_DEFAULT_EXPIRES and PRESENCE_MAX_EXPIRES.
    default_expires: int | None = None
    max_expires: int | None = None

    @property
    def publishable(self) -> bool:
        return bool(self.publish_types)

    def accepts(self, media_types: Sequence[str]) -> bool:
        """Whether a SUBSCRIBE's Accept allows this package's NOTIFY bodies (no Accept
        header means the package's default type, RFC 6665 §4.1.2)."""
        if not media_types:
            return True
        acceptable = {self.body_type, self.body_type.split("/")[0] + "/*", "*/*"}
        return bool(acceptable.intersection(media_types))

    def expiry_default(self, expiry: ExpiryPolicy) -> int:
        own = expiry.default if self.default_expires is None else self.default_expires
        return min(own, self.expiry_max(expiry))

    def expiry_max(self, expiry: ExpiryPolicy) -> int:
        if self.max_expires is None:
            return expiry.max
        return min(self.max_expires, expiry.max)

    def state(
        self,
        entity: str,
        publications: Sequence[Publication],
        closed: Sequence[Publication],
        policy: DocumentPolicy,
    ) -> bytes:
        """The presentity's document: its publications as the package combines them."""
        live = publications
        if self.aggregation is Aggregation.NEWEST:
            live = sorted(publications, key=lambda p: p.received_time)[-1:]
        return self.document(entity, live, closed, policy)


def _presence_document(
    entity: str,
    publications: Sequence[Publication],
    closed: Sequence[Publication],
    _policy: DocumentPolicy,
) -> bytes:
    return aggregate(entity, publications, closed=closed)


def _empty_presence(entity: str, _policy: DocumentPolicy) -> bytes:
    return empty_document(entity)


def _presence_as_seen_by(
    document: bytes, entity: str, verdict: Verdict, policy: DocumentPolicy
) -> bytes:
    return watcher_document(document, entity, verdict, policy.authorization)


PRESENCE = EventPackage(
    "presence",
    "application/pidf+xml",
    Aggregation.MERGE,
    Authorization.PRES_RULES,
    _empty_presence,
    publish_types=("application/pidf+xml",),
    check_body=parse_pidf,
    device_marks=device_marks,
    document=_presence_document,
    as_seen_by=_presence_as_seen_by,
)
# RFC 3857: who watches a presentity; its state comes from the subscriptions,
# never from PUBLISH (the edge answers a PUBLISH of it with 489).
PRESENCE_WINFO = EventPackage(
    "presence.winfo",
    WATCHERINFO_TYPE,
    Aggregation.SUBSCRIPTIONS,
    Authorization.OWNER,
    lambda entity, _policy: b"",  # never used: winfo documents are built per change
    watcher_info_of="presence",
)


def _empty_summary(_entity: str, policy: DocumentPolicy) -> bytes:
    return message_summary.NO_MESSAGES if policy.message_summary_empty_body else b""


def _summary_document(
    entity: str,
    publications: Sequence[Publication],
    _closed: Sequence[Publication],
    policy: DocumentPolicy,
) -> bytes:
    if not publications:
        return _empty_summary(entity, policy)
    body = publications[-1].body
    return body.encode() if isinstance(body, str) else body


# RFC 3842: a voicemail server publishes a mailbox's summary; the newest wins. A
# mailbox is private: only its owner may subscribe (RFC 3842 §6 asks for
# authorization; a phone subscribes to its own account).
MESSAGE_SUMMARY = EventPackage(
    "message-summary",
    message_summary.CONTENT_TYPE,
    Aggregation.NEWEST,
    Authorization.OWNER,
    _empty_summary,
    publish_types=(message_summary.CONTENT_TYPE,),
    check_body=message_summary.parse_message_summary,
    # One mark for every summary: a server that publishes afresh (no SIP-If-Match)
    # replaces its own previous summary instead of piling up to PRESENCE_MAX_PUBLICATIONS.
    device_marks=lambda _: frozenset({"message-summary"}),
    document=_summary_document,
)


def _dialog_document(
    entity: str,
    publications: Sequence[Publication],
    closed: Sequence[Publication],
    _policy: DocumentPolicy,
) -> bytes:
    return dialoginfo.aggregate_dialogs(entity, publications, closed=closed)


def _empty_dialogs(entity: str, _policy: DocumentPolicy) -> bytes:
    return dialoginfo.empty_dialog_info(entity)


def _dialogs_as_seen_by(
    document: bytes, entity: str, verdict: Verdict, _policy: DocumentPolicy
) -> bytes:
    # RFC 5025's transformations are PIDF's; a dialog watcher sees all or, under
    # polite-block, an idle line.
    return dialoginfo.empty_dialog_info(entity) if verdict.polite_block else document


# RFC 4235: a PBX or the phones publish a line's dialogs (busy-lamp fields); all
# publishers' dialogs make one document. pres-rules decide who may watch, as for
# presence (Kamailio's presence_dialoginfo does the same when authorization is on).
DIALOG = EventPackage(
    "dialog",
    dialoginfo.CONTENT_TYPE,
    Aggregation.MERGE,
    Authorization.PRES_RULES,
    _empty_dialogs,
    publish_types=(dialoginfo.CONTENT_TYPE,),
    check_body=dialoginfo.parse_dialog_info,
    device_marks=dialoginfo.dialog_ids,
    document=_dialog_document,
    as_seen_by=_dialogs_as_seen_by,
    versioned=dialoginfo.with_version,
)

PACKAGES: dict[str, EventPackage] = {
    package.name: package for package in (PRESENCE, PRESENCE_WINFO, DIALOG, MESSAGE_SUMMARY)
}


def watcher_info_package(package: str) -> str | None:
    """The package whose subscribers watch the watchers of `package` (presence.winfo
    for presence), or None."""
    return next((n for n, p in PACKAGES.items() if p.watcher_info_of == package), None)


def enabled(names: Collection[str]) -> dict[str, EventPackage]:
    """The packages PRESENCE_EVENT_PACKAGES turns on (Settings.event_package_names), in
    the order of PACKAGES."""
    return {name: package for name, package in PACKAGES.items() if name in names}


def check_package_names(names: Sequence[str]) -> None:
    """Raise ValueError unless `names` is a usable PRESENCE_EVENT_PACKAGES list."""
    if not names:
        raise ValueError("must name at least one event package")
    for name in names:
        if name not in PACKAGES:
            raise ValueError(f"unknown event package {name!r} (known: {', '.join(PACKAGES)})")
        watched = PACKAGES[name].watcher_info_of
        if watched is not None and watched not in names:
            raise ValueError(f"{name} needs {watched}")


def allow_events(names: Collection[str]) -> str:
    return ", ".join(enabled(names))


def accepted_types(names: Collection[str]) -> str:
    """The body types a PUBLISH may carry (Accept of OPTIONS)."""
    return ", ".join(
        sorted({t for package in enabled(names).values() for t in package.publish_types})
    )
