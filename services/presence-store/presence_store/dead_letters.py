"""Reading the dead-letters topic for the admin API (`presencectl dead-letters`):
from a Kafka offset, bounded, without a consumer group (reading moves nothing)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from presence.bus import events
from presence.bus.topics import DEAD_LETTER_PARTITIONS

# The value of a listed dead letter is cut to this many characters: a listing of a
# thousand stays small; the whole record stays at its topic/partition/offset.
VALUE_PREVIEW_CHARS = 1000
READ_TIMEOUT = 10.0


class DeadLettersUnreadable(Exception):
    pass


@dataclass
class Page:
    items: list[dict[str, Any]]
    first: int  # the oldest offset the topic still holds
    end: int  # the offset the next dead letter will get
    next_offset: int | None  # where the next page starts, None at the end


async def read_dead_letters(bootstrap: str, topic: str, *, start: int, limit: int) -> Page:
    """Up to `limit` dead letters from offset `start` (or the oldest one kept)."""
    assert DEAD_LETTER_PARTITIONS == 1  # offsets below are those of its one partition
    partition = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=int(READ_TIMEOUT * 1000),
    )
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            await consumer.start()
            consumer.assign([partition])
            first = (await consumer.beginning_offsets([partition]))[partition]
            end = (await consumer.end_offsets([partition]))[partition]
            position = max(start, first)
            items: list[dict[str, Any]] = []
            if position < end:
                consumer.seek(partition, position)
            while position < end and len(items) < limit:
                batch = await consumer.getmany(
                    partition, timeout_ms=500, max_records=limit - len(items)
                )
                for record in batch.get(partition, []):
                    position = record.offset + 1
                    items.append(_item(record.offset, record.value or b""))
    except (KafkaError, TimeoutError, OSError) as error:
        raise DeadLettersUnreadable(f"cannot read {topic}: {error!r}") from None
    finally:
        await consumer.stop()
    return Page(items, first, end, position if position < end else None)


def _item(offset: int, value: bytes) -> dict[str, Any]:
    try:
        letter = events.decode(value)
    except events.EventDecodeError as error:
        return {"position": offset, "error": f"not a dead letter: {error}"}
    if not isinstance(letter, events.DeadLetter):
        return {"position": offset, "error": f"not a dead letter: {letter.TYPE}"}
    # position: the dead letter's own offset on the dead-letters topic; offset: the
    # failed record's, on its topic.
    item = {"position": offset, **asdict(letter)}
    if len(letter.value) > VALUE_PREVIEW_CHARS:
        item["value"] = letter.value[:VALUE_PREVIEW_CHARS]
        item["value_truncated"] = True
    item["failed_at_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(letter.failed_at))
    return item
