"""Rebuild budsjett's state and read model from the Kafka log (the log of record).

Reads every partition of the budget topic from offset 0 up to the end offsets
seen at start, through the same `core.process` as the live worker (same
offsets, so the same decisions), into a dict store and a fresh read model.
Cross-line credits are already in the log, so nothing is sent.
"""
from __future__ import annotations

from typing import Any, Callable

from kafka import KafkaConsumer, TopicPartition

from services.budsjett import core
from services.budsjett.catalogue import Catalogue
from services.budsjett.readmodel import Batch, ReadModel
from services.shared.config import Settings
from services.shared.contract import ContractError

BATCH_ROWS = 5000


def replay(settings: Settings, db_url: str, progress: Callable[[str], None] = print,
           catalogue: Catalogue | None = None) -> dict[str, Any]:
    if catalogue is None:
        try:
            live = ReadModel(settings.db_url("budsjett"))
            catalogue = Catalogue(live.load_catalogue())
            live.close()
        except Exception:  # noqa: BLE001 - no live read model: replay without catalogue checks
            catalogue = Catalogue()
    target = ReadModel(db_url)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=5000)
    store: dict[str, Any] = {}
    counts: dict[str, int] = {}
    try:
        topic = settings.topics.budget
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        total = sum(end.values())
        progress(f"Replaying {total} messages from {topic} ({len(partitions)} partitions) into {db_url}")
        done = {tp: False for tp in partitions if end[tp] > 0}
        batch = Batch()
        seen = 0
        while not all(done.values()):
            polled = consumer.poll(timeout_ms=1000, max_records=5000)
            if not polled and all(consumer.position(tp) >= end[tp] for tp in done):
                break
            for tp, records in polled.items():
                for record in records:
                    if record.offset >= end[tp]:
                        done[tp] = True
                        continue
                    seen += 1
                    try:
                        message = core.parse_message(record.value)
                    except ContractError:
                        counts["invalid"] = counts.get("invalid", 0) + 1
                        continue
                    if record.key is not None and record.key.decode("utf-8", "replace") != message.key:
                        counts["key_mismatch"] = counts.get("key_mismatch", 0) + 1
                        continue
                    outcome = core.process(store, record.offset, message, catalogue)
                    counts[outcome.status] = counts.get(outcome.status, 0) + 1
                    if outcome.status in ("applied", "redelivered") and outcome.effect:
                        batch.add(outcome, message, tp.partition, record.offset, record.value)
                    if record.offset + 1 >= end[tp]:
                        done[tp] = True
                if len(batch) >= BATCH_ROWS:
                    target.write(batch)
                    batch = Batch()
                    progress(f"  {seen}/{total} messages")
        target.write(batch)
    finally:
        consumer.close()
        target.close()
    progress(f"Done: {seen} messages; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    lines = []
    for line_id, line in sorted(core.lines_in(store).items()):
        cells = core.line_totals(line)["cells"]
        lines.append({"line_id": line_id, "totals": core.sum_amounts(cells),
                      "by_ministry": core.rollups(cells)["by_ministry"],
                      "flags": [{"ministry": key.split("|")[0], "flag": f} for key, c in line["cells"].items()
                                for f in core.FLAGS if c[f]]})
    return {"lines": lines, "counts": counts, "store": store}
