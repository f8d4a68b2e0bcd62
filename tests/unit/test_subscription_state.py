"""The subscription state machine (presence.subscriptions.state): every transition of
the table with its effects, and every other (state, trigger, verdict) refused."""

from __future__ import annotations

import itertools

import pytest

from presence.subscriptions.state import (
    NEW,
    TRANSITIONS,
    Effects,
    Notify,
    Reason,
    RowWrite,
    State,
    Transition,
    TransitionError,
    Trigger,
    Verdict,
    WinfoChange,
    reason_of,
    transition,
    verdict_of,
)

P, A, T = State.PENDING, State.ACTIVE, State.TERMINATED
S = Trigger
V = Verdict
W = RowWrite
NONE_ = Effects(W.NONE, None, None, None)
GONE_TOLD = Effects(W.DELETE, None, None, None)
GONE_NOW = Effects(W.DELETE, None, None, WinfoChange(T, "timeout"))
# Inputs each case is given: the reason it had ended with (KEPT), the trigger's own (GIVEN).
KEPT, GIVEN = Reason.PROBATION, Reason.GIVEUP

# (state, trigger, verdict) -> (new state, reason, effects): the table, written out
# with what each move does.
EXPECTED: dict[tuple[State | None, Trigger, Verdict | None], Transition] = {
    (NEW, S.SUBSCRIBE, V.ALLOW): Transition(
        A, None, Effects(W.INSERT, A, Notify(A), WinfoChange(A, "subscribe"))
    ),
    (NEW, S.SUBSCRIBE, V.POLITE_BLOCK): Transition(
        A, None, Effects(W.INSERT, A, Notify(A), WinfoChange(A, "subscribe"))
    ),
    (NEW, S.SUBSCRIBE, V.CONFIRM): Transition(
        P, None, Effects(W.INSERT, P, Notify(P), WinfoChange(P, "subscribe"))
    ),
    (NEW, S.SUBSCRIBE, V.BLOCK): Transition(
        T, Reason.REJECTED, Effects(W.NONE, T, None, WinfoChange(T, "rejected"))
    ),
    (P, S.REFRESH, None): Transition(P, None, Effects(W.REFRESH, None, Notify(P), None)),
    (A, S.REFRESH, None): Transition(A, None, Effects(W.REFRESH, None, Notify(A), None)),
    (T, S.REFRESH, None): Transition(T, KEPT, Effects(W.REFRESH, None, Notify(T, KEPT), None)),
    (P, S.UNSUBSCRIBE, None): Transition(
        T, Reason.TIMEOUT,
        Effects(W.REFRESH, None, Notify(T, Reason.TIMEOUT), WinfoChange(T, "timeout")),
    ),
    (A, S.UNSUBSCRIBE, None): Transition(
        T, Reason.TIMEOUT,
        Effects(W.REFRESH, None, Notify(T, Reason.TIMEOUT), WinfoChange(T, "timeout")),
    ),
    (T, S.UNSUBSCRIBE, None): Transition(
        T, KEPT, Effects(W.REFRESH, None, Notify(T, KEPT), WinfoChange(T, "timeout"))
    ),
    (P, S.RULES_CHANGED, V.ALLOW): Transition(
        A, None, Effects(W.SET_STATE, A, None, WinfoChange(A, "approved"))
    ),
    (P, S.RULES_CHANGED, V.POLITE_BLOCK): Transition(
        A, None, Effects(W.SET_STATE, A, None, WinfoChange(A, "approved"))
    ),
    (P, S.RULES_CHANGED, V.CONFIRM): Transition(P, None, NONE_),
    (P, S.RULES_CHANGED, V.BLOCK): Transition(
        T, Reason.REJECTED,
        Effects(W.SET_STATE, T, Notify(T, Reason.REJECTED), WinfoChange(T, "rejected")),
    ),
    (A, S.RULES_CHANGED, V.ALLOW): Transition(A, None, NONE_),
    (A, S.RULES_CHANGED, V.POLITE_BLOCK): Transition(A, None, NONE_),
    (A, S.RULES_CHANGED, V.CONFIRM): Transition(
        T, GIVEN, Effects(W.SET_STATE, T, Notify(T, GIVEN), WinfoChange(T, "giveup"))
    ),
    (A, S.RULES_CHANGED, V.BLOCK): Transition(
        T, Reason.REJECTED,
        Effects(W.SET_STATE, T, Notify(T, Reason.REJECTED), WinfoChange(T, "rejected")),
    ),
    (P, S.EXPIRY, None): Transition(
        T, Reason.TIMEOUT,
        Effects(W.SET_STATE, None, Notify(T, Reason.TIMEOUT), WinfoChange(T, "timeout")),
    ),
    (A, S.EXPIRY, None): Transition(
        T, Reason.TIMEOUT,
        Effects(W.SET_STATE, None, Notify(T, Reason.TIMEOUT), WinfoChange(T, "timeout")),
    ),
    (P, S.OPERATOR, None): Transition(
        T, GIVEN, Effects(W.SET_STATE, None, Notify(T, GIVEN), WinfoChange(T, "giveup"))
    ),
    (A, S.OPERATOR, None): Transition(
        T, GIVEN, Effects(W.SET_STATE, None, Notify(T, GIVEN), WinfoChange(T, "giveup"))
    ),
    (P, S.FINAL_NOTIFY_DONE, None): Transition(NEW, None, GONE_TOLD),
    (A, S.FINAL_NOTIFY_DONE, None): Transition(NEW, None, GONE_TOLD),
    (T, S.FINAL_NOTIFY_DONE, None): Transition(NEW, None, GONE_TOLD),
    (P, S.WATCHER_GONE, None): Transition(NEW, None, GONE_NOW),
    (A, S.WATCHER_GONE, None): Transition(NEW, None, GONE_NOW),
    (T, S.WATCHER_GONE, None): Transition(NEW, None, GONE_TOLD),
    (T, S.OVERDUE, None): Transition(NEW, None, GONE_TOLD),
}  # fmt: skip

EVERY_KEY = list(itertools.product([NEW, *State], Trigger, [None, *Verdict]))


def test_the_expectations_cover_the_table_exactly() -> None:
    assert set(EXPECTED) == set(TRANSITIONS)


@pytest.mark.parametrize(("state", "trigger", "verdict"), list(EXPECTED))
def test_each_transition_and_its_effects(
    state: State | None, trigger: Trigger, verdict: Verdict | None
) -> None:
    moved = transition(state, trigger, verdict=verdict, reason=KEPT, given=GIVEN)
    assert moved == EXPECTED[(state, trigger, verdict)]


@pytest.mark.parametrize(
    ("state", "trigger", "verdict"), [key for key in EVERY_KEY if key not in TRANSITIONS]
)
def test_every_other_transition_is_refused(
    state: State | None, trigger: Trigger, verdict: Verdict | None
) -> None:
    with pytest.raises(TransitionError, match=str(trigger)):
        transition(state, trigger, verdict=verdict, reason=KEPT, given=GIVEN)


def test_only_subscribe_and_rules_changes_take_a_verdict() -> None:
    for _state, trigger, verdict in TRANSITIONS:
        assert (verdict is not None) == (trigger in (Trigger.SUBSCRIBE, Trigger.RULES_CHANGED))


def test_a_reason_the_trigger_brings_must_be_given() -> None:
    with pytest.raises(TransitionError, match="reason"):
        transition(State.ACTIVE, Trigger.OPERATOR)
    with pytest.raises(TransitionError, match="reason"):
        transition(State.ACTIVE, Trigger.RULES_CHANGED, verdict=Verdict.CONFIRM)


def test_every_terminated_state_has_a_reason_and_every_live_one_none() -> None:
    for key in TRANSITIONS:
        moved = transition(*key[:2], verdict=key[2], reason=KEPT, given=GIVEN)
        assert (moved.reason is not None) == (moved.state is State.TERMINATED)


def test_a_notify_is_final_exactly_when_it_says_terminated() -> None:
    assert Notify(State.TERMINATED, Reason.TIMEOUT).final
    assert not Notify(State.ACTIVE).final and not Notify(State.PENDING).final


def test_the_enums_values_are_what_the_tables_store() -> None:
    assert [s.value for s in State] == ["pending", "active", "terminated"]
    assert State("terminated") is State.TERMINATED and State.ACTIVE == "active"
    assert {r.value for r in Reason} == {
        "deactivated", "probation", "rejected", "timeout", "giveup", "noresource", "invariant"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("status", "polite_block", "verdict"),
    [
        ("active", False, Verdict.ALLOW),
        ("active", True, Verdict.POLITE_BLOCK),
        ("pending", False, Verdict.CONFIRM),
        ("terminated", False, Verdict.BLOCK),
    ],
)
def test_verdict_of_a_judged_state(status: str, polite_block: bool, verdict: Verdict) -> None:
    assert verdict_of(status, polite_block) is verdict


def test_verdict_of_an_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError, match="waiting"):
        verdict_of("waiting")


def test_reason_of_stored_text() -> None:
    assert reason_of("probation") is Reason.PROBATION
    assert reason_of(None) is None and reason_of("") is None and reason_of("bored") is None
