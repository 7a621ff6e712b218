"""Disk (and Redis) growth per notification: `python -m bench.disk [--notifications N]`.

One embedded Tansu broker, one Redis, the provider simulator and one worker (bench/stack.py).
Users and the bench template are seeded, the worker comes up, and then:

  baseline  the worker's data dir (one RocksDB per table partition), Redis INFO memory
  load      N requests preloaded on critical.requests (1 channel), all delivered
  measured  growth of each table's RocksDB files while the worker runs, after it stops
            cleanly (SIGTERM), after the databases are reopened (the WAL is replayed into
            SST files, as a restarted worker does) and after a full compaction (live
            entries only); bytes per record on every changelog and on the topics a
            notification touches; Redis memory and keys of the delivery ledger

Prints a table and writes bench/results/<UTC time>-disk.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import stack
from bench.run import RESULTS, machine
from clarion.topology import tansu
from clarion.topology.catalog import catalog
from clarion.topology.embedded import EmbeddedBroker, EmbeddedRedis
from clarion.topology.settings import Settings

TABLES = ("idempotency", "users", "status")
STAGES = ("running", "stopped", "reopened", "compacted")


# -- the worker's data dir ---------------------------------------------------------------


def file_kind(name: str) -> str:
    """What a file in a RocksDB directory is: sst, wal, info_log, manifest, options or other."""
    if name.endswith(".sst"):
        return "sst"
    if name.endswith(".log"):
        return "wal"
    if name.startswith("LOG"):
        return "info_log"
    if name.startswith("MANIFEST"):
        return "manifest"
    if name.startswith("OPTIONS"):
        return "options"
    return "other"


def table_of(db_dir: str) -> str:
    """`status-3.db` (or faust's `status-backups`) -> status."""
    return db_dir.removesuffix(".db").rsplit("-", 1)[0]


def is_table_dir(part: str) -> bool:
    return part.endswith((".db", "-backups"))


def data_dir_usage(root: Path) -> dict[str, Any]:
    """Bytes under `root` per table (`<table>-<partition>.db` directories) and per file kind."""
    tables: dict[str, Counter[str]] = defaultdict(Counter)
    for dirpath, _, files in os.walk(root):
        db = next((part for part in Path(dirpath).relative_to(root).parts if is_table_dir(part)), None)
        table = table_of(db) if db else "(not a table)"
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:  # a compaction removed it
                continue
            tables[table]["bytes"] += st.st_size
            tables[table]["allocated"] += st.st_blocks * 512
            tables[table][file_kind(name)] += st.st_size
            tables[table]["files"] += 1
    return {table: dict(counts) for table, counts in sorted(tables.items())}


def db_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.db") if p.is_dir())


def reopen(root: Path, compact: bool) -> dict[str, dict[str, int]]:
    """Open every table partition as faust does (replaying its WAL), optionally compact it fully;
    returns live keys and their key + value bytes per table."""
    from faust.stores.rocksdb import RocksDBOptions

    live: dict[str, Counter[str]] = defaultdict(Counter)
    for path in db_dirs(root):
        db = RocksDBOptions().open(path)
        try:
            if compact:
                db.compact_range(None, None)
            for key, value in db.items():
                live[table_of(path.name)]["keys"] += 1
                live[table_of(path.name)]["key_value_bytes"] += len(key) + len(value)
        finally:
            db.close()
    return {table: dict(counts) for table, counts in sorted(live.items())}


# -- topics -------------------------------------------------------------------------------


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def topics_of(settings: Settings) -> dict[str, tuple[str, int]]:
    """Logical name -> (Kafka topic, partitions), for every catalog topic and changelog."""
    out = {name: (spec.topic, spec.partitions) for name, spec in catalog(settings).items()}
    for table in TABLES:
        out[f"{table} changelog"] = (changelog_topic(settings, table), settings.critical_partitions)
    return out


def partitions_of(topics: dict[str, tuple[str, int]]) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for topic, parts in topics.values() for p in range(parts)]


async def end_offsets(settings: Settings, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Correct end offsets (Tansu's ListOffsets is off; see clarion/topology/tansu.py)."""
    return await tansu.fresh_end_offsets(settings.bootstrap_servers, tps)


async def settle(settings: Settings, quiet_s: float = 3.0, timeout_s: float = 120.0) -> None:
    """Wait until no topic (changelogs, outcomes, ...) has grown for `quiet_s`."""
    tps = partitions_of(topics_of(settings))
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        total = sum((await end_offsets(settings, tps)).values())
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"topics still growing after {timeout_s}s")


async def topic_usage(settings: Settings, topic: str, partitions: int) -> dict[str, int]:
    """Records, key/value/header bytes on every partition of `topic`, read to its end."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    ends = {tp: end for tp, end in (await end_offsets(settings, tps)).items() if end > 0}
    out = Counter({"records": 0, "tombstones": 0, "key_bytes": 0, "value_bytes": 0, "header_bytes": 0})
    if not ends:
        return dict(out)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    try:
        consumer.assign(list(ends))
        for tp in ends:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + 120
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).items():
                for r in records:
                    if r.offset >= ends[tp]:
                        continue
                    out["records"] += 1
                    out["tombstones"] += r.value is None
                    out["key_bytes"] += max(r.serialized_key_size, 0)
                    out["value_bytes"] += max(r.serialized_value_size, 0)
                    out["header_bytes"] += sum(len(k) + len(v or b"") for k, v in r.headers)
    finally:
        await consumer.stop()
    out["bytes"] = out["key_bytes"] + out["value_bytes"] + out["header_bytes"]
    return dict(out)


# -- Redis --------------------------------------------------------------------------------


async def redis_usage(url: str, prefix: str, sample: int = 200) -> dict[str, Any]:
    """used_memory, the ledger's key count, and MEMORY USAGE / TTL of a sample of its keys."""
    r = aioredis.from_url(url)
    try:
        info = await r.info("memory")
        keys = [key async for key in r.scan_iter(match=f"{prefix}:dlv:*", count=1000)]
        picked = keys[:: max(1, len(keys) // sample)][:sample]
        usage = [await r.memory_usage(k) or 0 for k in picked]
        ttls = [await r.ttl(k) for k in picked]
        values = [len(await r.get(k) or b"") for k in picked]
        return {
            "used_memory": info["used_memory"],
            "used_memory_dataset": info.get("used_memory_dataset"),
            "ledger_keys": len(keys),
            "ledger_key_sample": len(picked),
            "memory_usage_per_key": sum(usage) / len(usage) if usage else None,
            "key_name_bytes": sum(len(k) for k in picked) / len(picked) if picked else None,
            "value_bytes": sum(values) / len(values) if values else None,
            "ttl_s_min": min(ttls) if ttls else None,
            "ttl_s_max": max(ttls) if ttls else None,
        }
    finally:
        await r.aclose()


# -- the run ------------------------------------------------------------------------------


def growth(after: dict[str, Any], before: dict[str, Any], n: int) -> dict[str, Any]:
    """Per table: bytes grown in total and per notification, and the file kinds that grew."""
    out = {}
    for table in sorted(set(after) | set(before)):
        a, b = after.get(table, {}), before.get(table, {})
        delta = {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b)}
        data = delta.get("sst", 0) + delta.get("wal", 0)
        out[table] = {
            "bytes": delta.get("bytes", 0),
            "per_notification": delta.get("bytes", 0) / n,
            "data_per_notification": data / n,  # SST files + write-ahead log: what grows with entries
            "allocated_per_notification": delta.get("allocated", 0) / n,
            "by_kind_per_notification": {
                k: round(v / n, 2) for k, v in sorted(delta.items()) if k not in ("bytes", "allocated", "files") and v
            },
        }
    out["total"] = {
        "bytes": sum(v["bytes"] for v in out.values()),
        "per_notification": sum(v["per_notification"] for v in out.values()),
        "data_per_notification": sum(v["data_per_notification"] for v in out.values()),
        "allocated_per_notification": sum(v["allocated_per_notification"] for v in out.values()),
    }
    return out


async def measure(args: argparse.Namespace, broker: EmbeddedBroker, redis: EmbeddedRedis, run_dir: Path) -> dict:
    n, channels = args.notifications, [args.channel]
    sim, sim_url = stack.simulator(run_dir)
    try:
        settings = stack.settings_for(broker.bootstrap, redis.url, sim_url, run_dir, args.partitions)
        data_dir = Path(settings.data_dir)
        users = stack.users(args.users, channels)
        await stack.seed(settings, users)
        worker = stack.worker(settings, run_dir)
        try:
            await worker.wait_ready(timeout_s=120)
            await settle(settings)  # the users table folded, nothing else moving
            topics = topics_of(settings)
            topics_before = {name: await topic_usage(settings, t, p) for name, (t, p) in topics.items()}
            disk: dict[str, Any] = {"baseline": data_dir_usage(data_dir)}
            redis_before = await redis_usage(redis.url, settings.topic_prefix)

            started = time.monotonic()
            records = await stack.preload(settings, stack.requests(n, users, channels), args.per_record)
            before = (await stack.wait_for_deliveries(sim_url, 0, 10))["deliveries"]
            await stack.wait_for_deliveries(sim_url, before + n * len(channels), timeout_s=args.timeout)
            delivered_s = time.monotonic() - started
            await settle(settings)
            disk["running"] = data_dir_usage(data_dir)
            redis_after = await redis_usage(redis.url, settings.topic_prefix)
        finally:
            worker.stop(timeout_s=60)
        if worker.proc is not None and worker.proc.returncode not in (0, None):
            print(f"note: the worker exited with {worker.proc.returncode}; see {worker.log_path}")
        disk["stopped"] = data_dir_usage(data_dir)
        live = {"reopened": reopen(data_dir, compact=False)}
        disk["reopened"] = data_dir_usage(data_dir)
        live["compacted"] = reopen(data_dir, compact=True)
        disk["compacted"] = data_dir_usage(data_dir)
        topics_after = {name: await topic_usage(settings, t, p) for name, (t, p) in topics.items()}
    finally:
        sim.stop()

    per_topic = {}
    for name in topics:
        a, b = topics_after[name], topics_before[name]
        d = {k: a.get(k, 0) - b.get(k, 0) for k in a}
        if d["records"]:
            per_topic[name] = {
                "topic": topics[name][0],
                "records": d["records"],
                "tombstones": d["tombstones"],
                "bytes": d["bytes"],
                "records_per_notification": d["records"] / n,
                "bytes_per_notification": d["bytes"] / n,
                "bytes_per_record": d["bytes"] / d["records"],
                "key_bytes_per_record": d["key_bytes"] / d["records"],
                "value_bytes_per_record": d["value_bytes"] / d["records"],
                "header_bytes_per_record": d["header_bytes"] / d["records"],
            }
    deliveries = n * len(channels)
    ledger_keys = redis_after["ledger_keys"] - redis_before["ledger_keys"]
    s = settings
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "notifications": n,
        "channels": channels,
        "deliveries": deliveries,
        "requests_per_record": args.per_record,
        "request_records": records,
        "users": args.users,
        "partitions": args.partitions,
        "delivered_in_s": round(delivered_s, 1),
        "retention": {
            "status_retention_s": s.status_retention_s,
            "dedupe_window_s": s.dedupe_window_s,
            "dedupe_prune_interval_s": s.dedupe_prune_interval_s,
            "ledger_ttl_s": s.dedupe_window_s,
        },
        "rocksdb": {
            "growth": {stage: growth(disk[stage], disk["baseline"], n) for stage in STAGES},
            "live_entries": {
                stage: {
                    table: {**v, "per_notification": v["keys"] / n, "bytes_per_entry": v["key_value_bytes"] / v["keys"]}
                    for table, v in tables.items()
                }
                for stage, tables in live.items()
            },
            "raw": disk,
        },
        "topics": per_topic,
        "redis": {
            "before": redis_before,
            "after": redis_after,
            "ledger_keys_per_delivery": ledger_keys / deliveries,
            "used_memory_per_delivery": (redis_after["used_memory"] - redis_before["used_memory"]) / deliveries,
        },
        "run_dir": str(run_dir),
    }


def table(r: dict[str, Any]) -> str:
    rows = [("what", "bytes / notification", "detail")]
    rows.append(("(RocksDB stages)", " / ".join(STAGES), "running: after the last delivery; stopped: SIGTERM"))
    g = r["rocksdb"]["growth"]
    live = r["rocksdb"]["live_entries"]["compacted"]
    for name in [*TABLES, "(not a table)", "total"]:
        if name not in g["running"]:
            continue
        data = " / ".join(f"{g[stage][name]['data_per_notification']:,.0f}" for stage in STAGES)
        every = " / ".join(f"{g[stage][name]['per_notification']:,.0f}" for stage in STAGES)
        detail = f"every file: {every}"
        if name in live:
            lv = live[name]
            detail = f"{lv['per_notification']:.2f} live keys/notif, {lv['bytes_per_entry']:.0f} B k+v each; {detail}"
        rows.append((f"RocksDB {name}: SST + WAL", data, detail))
    for name, t in r["topics"].items():
        rows.append(
            (
                f"topic {name}",
                f"{t['bytes_per_notification']:,.1f}",
                f"{t['records_per_notification']:.3f} records/notif of {t['bytes_per_record']:,.0f} B "
                f"(key {t['key_bytes_per_record']:.0f}, headers {t['header_bytes_per_record']:.0f}); "
                f"{t['tombstones']} tombstones",
            )
        )
    red = r["redis"]
    after = red["after"]
    rows.append(
        (
            "Redis used_memory (per delivery)",
            f"{red['used_memory_per_delivery']:,.0f}",
            f"{red['ledger_keys_per_delivery']:.3f} ledger keys/delivery; "
            f"MEMORY USAGE {after['memory_usage_per_key']:.0f} B/key, TTL {after['ttl_s_min']}-{after['ttl_s_max']} s",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(tempfile.mkdtemp(prefix="clarion-disk-"))
    with EmbeddedBroker() as broker, EmbeddedRedis() as redis:
        results = await measure(args, broker, redis, run_dir)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stamp}-disk.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    ret = results["retention"]
    print(f"\nclarion disk growth, {results['date']}, {results['machine']}")
    print(
        f"{results['notifications']:,} notifications on {', '.join(results['channels'])}, "
        f"{results['partitions']} partitions, delivered in {results['delivered_in_s']} s; logs in {run_dir}"
    )
    print(
        f"status kept {ret['status_retention_s']:,.0f} s after its last change, idempotency keys and ledger keys "
        f"{ret['dedupe_window_s']:,.0f} s (pruned every {ret['dedupe_prune_interval_s']:,.0f} s)\n"
    )
    print(table(results))
    print(f"\nwritten to {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.disk", description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--notifications", type=int, default=20_000)
    parser.add_argument("--channel", default="sms")
    parser.add_argument("--per-record", type=int, default=100, help="requests per preloaded record")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=4, help="partitions of every topic (dev default: 4)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the deliveries")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
