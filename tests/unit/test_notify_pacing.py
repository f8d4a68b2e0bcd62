"""Per-dialog NOTIFY order and pace at the edge, with time as an argument."""

from presence.bus.events import NotifyRequest
from sip_edge.notify_pacing import NotifyPacer

from .test_notify_sending import notify_request


def notify(cseq: int, *, final: bool = False, dialog: str = "d1") -> NotifyRequest:
    state = "terminated;reason=timeout" if final else "active;expires=60"
    headers = [("CSeq", f"{cseq} NOTIFY"), ("Subscription-State", state)]
    return notify_request(notify_id=f"n{cseq}", subscription=dialog, headers=headers)


def test_one_in_flight_per_dialog_and_the_newest_waiting_one_goes_next() -> None:
    pacer = NotifyPacer()
    assert pacer.offer(notify(1), now=0.0) is not None
    assert pacer.offer(notify(2), now=0.1) is None  # waits: 1 is in flight
    assert pacer.offer(notify(3), now=0.2) is None  # replaces 2
    following = pacer.finished("d1", now=0.3)
    assert following is not None and following.notify_id == "n3"


def test_other_dialogs_are_not_held_up() -> None:
    pacer = NotifyPacer()
    assert pacer.offer(notify(1), now=0.0) is not None
    assert pacer.offer(notify(1, dialog="d2"), now=0.0) is not None


def test_older_state_after_newer_is_dropped() -> None:
    pacer = NotifyPacer()
    assert pacer.offer(notify(5), now=0.0) is not None
    assert pacer.finished("d1", now=0.1) is None
    assert pacer.offer(notify(4), now=0.2) is None  # a straggler from another replica
    assert pacer.due(now=10.0) == []


def test_final_notify_is_never_replaced() -> None:
    pacer = NotifyPacer()
    assert pacer.offer(notify(1), now=0.0) is not None
    assert pacer.offer(notify(2, final=True), now=0.1) is None
    assert pacer.offer(notify(3), now=0.2) is None
    following = pacer.finished("d1", now=0.3)
    assert following is not None and following.notify_id == "n2"


def test_minimum_interval_holds_the_latest_state_until_due() -> None:
    pacer = NotifyPacer(min_interval=5.0)
    assert pacer.offer(notify(1), now=0.0) is not None
    assert pacer.finished("d1", now=0.2) is None
    assert pacer.offer(notify(2), now=1.0) is None
    assert pacer.offer(notify(3), now=2.0) is None
    assert pacer.due(now=4.9) == []
    assert [n.notify_id for n in pacer.due(now=5.0)] == ["n3"]
    assert pacer.due(now=5.1) == []


def test_a_released_notify_is_in_flight_before_it_is_sent() -> None:
    """The queued NOTIFY the end of the previous one releases must not be overtaken by
    a newer one offered before the caller got to send it."""
    pacer = NotifyPacer()
    assert pacer.offer(notify(1), now=0.0) is not None
    assert pacer.offer(notify(2), now=0.1) is None
    released = pacer.finished("d1", now=0.2)
    assert released is not None and released.notify_id == "n2"
    assert pacer.offer(notify(3), now=0.2) is None  # waits for 2, not sent before it


def test_idle_dialogs_are_forgotten() -> None:
    pacer = NotifyPacer(memory=32.0)
    assert pacer.offer(notify(1), now=0.0) is not None
    pacer.finished("d1", now=1.0)
    pacer.forget_idle(now=20.0)
    assert len(pacer) == 1
    pacer.forget_idle(now=40.0)
    assert len(pacer) == 0


def test_next_due_is_when_the_interval_of_a_waiting_notify_ends() -> None:
    pacer = NotifyPacer(min_interval=5.0)
    assert pacer.next_due() is None
    assert pacer.offer(notify(1), now=0.0) is not None
    assert pacer.offer(notify(2), now=1.0) is None
    assert pacer.next_due() is None  # it waits for 1's answer, not for a time
    assert pacer.finished("d1", now=2.0) is None
    assert pacer.next_due() == 5.0
    assert [n.notify_id for n in pacer.due(now=5.0)] == ["n2"]
    assert pacer.next_due() is None


def test_next_forget_is_when_the_oldest_idle_dialog_may_go() -> None:
    pacer = NotifyPacer(memory=32.0)
    assert pacer.next_forget() is None
    pacer.offer(notify(1), now=0.0)
    pacer.offer(notify(1, dialog="d2"), now=0.0)
    assert pacer.next_forget() is None  # both in flight
    pacer.finished("d2", now=3.0)
    pacer.finished("d1", now=4.0)
    assert pacer.next_forget() == 35.0
    pacer.forget_idle(now=35.0)
    assert len(pacer) == 1 and pacer.next_forget() == 36.0
    pacer.offer(notify(2), now=35.5)  # d1 busy again: not forgotten
    assert pacer.next_forget() is None
