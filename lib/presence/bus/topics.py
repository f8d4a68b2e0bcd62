"""Kafka topic and consumer-group names, and their creation: python -m presence.bus.topics

  sip.requests        sip-edge -> presence-store    key: presentity AOR
  presence.changes    presence-store -> notifier    key: presentity AOR
  sip.edge.<edge_id>  store, notifier -> one edge   replies and NOTIFY requests
  sip.notify-outcomes sip-edge -> presence-store    key: presentity AOR
  dead-letters        store, notifier -> operators  records given up on (presencectl)

PRESENCE_KAFKA_NAMESPACE prefixes every name, so that two deployments (or a test
run beside `make run`) can share one broker without reading each other's records.
Services also ensure their topics at start, so start order does not matter.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from presence import settings as settings_module
from presence.runtime.kafka import BusUnavailable, ensure_topics
from presence.settings import Settings

# Dead letters are few and read by people: one partition, kept for 30 days.
DEAD_LETTER_PARTITIONS = 1
DEAD_LETTER_RETENTION_MS = 30 * 24 * 3600 * 1000


@dataclass(frozen=True)
class Topics:
    namespace: str = ""

    def _name(self, base: str) -> str:
        return f"{self.namespace}.{base}" if self.namespace else base

    @property
    def requests(self) -> str:
        return self._name("sip.requests")

    @property
    def changes(self) -> str:
        return self._name("presence.changes")

    @property
    def notify_outcomes(self) -> str:
        return self._name("sip.notify-outcomes")

    @property
    def dead_letters(self) -> str:
        """Records a consumer gave up on (presence.bus.isolation), for operators."""
        return self._name("dead-letters")

    def edge_inbox(self, edge_id: str) -> str:
        """The topic one sip-edge replica reads its replies and NOTIFY requests from."""
        return self._name(f"sip.edge.{edge_id}")

    def group(self, service: str) -> str:
        return self._name(service)

    @property
    def lock_prefix(self) -> str:
        """Redis keys of the presentity locks: deployments sharing a Redis keep apart."""
        return f"presence:{self.namespace}:lock:" if self.namespace else "presence:lock:"

    @classmethod
    def of(cls, settings: Settings) -> Topics:
        return cls(settings.kafka_namespace)


def shared_topics(settings: Settings) -> dict[str, int]:
    """Every topic but the edges' inboxes, with its partition count. Those keyed by
    presentity have PRESENCE_KAFKA_PARTITIONS: it bounds how many store and notifier
    replicas can share the work."""
    topics = Topics.of(settings)
    return {
        **{
            topic: settings.kafka_partitions
            for topic in (topics.requests, topics.changes, topics.notify_outcomes)
        },
        topics.dead_letters: DEAD_LETTER_PARTITIONS,
    }


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Broker settings of the topics that do not keep the broker's defaults."""
    return {Topics.of(settings).dead_letters: {"retention.ms": str(DEAD_LETTER_RETENTION_MS)}}


async def ensure_shared_topics(settings: Settings) -> None:
    await ensure_topics(settings.kafka_bootstrap, shared_topics(settings), topic_configs(settings))


def main() -> None:
    try:
        settings = settings_module.load()
        topics = shared_topics(settings)
        asyncio.run(ensure_shared_topics(settings))
    except (settings_module.SettingsError, BusUnavailable) as error:
        sys.exit(f"topics: {error}")
    print(
        "kafka topics: "
        + ", ".join(f"{name} ({count} partitions)" for name, count in topics.items())
    )


if __name__ == "__main__":
    main()
