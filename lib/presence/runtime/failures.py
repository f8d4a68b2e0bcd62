"""Which failures of a consumed record's handler are a dependency's outage and which
are the record's own (presence.bus.isolation has what follows from it: the
attempts, the dead-letter record). Here, beside the I/O, because it names the
exceptions of the database, Redis and Kafka drivers."""

from __future__ import annotations

import enum

import asyncpg
import redis.exceptions
from aiokafka import errors as kafka_errors

from presence.runtime.locks import LockTimeout


class Failure(enum.Enum):
    OUTAGE = "outage"  # a dependency is down: handle the batch again later
    RECORD = "record"  # this record fails: retry it a few times, then dead-letter it


# Kafka errors about one record or one topic, not about the cluster: a record over
# the size limit, a topic that does not exist (an edge inbox whose edge is gone).
_RECORD_KAFKA_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.UnknownTopicOrPartitionError,
    kafka_errors.TopicAuthorizationFailedError,
)
_RECORD_ERRORS: tuple[type[BaseException], ...] = (
    *_RECORD_KAFKA_ERRORS,
    # A statement cancelled (statement_timeout, pg_cancel_backend: SQLSTATE 57014) is
    # about that statement, although its class 57 is "operator intervention": retried
    # forever it would hold up every record behind it; a real outage still shows as
    # the connection errors below on the next attempt.
    asyncpg.exceptions.QueryCanceledError,
)
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError, refused and reset sockets
    TimeoutError,  # a pool, lock or broker that does not answer in time
    # PostgreSQL: connection lost or refused (08), too many connections or disk full
    # (53), shutting down or restarting (57), serialization failure or deadlock (40),
    # a lock not available now (55P03), I/O error (58), a standby after a failover.
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.PostgresSystemError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    # Redis: unreachable, loading its data, a replica after a failover.
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    kafka_errors.KafkaError,
    LockTimeout,  # a presentity lock held elsewhere for longer than its wait
)


def classify(error: BaseException) -> Failure:
    """Whether `error`, raised by one record's handler, is an outage or the record's own."""
    if isinstance(error, BaseExceptionGroup):
        # Concurrent work inside a handler: an outage if any part of it met one.
        outage = any(classify(part) is Failure.OUTAGE for part in error.exceptions)
        return Failure.OUTAGE if outage else Failure.RECORD
    if isinstance(error, _RECORD_ERRORS):
        return Failure.RECORD
    if isinstance(error, _OUTAGE_ERRORS):
        return Failure.OUTAGE
    return Failure.RECORD
