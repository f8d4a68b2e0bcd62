"""Record isolation: outage or record failure (presence.runtime.failures), the retry
bookkeeping of one record, and the dead-letter record (presence.bus.isolation)."""

from __future__ import annotations

import base64
import json

import asyncpg
import pytest
import redis.exceptions
from aiokafka import errors as kafka_errors

from presence.bus import events, isolation
from presence.bus.isolation import Attempts
from presence.runtime.failures import Failure, classify
from presence.runtime.locks import LockTimeout


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(),
        OSError("network unreachable"),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction"),
        asyncpg.InterfaceError("pool is closing"),
        redis.exceptions.ConnectionError("Error 111 connecting"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica"),
        kafka_errors.KafkaConnectionError("no connection"),
        kafka_errors.KafkaTimeoutError(),
        kafka_errors.RequestTimedOutError(),
        kafka_errors.NotLeaderForPartitionError(),
        LockTimeout("lock presence:lock:3 not acquired in 5 s"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_dependency_that_is_down_is_an_outage(error: BaseException) -> None:
    assert classify(error) is Failure.OUTAGE


@pytest.mark.parametrize(
    "error",
    [
        TypeError("unsupported operand type(s) for -: 'float' and 'str'"),
        KeyError("status"),
        ValueError("invalid literal for int()"),
        AttributeError("'NoneType' object has no attribute 'encode'"),
        RecursionError(),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.UndefinedColumnError("column does not exist"),
        asyncpg.exceptions.StringDataRightTruncationError("value too long"),
        kafka_errors.MessageSizeTooLargeError("The message is 1200000 bytes"),
        kafka_errors.UnknownTopicOrPartitionError(),  # an edge inbox whose edge is gone
        # statement_timeout: about that statement, not the server (class 57, though).
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        redis.exceptions.ResponseError("WRONGTYPE"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_any_other_failure_is_the_records_own(error: BaseException) -> None:
    assert classify(error) is Failure.RECORD


def test_a_group_is_an_outage_when_any_part_is() -> None:
    assert classify(ExceptionGroup("x", [ValueError(), OSError()])) is Failure.OUTAGE
    assert classify(ExceptionGroup("x", [ValueError(), KeyError()])) is Failure.RECORD
    nested = ExceptionGroup("x", [ValueError(), ExceptionGroup("y", [TimeoutError()])])
    assert classify(nested) is Failure.OUTAGE


def test_a_record_is_tried_three_times_with_growing_pauses_then_given_up() -> None:
    attempts = Attempts()
    assert attempts.failed(TypeError("one")) == 0.1
    assert attempts.failed(TypeError("two")) == 0.3
    assert attempts.failed(TypeError("three")) is None
    assert attempts.made == 3
    assert attempts.errors == ["TypeError: one", "TypeError: two", "TypeError: three"]


def test_the_last_pause_repeats_and_a_limit_of_one_gives_up_at_once() -> None:
    attempts = Attempts(limit=5, pauses=(0.1, 0.2))
    assert [attempts.failed(ValueError()) for _ in range(5)] == [0.1, 0.2, 0.2, 0.2, None]
    assert Attempts(limit=1).failed(ValueError()) is None


def test_an_error_is_described_with_its_type_and_bounded() -> None:
    assert isolation.describe(KeyError("status")) == "KeyError: 'status'"
    long = isolation.describe(ValueError("x" * 10_000))
    assert len(long) < isolation.MAX_ERROR_CHARS + 40 and long.endswith("characters)")


def letter(value: bytes | None, key: bytes | None = b"alice@example.com") -> events.DeadLetter:
    return isolation.dead_letter(
        service="notifier",
        topic="ns.presence.changes",
        partition=3,
        offset=1234,
        key=key,
        value=value,
        error="MessageSizeTooLargeError: too large",
        attempts=3,
        failed_at=1700000000.5,
        correlation_id="abc",
    )


def test_a_dead_letter_keeps_where_the_record_was_and_what_it_held() -> None:
    record = b'{"type":"presentity_changed","v":1}'
    kept = letter(record)
    assert (kept.topic, kept.partition, kept.offset, kept.key) == (
        "ns.presence.changes", 3, 1234, "alice@example.com"
    )  # fmt: skip
    assert (kept.value, kept.value_encoding, kept.value_bytes) == (record.decode(), "utf-8", 35)
    assert not kept.value_truncated
    # It travels as a bus event like the others.
    assert events.decode(events.encode(kept)) == kept
    assert json.loads(events.encode(kept))["type"] == "dead_letter"
    assert letter(None, key=None).value == "" and letter(None, key=None).key is None


def test_a_value_that_is_not_text_is_kept_in_base64() -> None:
    kept = letter(b"\xff\xfe\x00binary")
    assert kept.value_encoding == "base64"
    assert base64.b64decode(kept.value) == b"\xff\xfe\x00binary"


def test_a_huge_value_is_cut_without_breaking_a_character() -> None:
    value = "é".encode() * isolation.MAX_DEAD_VALUE_BYTES  # 2 bytes each: cut mid-way
    kept = letter(value)
    assert kept.value_truncated and kept.value_bytes == len(value)
    assert kept.value_encoding == "utf-8"
    assert len(kept.value.encode()) <= isolation.MAX_DEAD_VALUE_BYTES
    assert len(events.encode(kept)) < 1_000_000  # under Kafka's message limit
    odd = b"a" + "é".encode() * isolation.MAX_DEAD_VALUE_BYTES  # cut inside a character
    assert letter(odd).value_encoding == "utf-8"
