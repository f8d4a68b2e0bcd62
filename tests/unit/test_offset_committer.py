"""presence.runtime.kafka.OffsetCommitter: offsets of handled batches are committed beside the
consumer loop, coalesced, only for partitions still owned, and kept after a failure.
A stand-in consumer (pure unit test): the real broker is in the integration tests."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from presence.runtime.kafka import OffsetCommitter

P0 = TopicPartition("t", 0)
P1 = TopicPartition("t", 1)


class StandInConsumer:
    def __init__(self, owned: set[TopicPartition]) -> None:
        self.owned = owned
        self.commits: list[dict[TopicPartition, int]] = []
        self.committed = asyncio.Condition()
        self.fail_next = False
        self.release = asyncio.Event()
        self.release.set()

    def assignment(self) -> set[TopicPartition]:
        return self.owned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("coordinator away")
        async with self.committed:
            self.commits.append(dict(offsets))
            self.committed.notify_all()

    async def wait_commits(self, count: int) -> None:
        async with asyncio.timeout(2), self.committed:
            await self.committed.wait_for(lambda: len(self.commits) >= count)


async def test_offsets_handed_over_while_a_commit_flies_leave_together() -> None:
    consumer = StandInConsumer({P0, P1})
    committer = OffsetCommitter(consumer, interval=0.0)  # type: ignore[arg-type]
    consumer.release.clear()
    committer.handled({P0: 5})
    flying = asyncio.create_task(committer.flush())
    await asyncio.sleep(0)
    committer.handled({P0: 9, P1: 3})
    committer.handled({P0: 7})  # an older offset never moves a partition back
    consumer.release.set()
    await flying
    await committer.flush()
    assert consumer.commits == [{P0: 5}, {P0: 9, P1: 3}]


async def test_a_failed_commit_keeps_its_offsets_for_the_next_one() -> None:
    consumer = StandInConsumer({P0})
    committer = OffsetCommitter(consumer, interval=0.0)  # type: ignore[arg-type]
    committer.handled({P0: 4})
    consumer.fail_next = True
    with pytest.raises(ConnectionError):
        await committer.flush()
    await committer.flush()
    assert consumer.commits == [{P0: 4}]


async def test_partitions_moved_away_are_not_committed() -> None:
    consumer = StandInConsumer({P1})
    committer = OffsetCommitter(consumer, interval=0.0)  # type: ignore[arg-type]
    committer.handled({P0: 4, P1: 2})
    await committer.flush()
    assert consumer.commits == [{P1: 2}]


async def test_the_background_loop_commits_at_most_once_an_interval() -> None:
    consumer = StandInConsumer({P0})
    committer = OffsetCommitter(consumer, interval=0.2)  # type: ignore[arg-type]
    running = asyncio.create_task(committer.run())
    try:
        committer.handled({P0: 1})
        await consumer.wait_commits(1)
        for offset in range(2, 12):
            committer.handled({P0: offset})
            await asyncio.sleep(0.005)
        # Ten hand-overs within one interval: one more commit, with the newest offset.
        await consumer.wait_commits(2)
        assert consumer.commits == [{P0: 1}, {P0: 11}]
    finally:
        running.cancel()
