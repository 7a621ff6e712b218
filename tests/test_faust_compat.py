"""Every faust/aiokafka internal clarion touches (clarion/topology/faust_compat.py) is still there.

These fail, naming the internal, on an upgrade that moves one: read the new version's
source, mend faust_compat.py, then widen TESTED_WITH.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version
from pathlib import Path

import aiokafka
import faust
import pytest
from faust.stores import rocksdb
from faust.transport.consumer import Consumer

from clarion.topology import faust_compat

ROOT = Path(__file__).resolve().parent.parent / "clarion"


@pytest.mark.parametrize(("package", "prefixes"), faust_compat.TESTED_WITH)
def test_the_installed_versions_are_the_ones_read(package: str, prefixes: str | tuple[str, ...]) -> None:
    installed = version(package)
    assert installed.startswith(prefixes), f"{package} {installed}: faust_compat.py was read against {prefixes}"


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("_create_worker_consumer", ["self", "transport"]),
        ("_fetch_records", ["self", "consumer", "active_partitions", "timeout", "max_records"]),
        ("_highwaters", ["self", "partitions"]),
    ],
)
def test_the_patched_consumer_thread_methods_keep_their_signatures(name: str, parameters: list[str]) -> None:
    assert name in faust_compat.PATCHED_THREAD_METHODS
    method = faust_compat.original_thread_method(name)
    assert list(inspect.signature(method).parameters) == parameters, f"AIOKafkaConsumerThread.{name} changed"


def test_a_patch_keeps_fausts_own_method_and_can_be_made_twice() -> None:
    own = faust_compat.original_thread_method("_highwaters")
    current = faust_compat.consumer_thread()._highwaters
    try:
        faust_compat.patch_thread_method("_highwaters", lambda self, partitions: None)
        faust_compat.patch_thread_method("_highwaters", lambda self, partitions: None)
        assert faust_compat.original_thread_method("_highwaters") is own
    finally:
        faust_compat.consumer_thread()._highwaters = current


def _sets(cls: type, attribute: str) -> bool:
    return f"self.{attribute} " in inspect.getsource(cls) or f"self.{attribute}:" in inspect.getsource(cls)


@pytest.mark.parametrize("attribute", ["_acked", "_committed_offset", "_unacked_messages"])
def test_fausts_consumer_keeps_its_offset_bookkeeping(attribute: str) -> None:
    assert _sets(Consumer, attribute), f"faust Consumer no longer sets {attribute} (topology/gaps.py reads it)"


@pytest.mark.parametrize("attribute", ["_fetch_max_wait_ms", "_fetcher", "_subscription"])
def test_aiokafkas_consumer_keeps_its_fetch_internals(attribute: str) -> None:
    assert _sets(aiokafka.AIOKafkaConsumer, attribute), f"AIOKafkaConsumer no longer sets {attribute}"


def test_aiokafkas_fetcher_reads_its_own_wait() -> None:
    from aiokafka.consumer.fetcher import Fetcher

    assert _sets(Fetcher, "_fetch_max_wait_ms")


def test_aiokafkas_partition_state_has_what_lagging_reads() -> None:
    from aiokafka.consumer.subscription_state import Assignment, TopicPartitionState

    assert hasattr(Assignment, "state_value") and hasattr(Assignment, "tps")
    for attribute in ("paused", "has_valid_position", "position"):
        assert hasattr(TopicPartitionState, attribute), attribute
    assert _sets(TopicPartitionState, "highwater")


@pytest.mark.parametrize("method", ["_db_for_partition", "set_persisted_offset"])
def test_the_rocksdb_store_keeps_its_partition_databases(method: str) -> None:
    assert callable(getattr(rocksdb.Store, method, None)), f"faust's RocksDB Store lost {method}"


def test_the_rocksdb_store_keeps_its_offset_key_table_and_app() -> None:
    assert "offset_key" in inspect.getsource(rocksdb.Store)
    from faust.stores.base import Store

    assert _sets(Store, "table") and _sets(Store, "app")
    from faust.tables.base import Collection

    assert isinstance(inspect.getattr_static(Collection, "changelog_topic_name"), property)


def test_an_asyncio_queue_is_still_a_deque_underneath() -> None:
    queue: asyncio.Queue[object] = asyncio.Queue()
    queue.put_nowait(type("Event", (), {"message": "m"})())
    assert faust_compat.peek_message(queue) == "m"
    assert queue.qsize() == 1


def test_the_app_has_what_guard_and_schedule_read() -> None:
    for attribute in ("consumer_generation_id", "assignor", "tables", "flow_control", "rebalancing"):
        assert hasattr(faust.App, attribute), attribute
    from faust.assignor import PartitionAssignor
    from faust.tables.recovery import Recovery

    assert callable(PartitionAssignor.assigned_actives)
    assert _sets(Recovery, "completed")


def test_no_module_but_faust_compat_reaches_into_faust_or_aiokafka_internals() -> None:
    names = ["assigned_actives", "recovery.completed", "_queue[", "_committed_offset", "_unacked_messages",
             "._acked", "_db_for_partition", "_dbs_for_actives", "_fetch_max_wait_ms", "._fetcher",
             "._subscription", "AIOKafkaConsumerThread", "consumer_generation_id", "data.offset_key"]  # fmt: skip
    found = [
        f"{path.relative_to(ROOT.parent)}: {name}"
        for path in ROOT.rglob("*.py")
        if path.name != "faust_compat.py"
        for name in names
        if name in path.read_text()
    ]
    assert not found, found


def test_aiokafkas_fetcher_close_is_the_one_the_patch_replaces() -> None:
    """faust_compat.patch_fetcher_close repeats aiokafka's close but for how it awaits cancelled tasks."""
    from aiokafka.consumer.fetcher import Fetcher

    faust_compat.patch_fetcher_close()
    faust_compat.patch_fetcher_close()  # twice: still aiokafka's own underneath
    original = Fetcher.close._clarion_original
    assert not hasattr(original, "_clarion_original")
    source = inspect.getsource(original)
    for line in ("self._fetch_task.cancel()", "self._fetch_waiters", "self._notify(waiter)", "self._pending_tasks",
                 faust_compat.FETCHER_CLOSE_AWAITS):  # fmt: skip
        assert line in source, f"aiokafka's Fetcher.close no longer has {line!r}: read it again"


async def test_a_fetcher_closed_with_a_fetch_sleeping_between_retries_closes_quietly() -> None:
    from aiokafka.consumer.fetcher import Fetcher

    faust_compat.patch_fetcher_close()

    class Stub:  # what close reads of a Fetcher
        _closed = False
        _fetch_waiters: set[asyncio.Future[None]] = set()
        _notify = Fetcher._notify

    stub = Stub()
    stub._fetch_task = asyncio.ensure_future(asyncio.sleep(60))
    waiter = asyncio.get_running_loop().create_future()
    stub._fetch_waiters = {waiter}
    stub._pending_tasks = {asyncio.ensure_future(asyncio.sleep(60)) for _ in range(2)}
    await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):  # aiokafka's own close: what crashed a stopping worker
        await Fetcher.close._clarion_original(stub)
    stub._pending_tasks = {asyncio.ensure_future(asyncio.sleep(60)) for _ in range(2)}
    await asyncio.sleep(0)
    await Fetcher.close(stub)
    assert stub._closed and waiter.done() and all(task.cancelled() for task in stub._pending_tasks)
