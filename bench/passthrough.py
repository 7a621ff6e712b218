"""The ceiling: a bare aiokafka consume -> produce loop, no framework, no work per record.

Run as its own process by bench/run.py: reads N preloaded records from one topic and
writes each to another, as fast as the broker and the client allow. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def passthrough(bootstrap: str, source: str, target: str, expected: int) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await consumer.start()
    await producer.start()
    seen = 0
    started = cpu0 = 0.0
    try:
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if batches and not started:
                started, cpu0 = time.monotonic(), time.process_time()
            for tp, records in batches.items():
                for record in records:
                    await producer.send(target, record.value, key=record.key, partition=tp.partition)
                seen += len(records)
        await producer.flush()
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu0
    finally:
        await consumer.stop()
        await producer.stop()
    return {"records": seen, "seconds": elapsed, "records_per_s": seen / elapsed, "cpu_us_per_record": cpu / seen * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bootstrap")
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("expected", type=int)
    args = parser.parse_args()
    result = asyncio.run(passthrough(args.bootstrap, args.source, args.target, args.expected))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
