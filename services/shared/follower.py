"""Follow one topic in a daemon thread: a service's side view of a topic it does not process as a stream.

ingest and budsjett follow the catalogue topic from the beginning (small, compacted); ingest follows
the dead-letter topic from where its store left off; milepael follows budsjett's totals (compacted). read_committed, so an aborted transaction's
records are never seen; nothing is committed to Kafka (the partitions are assigned, no group is
joined): the caller decides where to start.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.shared.config import Settings
from services.shared.kafka_security import client_config, consumer_group

log = logging.getLogger("reformspor.follower")
POLL_S = 0.5
BATCH_RECORDS = 500
RETRY_S = 2.0


@dataclass(frozen=True)
class FollowedRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def reached(consumer: Consumer, partitions: list[TopicPartition], ends: list[tuple[int, int]]) -> bool:
    """Has the consumer read every assigned partition up to the end offsets taken when it started? (Not the
    current ends: a topic written all the time would never be caught up with.)"""
    positions = consumer.position(partitions)
    # A negative position: nothing fetched yet; a transaction marker at the end is passed over by the position.
    return all(low >= high or position.offset >= high for position, (low, high) in zip(positions, ends))


class TopicFollower:
    """Hands every record of `topic` to `receive`, from `start_offsets()` (partition → offset; others from the
    beginning), then calls `after_batch` once per batch read. `caught_up` is set once it has read what the
    topic held when it started."""

    def __init__(self, settings: Settings, principal: str, topic: str, receive: Callable[[FollowedRecord], None],
                 start_offsets: Callable[[], dict[int, int]] = dict, name: str = "follower",
                 after_batch: Callable[[], None] = lambda: None):
        self.settings = settings
        self.principal = principal  # the service's own Kafka user: its ACLs must let it read the topic
        self.topic = topic
        self.receive = receive
        self.start_offsets = start_offsets
        self.name = name
        self.after_batch = after_batch
        self.error: str | None = None
        self.caught_up = threading.Event()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, timeout_s: float) -> bool:
        """Start following (again, if the thread stopped); wait up to timeout_s to be caught up. Returns caught up."""
        if self.thread is None or not self.thread.is_alive():
            self.stopping.clear()
            self.thread = threading.Thread(target=self.run, name=f"{self.principal}-{self.name}", daemon=True)
            self.thread.start()
        return self.caught_up.wait(timeout_s)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(RETRY_S + POLL_S + 5)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.follow_once()
            except Exception as error:  # noqa: BLE001 - the service goes on with what it has read, and says so
                repeated = self.error == f"{type(error).__name__}: {error}"
                self.error = f"{type(error).__name__}: {error}"
                if not repeated:  # once per kind of failure, not every RETRY_S
                    log.warning("%s: following %s failed (%s); trying again every %.0f s", self.name, self.topic,
                                self.error, RETRY_S)
                self.stopping.wait(RETRY_S)

    def follow_once(self) -> None:
        # The client needs a group id, but no group is joined and nothing committed: partitions are assigned.
        consumer = Consumer({**client_config(self.settings, self.principal),
                             "group.id": f"{consumer_group(self.settings, self.principal)}-{self.name}",
                             "enable.auto.commit": False, "isolation.level": "read_committed",
                             "client.id": f"{self.principal}-{self.name}"})
        try:
            described = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            if described.error is not None:
                self.caught_up.set()  # nothing to wait for
                raise RuntimeError(f"cannot read {self.topic}: {described.error}")
            starts = self.start_offsets()
            partitions = [TopicPartition(self.topic, p, starts.get(p, OFFSET_BEGINNING))
                          for p in sorted(described.partitions)]
            consumer.assign(partitions)
            self.poll(consumer, partitions)
        finally:
            consumer.close()

    def poll(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ends = [consumer.get_watermark_offsets(partition, timeout=10, cached=False) for partition in partitions]
        while not self.stopping.is_set():
            messages = consumer.consume(BATCH_RECORDS, POLL_S)
            for message in messages:
                if message.error() is not None:
                    raise RuntimeError(message.error().str())
                self.receive(FollowedRecord(message.partition(), message.offset(), message.key(), message.value(),
                                            tuple(message.headers() or ())))
            if messages:
                self.after_batch()
            self.error = None  # reading again after a failure
            if not self.caught_up.is_set() and reached(consumer, partitions, ends):
                self.caught_up.set()
