"""A subscription's life as data (RFC 6665 §4.1.3 and §4.2.2, RFC 3857 §3.4), pure.

TRANSITIONS says, for each state a subscription is in and each thing that happens
to it, the state it moves to; `transition` adds what the move does (`Effects`:
the active_watchers row write, the watchers row, the dialog's own NOTIFY, the winfo
change), for the store's SUBSCRIBE handling, rules changes, expiry timer and NOTIFY
outcomes alike. The enums' values are what the tables store.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """A subscription's state (active_watchers.status, watchers.subs_status)."""

    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"


class Reason(StrEnum):
    """Why a subscription ended (RFC 6665 §4.2.2; RFC 3857 §3.4 names the same events)."""

    DEACTIVATED = "deactivated"
    PROBATION = "probation"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    GIVEUP = "giveup"
    NORESOURCE = "noresource"
    INVARIANT = "invariant"


class Verdict(StrEnum):
    """What the presentity's rules decide for the watcher (RFC 5025 §3.2.1 sub-handling)."""

    ALLOW = "allow"
    POLITE_BLOCK = "polite-block"  # looks allowed; the watcher sees a neutral document
    CONFIRM = "confirm"  # the owner has to decide (also: no rule, no rules document)
    BLOCK = "block"


class Trigger(StrEnum):
    SUBSCRIBE = "subscribe"  # a SUBSCRIBE that creates a dialog, with the rules' verdict
    REFRESH = "refresh"  # an in-dialog SUBSCRIBE with an expiry
    UNSUBSCRIBE = "unsubscribe"  # an in-dialog SUBSCRIBE with Expires: 0
    RULES_CHANGED = "rules changed"  # re-judged by the new rules, with their verdict
    EXPIRY = "expiry"  # the expiry timer found it expired
    OPERATOR = "operator"  # ended by an operator, for a reason of theirs
    FINAL_NOTIFY_DONE = "final notify done"  # its final NOTIFY delivered or failed for good
    WATCHER_GONE = "watcher gone"  # a NOTIFY answered 481, 408, ... or not at all
    OVERDUE = "overdue"  # ended long ago, its final NOTIFY never reported back


PENDING, ACTIVE, TERMINATED = State.PENDING, State.ACTIVE, State.TERMINATED
NEW = None  # no dialog yet
# Where the reason of a terminated subscription comes from, when the table does not
# name it: the one it ended with, or the one the trigger brings (an operator's, or
# PRESENCE_WITHDRAWN_REASON for a permission withdrawn).
KEPT = "kept"
GIVEN = "given"

Key = tuple[State | None, Trigger, Verdict | None]
Target = tuple[State | None, Reason | str | None]  # state (None: no dialog), reason

# fmt: off
TRANSITIONS: dict[Key, Target] = {
    # A new dialog, as the rules judge the watcher (a blocked one gets 403, no dialog).
    (NEW,        Trigger.SUBSCRIBE,         Verdict.ALLOW):        (ACTIVE, None),
    (NEW,        Trigger.SUBSCRIBE,         Verdict.POLITE_BLOCK): (ACTIVE, None),
    (NEW,        Trigger.SUBSCRIBE,         Verdict.CONFIRM):      (PENDING, None),
    (NEW,        Trigger.SUBSCRIBE,         Verdict.BLOCK):        (TERMINATED, Reason.REJECTED),
    # Refreshes keep the state (rules are judged when they change, not on refreshes).
    (PENDING,    Trigger.REFRESH,           None):                 (PENDING, None),
    (ACTIVE,     Trigger.REFRESH,           None):                 (ACTIVE, None),
    (TERMINATED, Trigger.REFRESH,           None):                 (TERMINATED, KEPT),
    # Expires: 0 ends it (RFC 6665 §4.1.2.3); the watcher is told it timed out.
    (PENDING,    Trigger.UNSUBSCRIBE,       None):                 (TERMINATED, Reason.TIMEOUT),
    (ACTIVE,     Trigger.UNSUBSCRIBE,       None):                 (TERMINATED, Reason.TIMEOUT),
    (TERMINATED, Trigger.UNSUBSCRIBE,       None):                 (TERMINATED, KEPT),
    # Rules changed (RFC 5025): approval, or permission withdrawn.
    (PENDING,    Trigger.RULES_CHANGED,     Verdict.ALLOW):        (ACTIVE, None),
    (PENDING,    Trigger.RULES_CHANGED,     Verdict.POLITE_BLOCK): (ACTIVE, None),
    (PENDING,    Trigger.RULES_CHANGED,     Verdict.CONFIRM):      (PENDING, None),
    (PENDING,    Trigger.RULES_CHANGED,     Verdict.BLOCK):        (TERMINATED, Reason.REJECTED),
    (ACTIVE,     Trigger.RULES_CHANGED,     Verdict.ALLOW):        (ACTIVE, None),
    (ACTIVE,     Trigger.RULES_CHANGED,     Verdict.POLITE_BLOCK): (ACTIVE, None),
    (ACTIVE,     Trigger.RULES_CHANGED,     Verdict.CONFIRM):      (TERMINATED, GIVEN),
    (ACTIVE,     Trigger.RULES_CHANGED,     Verdict.BLOCK):        (TERMINATED, Reason.REJECTED),
    # The expiry timer, the operator.
    (PENDING,    Trigger.EXPIRY,            None):                 (TERMINATED, Reason.TIMEOUT),
    (ACTIVE,     Trigger.EXPIRY,            None):                 (TERMINATED, Reason.TIMEOUT),
    (PENDING,    Trigger.OPERATOR,          None):                 (TERMINATED, GIVEN),
    (ACTIVE,     Trigger.OPERATOR,          None):                 (TERMINATED, GIVEN),
    # NOTIFY outcomes that end the dialog, and the sweep of the long overdue.
    (PENDING,    Trigger.FINAL_NOTIFY_DONE, None):                 (NEW, None),
    (ACTIVE,     Trigger.FINAL_NOTIFY_DONE, None):                 (NEW, None),
    (TERMINATED, Trigger.FINAL_NOTIFY_DONE, None):                 (NEW, None),
    (PENDING,    Trigger.WATCHER_GONE,      None):                 (NEW, None),
    (ACTIVE,     Trigger.WATCHER_GONE,      None):                 (NEW, None),
    (TERMINATED, Trigger.WATCHER_GONE,      None):                 (NEW, None),
    (TERMINATED, Trigger.OVERDUE,           None):                 (NEW, None),
}
# fmt: on


class RowWrite(StrEnum):
    """What a transition writes to the subscription's active_watchers row."""

    NONE = "none"
    INSERT = "insert"  # a new dialog, in the new state
    REFRESH = "refresh"  # expiry, CSeq, contact, flow; the stored state is left as it is
    SET_STATE = "set state"  # status and reason (and `approved`, for winfo)
    DELETE = "delete"


@dataclass(frozen=True)
class Notify:
    """The dialog's own NOTIFY that a transition calls for, and its Subscription-State."""

    state: State
    reason: Reason | None = None

    @property
    def final(self) -> bool:
        return self.state is TERMINATED


@dataclass(frozen=True)
class WinfoChange:
    """The watcher as the presentity's winfo subscribers are told of it (RFC 3857 §3.4)."""

    status: State
    event: str  # "subscribe", "approved", or the Reason it ended


@dataclass(frozen=True)
class Effects:
    row: RowWrite
    # The state recorded for the (presentity, watcher) pair in the watchers table
    # (with the transition's reason), when the rules decided one; None: untouched.
    decision: State | None
    # The dialog's own NOTIFY; None when none is due for this dialog alone (after a
    # rules change the presentity-wide NOTIFY every watcher gets tells it).
    notify: Notify | None
    winfo: WinfoChange | None


NO_EFFECTS = Effects(RowWrite.NONE, None, None, None)


@dataclass(frozen=True)
class Transition:
    state: State | None  # None: the dialog is gone
    reason: Reason | None  # of a terminated subscription
    effects: Effects


class TransitionError(ValueError):
    """The trigger cannot happen to a subscription in that state."""


def verdict_of(status: str, polite_block: bool = False) -> Verdict:
    """The Verdict of a judged subscription state (presence.rules.authorization)."""
    if status == ACTIVE:
        return Verdict.POLITE_BLOCK if polite_block else Verdict.ALLOW
    if status == PENDING:
        return Verdict.CONFIRM
    if status == TERMINATED:
        return Verdict.BLOCK
    raise ValueError(f"no verdict gives the state {status!r}")


def reason_of(text: str | None) -> Reason | None:
    """A stored reason as a Reason; None for none (or one this version does not know)."""
    try:
        return Reason(text) if text else None
    except ValueError:
        return None


def transition(
    state: State | None,
    trigger: Trigger,
    *,
    verdict: Verdict | None = None,
    reason: Reason | None = None,
    given: Reason | None = None,
) -> Transition:
    """Where `trigger` takes a subscription in `state` (None: no dialog yet), and what
    that does. `verdict`: the rules' (SUBSCRIBE, RULES_CHANGED); `reason`: the one a
    terminated subscription ended with; `given`: the trigger's own (OPERATOR, and
    RULES_CHANGED's for a permission withdrawn)."""
    target = TRANSITIONS.get((state, trigger, verdict))
    if target is None:
        verdict_text = f" ({verdict})" if verdict else ""
        raise TransitionError(
            f"a subscription {state or 'not yet created'} cannot take {trigger}{verdict_text}"
        )
    after, source = target
    if source == GIVEN and given is None:
        raise TransitionError(
            f"{trigger} ({verdict or 'no verdict'}) needs the reason it ends with"
        )
    ended = reason if source == KEPT else given if source == GIVEN else source
    assert ended is None or isinstance(ended, Reason)
    return Transition(after, ended, _effects(state, trigger, after, ended))


def _effects(
    before: State | None, trigger: Trigger, after: State | None, reason: Reason | None
) -> Effects:
    if trigger is Trigger.SUBSCRIBE:
        assert after is not None
        if after is TERMINATED:  # refused: no dialog, but the decision and winfo
            return Effects(RowWrite.NONE, after, None, WinfoChange(after, str(reason)))
        return Effects(RowWrite.INSERT, after, Notify(after), WinfoChange(after, "subscribe"))
    if trigger is Trigger.REFRESH:
        assert after is not None
        return Effects(RowWrite.REFRESH, None, Notify(after, reason), None)
    if trigger is Trigger.UNSUBSCRIBE:
        # The stored state stays: the expiry, now, ends the dialog; its final NOTIFY
        # says why it ended (timeout, or the reason it had ended with already).
        gone = WinfoChange(TERMINATED, Reason.TIMEOUT)
        return Effects(RowWrite.REFRESH, None, Notify(TERMINATED, reason), gone)
    if trigger is Trigger.RULES_CHANGED:
        if after == before:
            return NO_EFFECTS
        if after is ACTIVE:
            return Effects(RowWrite.SET_STATE, ACTIVE, None, WinfoChange(ACTIVE, "approved"))
        assert after is TERMINATED and reason is not None
        return Effects(
            RowWrite.SET_STATE, TERMINATED, Notify(TERMINATED, reason),
            WinfoChange(TERMINATED, reason),
        )  # fmt: skip
    if trigger in (Trigger.EXPIRY, Trigger.OPERATOR):
        assert reason is not None
        return Effects(
            RowWrite.SET_STATE, None, Notify(TERMINATED, reason), WinfoChange(TERMINATED, reason)
        )
    if trigger is Trigger.WATCHER_GONE and before is not TERMINATED:
        # Gone mid-subscription: RFC 3857 calls that a timeout.
        return Effects(RowWrite.DELETE, None, None, WinfoChange(TERMINATED, Reason.TIMEOUT))
    # Its end was told (final NOTIFY, winfo) when it was terminated or unsubscribed.
    return Effects(RowWrite.DELETE, None, None, None)
