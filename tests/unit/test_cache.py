"""The model cache on its own: a real directory source, real archives, a fake model server.

The registry is an in-memory test double of the model server port (the real one, over
MMS's management API, is exercised by tests/integration/test_local_*.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from scorer.cache import (
    HOST_MEMORY,
    Budget,
    CacheSettings,
    DirectorySource,
    ExtractedSizeMeter,
    InvalidModelKeyError,
    ModelCache,
    ModelNotReadyError,
    ResidentModel,
    host_memory_budget,
    model_hash,
    validate_model_key,
)
from scorer.errors import (
    InsufficientMemoryError,
    ModelAlreadyRegisteredError,
    ModelLoadFailedError,
    ModelNotFoundError,
)
from scorer.models.archive import ArchiveError, UnsafeArchiveError, pack_files

T = TypeVar("T")

pytestmark = pytest.mark.timeout(30)


class FakeRegistry:
    """An in-memory model server: loads what it is told, can be gated, scripted or full."""

    def __init__(self, capacity: int | None = None) -> None:
        self.loaded: dict[str, Path] = {}
        self.calls: list[tuple[str, str]] = []
        self.memory: dict[str, int] = {}
        self.script: dict[str, list[Exception]] = {}
        self.gate: asyncio.Event | None = None
        self.capacity = capacity
        self.closed = False

    async def register(self, name: str, model_dir: Path) -> None:
        self.calls.append(("register", name))
        assert model_dir.is_dir() and model_dir.name == "model"
        if self.gate is not None:
            await self.gate.wait()
        errors = self.script.get(name)
        if errors:
            raise errors.pop(0)
        if name in self.loaded:
            raise ModelAlreadyRegisteredError(f"{name} is loaded")
        if self.capacity is not None and len(self.loaded) >= self.capacity:
            raise InsufficientMemoryError("out of memory")
        self.loaded[name] = model_dir

    async def unregister(self, name: str) -> None:
        self.calls.append(("unregister", name))
        self.loaded.pop(name, None)

    async def memory_bytes(self, name: str) -> int | None:
        return self.memory.get(name)

    async def aclose(self) -> None:
        self.closed = True

    def registrations(self, name: str) -> int:
        return self.calls.count(("register", name))


class CountingSource(DirectorySource):
    """The real directory source, counting fetches."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fetches: list[str] = []

    async def fetch(self, key: str, dest: Path, max_bytes: int) -> int:
        self.fetches.append(key)
        return await super().fetch(key, dest, max_bytes)


def archive(prefix: Path, key: str, payload: bytes = b"weights", **extra: bytes) -> Path:
    path = prefix / key
    path.parent.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path | bytes] = {
        "spec.json": json.dumps({"name": key}).encode(),
        "model.bin": payload,
        **{name.replace("__", "/"): data for name, data in extra.items()},
    }
    pack_files(files, path)
    return path


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    root = tmp_path / "prefix"
    root.mkdir()
    for key in ("a.tar.gz", "b.tar.gz", "c.tar.gz", "market/fr.tar.gz"):
        archive(root, key, payload=key.encode() * 10)
    return root


def make_cache(
    tmp_path: Path, prefix: Path, registry: FakeRegistry | None = None, **kwargs: Any
) -> tuple[ModelCache, FakeRegistry, CountingSource]:
    registry = registry or FakeRegistry()
    source = CountingSource(prefix)
    cache = ModelCache(source, registry, tmp_path / "cache", **kwargs)
    return cache, registry, source


def run(cache: ModelCache, body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        await cache.start()
        try:
            return await body()
        finally:
            await cache.aclose()

    return asyncio.run(main())


async def touch(cache: ModelCache, key: str) -> ResidentModel:
    async with cache.use(key) as model:
        return model


def cache_listing(cache: ModelCache) -> list[str]:
    return sorted(p.name for p in cache.root.iterdir())


# --------------------------------------------------------------------------- loading


def test_cold_load_then_warm_hit(
    tmp_path: Path, prefix: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache, registry, source = make_cache(tmp_path, prefix)
    caplog.set_level(logging.INFO, logger="scorer.cache")

    async def body() -> tuple[ResidentModel, ResidentModel]:
        first = await touch(cache, "market/fr.tar.gz")
        second = await touch(cache, "market/fr.tar.gz")
        return first, second

    first, second = run(cache, body)
    name = model_hash("market/fr.tar.gz")
    assert first.name == second.name == name
    assert first.key == "market/fr.tar.gz"
    assert first.model_dir == cache.root / name / "model"
    assert (first.model_dir / "model.bin").read_bytes() == b"market/fr.tar.gz" * 10
    assert first.in_flight == 1 and first.archive_bytes > 0 and first.extracted_bytes > 0
    assert source.fetches == ["market/fr.tar.gz"]
    assert registry.calls == [("register", name)]
    assert registry.closed  # the cache closes its registry
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads, stats.failures) == (1, 1, 1, 0)
    assert stats.hit_rate == 0.5
    assert stats.resident_models == ("market/fr.tar.gz",)
    assert stats.last_load_ms is not None and stats.last_load_ms >= 0
    assert cache_listing(cache) == [name]  # no temporaries left
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "scorer.cache"]
    assert [line["event"] for line in lines] == ["cache.load", "cache.miss", "cache.hit"]
    for line in lines:
        assert line["model"] == "market/fr.tar.gz"
        assert {"bytes", "ms", "time"} <= line.keys()
    assert lines[0]["bytes"] == first.extracted_bytes
    assert set(lines[0]["phases_ms"]) == {"fetch", "extract", "make_room", "register"}
    assert all(ms >= 0 for ms in lines[0]["phases_ms"].values())
    archive_bytes = (prefix / "market/fr.tar.gz").read_bytes()
    assert lines[0]["sha256"] == hashlib.sha256(archive_bytes).hexdigest()


def test_event_lines_follow_the_log_format(
    tmp_path: Path, prefix: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache, _, _ = make_cache(tmp_path, prefix, log_format="text")
    caplog.set_level(logging.INFO, logger="scorer.cache")
    run(cache, lambda: touch(cache, "market/fr.tar.gz"))
    lines = [r.getMessage() for r in caplog.records if r.name == "scorer.cache"]
    assert [line.split(" ", 1)[0] for line in lines] == ["cache.load", "cache.miss"]
    assert all(" model=market/fr.tar.gz " in line for line in lines), lines


def test_exactly_one_load_for_eight_concurrent_first_requests(tmp_path: Path, prefix: Path) -> None:
    cache, registry, source = make_cache(tmp_path, prefix)

    async def body() -> list[ResidentModel]:
        registry.gate = asyncio.Event()
        requests = [asyncio.create_task(touch(cache, "a.tar.gz")) for _ in range(8)]
        await asyncio.sleep(0.05)
        assert cache.stats().loading == ("a.tar.gz",)
        registry.gate.set()
        return await asyncio.gather(*requests)

    models = run(cache, body)
    assert {m.name for m in models} == {model_hash("a.tar.gz")}
    assert source.fetches == ["a.tar.gz"]
    assert registry.registrations(model_hash("a.tar.gz")) == 1
    stats = cache.stats()
    assert (stats.loads, stats.misses, stats.hits) == (1, 8, 0)


def test_a_request_for_a_loading_model_waits_for_it(tmp_path: Path, prefix: Path) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix)

    async def body() -> None:
        registry.gate = asyncio.Event()
        first = asyncio.create_task(touch(cache, "b.tar.gz"))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(touch(cache, "b.tar.gz"))
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()
        registry.gate.set()
        assert (await first).name == (await second).name

    run(cache, body)
    assert cache.stats().loads == 1


def test_wait_budget_exceeded_is_model_not_ready_and_the_load_goes_on(
    tmp_path: Path, prefix: Path
) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix, load_wait_s=0.1)

    async def body() -> ResidentModel:
        registry.gate = asyncio.Event()
        with pytest.raises(ModelNotReadyError) as raised:
            await touch(cache, "a.tar.gz")
        assert raised.value.status_code == 429
        assert "still loading" in raised.value.message
        assert cache.stats().loading == ("a.tar.gz",)
        registry.gate.set()
        for _ in range(50):
            if cache.stats().loads:
                break
            await asyncio.sleep(0.01)
        return await touch(cache, "a.tar.gz")

    model = run(cache, body)
    assert model.key == "a.tar.gz"
    stats = cache.stats()
    assert (stats.loads, stats.misses, stats.hits) == (1, 1, 1)


# --------------------------------------------------------------------------- eviction


def test_lru_eviction_at_the_model_count_limit(tmp_path: Path, prefix: Path) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix, max_models=2)

    async def body() -> None:
        await touch(cache, "a.tar.gz")
        await touch(cache, "b.tar.gz")
        await touch(cache, "a.tar.gz")  # b is now the least recently used
        await touch(cache, "c.tar.gz")

    run(cache, body)
    assert cache.stats().resident_models == ("a.tar.gz", "c.tar.gz")
    assert cache.stats().evictions == 1
    assert ("unregister", model_hash("b.tar.gz")) in registry.calls
    assert set(registry.loaded) == {model_hash("a.tar.gz"), model_hash("c.tar.gz")}
    assert cache_listing(cache) == sorted([model_hash("a.tar.gz"), model_hash("c.tar.gz")])


def test_lru_eviction_at_the_host_memory_budget(tmp_path: Path, prefix: Path) -> None:
    registry = FakeRegistry()
    for key, size in (("a.tar.gz", 100), ("b.tar.gz", 100), ("c.tar.gz", 100)):
        registry.memory[model_hash(key)] = size
    budget = host_memory_budget(250, registry)
    cache, _, _ = make_cache(tmp_path, prefix, registry, budgets=[budget])

    async def body() -> None:
        await touch(cache, "a.tar.gz")
        await touch(cache, "b.tar.gz")
        await cache.settle()
        assert cache.stats().footprint[HOST_MEMORY] == 200
        await touch(cache, "c.tar.gz")  # the estimate (mean: 100) makes room first
        await cache.settle()

    run(cache, body)
    stats = cache.stats()
    assert stats.resident_models == ("b.tar.gz", "c.tar.gz")
    assert stats.footprint[HOST_MEMORY] == 200
    assert stats.evictions == 1


def test_memory_budget_measured_after_load_evicts_when_the_estimate_was_low(
    tmp_path: Path, prefix: Path
) -> None:
    registry = FakeRegistry()
    registry.memory[model_hash("a.tar.gz")] = 10
    registry.memory[model_hash("b.tar.gz")] = 500  # much bigger than estimated
    cache, _, _ = make_cache(
        tmp_path, prefix, registry, budgets=[host_memory_budget(300, registry)]
    )

    async def body() -> None:
        await touch(cache, "a.tar.gz")
        await cache.settle()
        await touch(cache, "b.tar.gz")
        await cache.settle()

    run(cache, body)
    assert cache.stats().resident_models == ("b.tar.gz",)  # never the model just loaded


class GatedMeter:
    """A footprint meter that answers only when its gate opens (a slow nvidia-smi)."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.gate = asyncio.Event()
        self.calls = 0

    async def measure(self, model: ResidentModel) -> int | None:
        self.calls += 1
        await self.gate.wait()
        return self.value


def test_a_first_request_does_not_wait_for_the_footprint_measurement(
    tmp_path: Path, prefix: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scorer.cache")
    meter = GatedMeter(500)
    cache, _, _ = make_cache(tmp_path, prefix, budgets=[Budget("gpu_memory", 600, meter)])

    async def body() -> None:
        first = await touch(cache, "a.tar.gz")  # served while the meter has not answered
        assert meter.calls == 1
        assert first.footprint == {"gpu_memory": first.extracted_bytes}  # the estimate
        meter.gate.set()
        await cache.settle()
        assert cache.resident()[0].footprint == {"gpu_memory": 500}
        await touch(cache, "b.tar.gz")  # estimated at 500: a is evicted to make room
        await cache.settle()

    run(cache, body)
    assert cache.stats().resident_models == ("b.tar.gz",)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "scorer.cache"]
    measured = [line for line in lines if line["event"] == "cache.measure"]
    assert [line["model"] for line in measured] == ["a.tar.gz", "b.tar.gz"]
    assert measured[0]["footprint"] == {"gpu_memory": 500}


def test_a_model_evicted_before_its_measurement_is_not_counted(
    tmp_path: Path, prefix: Path
) -> None:
    meter = GatedMeter(500)
    cache, _, _ = make_cache(tmp_path, prefix, budgets=[Budget("gpu_memory", 1 << 30, meter)])

    async def body() -> None:
        await touch(cache, "a.tar.gz")
        assert await cache.evict("a.tar.gz")
        meter.gate.set()
        await cache.settle()

    run(cache, body)
    assert cache.resident() == ()
    assert cache.stats().footprint["gpu_memory"] == 0


def test_unknown_footprint_falls_back_to_the_extracted_size(tmp_path: Path, prefix: Path) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix)
    cache.budgets = (
        host_memory_budget(1 << 30, registry),
        Budget("gpu_memory", 1 << 30, ExtractedSizeMeter()),
    )

    async def body() -> ResidentModel:
        model = await touch(cache, "a.tar.gz")
        await cache.settle()
        return model

    model = run(cache, body)
    resident = cache.resident()[0]
    assert resident.footprint == {
        HOST_MEMORY: model.extracted_bytes,
        "gpu_memory": model.extracted_bytes,
    }


def test_a_model_in_use_is_never_evicted(tmp_path: Path, prefix: Path) -> None:
    cache, _, _ = make_cache(tmp_path, prefix, max_models=1)

    async def body() -> None:
        async with cache.use("a.tar.gz"):
            await touch(cache, "b.tar.gz")
            # over the limit while a is held: a stays, b (idle, least recent) is not yet
            assert "a.tar.gz" in cache.stats().resident_models
        for _ in range(50):  # released: the limit is enforced in the background
            if len(cache.stats().resident_models) == 1:
                break
            await asyncio.sleep(0.01)
        assert len(cache.stats().resident_models) == 1

    run(cache, body)


def test_507_evicts_the_lru_model_and_retries_once(tmp_path: Path, prefix: Path) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix, FakeRegistry(capacity=2))

    async def body() -> None:
        await touch(cache, "a.tar.gz")
        await touch(cache, "b.tar.gz")
        await touch(cache, "c.tar.gz")

    run(cache, body)
    assert cache.stats().resident_models == ("b.tar.gz", "c.tar.gz")
    assert registry.registrations(model_hash("c.tar.gz")) == 2


def test_a_second_507_surfaces_and_leaves_nothing(tmp_path: Path, prefix: Path) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix, FakeRegistry(capacity=1))
    registry.script[model_hash("b.tar.gz")] = [
        InsufficientMemoryError("oom"),
        InsufficientMemoryError("oom again"),
    ]

    async def body() -> None:
        await touch(cache, "a.tar.gz")
        with pytest.raises(InsufficientMemoryError) as raised:
            await touch(cache, "b.tar.gz")
        assert raised.value.status_code == 507
        assert "'b.tar.gz' does not fit" in raised.value.message

    run(cache, body)
    assert cache.stats().resident_models == ()  # a was evicted for the retry
    assert cache.stats().failures == 1
    assert cache_listing(cache) == []


def test_explicit_evict(tmp_path: Path, prefix: Path) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix)

    async def body() -> tuple[bool, bool]:
        await touch(cache, "a.tar.gz")
        return await cache.evict("a.tar.gz"), await cache.evict("a.tar.gz")

    assert run(cache, body) == (True, False)
    assert registry.loaded == {}
    assert cache_listing(cache) == []


def test_discard_forgets_a_model_the_server_lost(tmp_path: Path, prefix: Path) -> None:
    cache, registry, source = make_cache(tmp_path, prefix)

    async def body() -> None:
        async with cache.use("a.tar.gz") as model:
            registry.loaded.clear()  # the server restarted
            await cache.discard(model)
        await touch(cache, "a.tar.gz")

    run(cache, body)
    assert source.fetches == ["a.tar.gz", "a.tar.gz"]
    assert cache.stats().resident_models == ("a.tar.gz",)


def test_unload_on_close(tmp_path: Path, prefix: Path) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix)

    async def main() -> None:
        await cache.start()
        await touch(cache, "a.tar.gz")
        await cache.aclose(unload=True)

    asyncio.run(main())
    assert registry.loaded == {} and cache_listing(cache) == []


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs.tar.gz",
        "../up.tar.gz",
        "a/../../b.tar.gz",
        "a/./b.tar.gz",
        "a//b.tar.gz",
        "dir\\model.tar.gz",
        "nul\x00.tar.gz",
        "tab\t.tar.gz",
        " padded.tar.gz",
        "x" * 1025,
    ],
)
def test_unsafe_keys_are_refused_before_anything_is_fetched(
    tmp_path: Path, prefix: Path, key: str
) -> None:
    cache, registry, source = make_cache(tmp_path, prefix)
    with pytest.raises(InvalidModelKeyError) as raised:
        run(cache, lambda: touch(cache, key))
    assert raised.value.status_code == 400
    assert source.fetches == [] and registry.calls == []
    assert cache_listing(cache) == []


def test_valid_keys() -> None:
    for key in ("creative-v3.tar.gz", "market/fr.tar.gz", "a b.tar.gz", "x" * 1024):
        assert validate_model_key(key) == key
    assert len(model_hash("creative-v3.tar.gz")) == 32


@pytest.mark.parametrize("key", ["missing.tar.gz", "market", "market/missing.tar.gz"])
def test_unknown_model_is_not_found(tmp_path: Path, prefix: Path, key: str) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix)
    with pytest.raises(ModelNotFoundError) as raised:
        run(cache, lambda: touch(cache, key))
    assert raised.value.status_code == 404
    assert "not found" in raised.value.message or "not a file" in raised.value.message
    assert registry.calls == [] and cache_listing(cache) == []
    assert cache.stats().failures == 1


def test_a_symlink_out_of_the_prefix_is_not_found(tmp_path: Path, prefix: Path) -> None:
    outside = archive(tmp_path, "outside.tar.gz")
    (prefix / "escape.tar.gz").symlink_to(outside)
    cache, _, _ = make_cache(tmp_path, prefix)
    with pytest.raises(ModelNotFoundError):
        run(cache, lambda: touch(cache, "escape.tar.gz"))


def _truncated(prefix: Path) -> None:
    good = (prefix / "a.tar.gz").read_bytes()
    (prefix / "bad.tar.gz").write_bytes(good[: len(good) // 2])


def _not_a_tar(prefix: Path) -> None:
    (prefix / "bad.tar.gz").write_bytes(b"this is not an archive at all" * 10)


def _traversal(prefix: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    (prefix / "bad.tar.gz").write_bytes(buf.getvalue())


@pytest.mark.parametrize("make_bad", [_truncated, _not_a_tar, _traversal])
def test_corrupt_or_unsafe_archive_is_4xx_and_leaves_the_cache_clean(
    tmp_path: Path, prefix: Path, make_bad: Callable[[Path], None]
) -> None:
    make_bad(prefix)
    cache, registry, _ = make_cache(tmp_path, prefix)

    async def body() -> None:
        await touch(cache, "a.tar.gz")
        with pytest.raises(ArchiveError) as raised:
            await touch(cache, "bad.tar.gz")
        assert 400 <= raised.value.status_code < 500
        assert "bad.tar.gz" in raised.value.message or "member" in raised.value.message
        await touch(cache, "a.tar.gz")  # the other model keeps serving

    run(cache, body)
    assert cache_listing(cache) == [model_hash("a.tar.gz")]
    assert registry.registrations(model_hash("bad.tar.gz")) == 0
    assert not (tmp_path / "evil.txt").exists()
    assert cache.stats().failures == 1


@pytest.mark.parametrize("make_bad", [_truncated, _traversal])
def test_a_refused_archive_evicts_nothing(
    tmp_path: Path, prefix: Path, make_bad: Callable[[Path], None]
) -> None:
    """Checked and extracted in one pass before room is made: a bad archive costs no model."""
    make_bad(prefix)
    cache, registry, _ = make_cache(tmp_path, prefix, max_models=1)

    async def body() -> None:
        await touch(cache, "a.tar.gz")
        with pytest.raises(ArchiveError):
            await touch(cache, "bad.tar.gz")

    run(cache, body)
    assert cache.stats().resident_models == ("a.tar.gz",)
    assert cache.stats().evictions == 0
    assert ("unregister", model_hash("a.tar.gz")) not in registry.calls
    assert cache_listing(cache) == [model_hash("a.tar.gz")]


def test_a_directory_source_links_the_archive_and_leaves_it_intact(
    tmp_path: Path, prefix: Path
) -> None:
    source = DirectorySource(prefix)
    dest = tmp_path / "fetched.tar.gz"
    size = asyncio.run(source.fetch("a.tar.gz", dest, 1 << 30))
    original = prefix / "a.tar.gz"
    assert size == original.stat().st_size
    assert os.path.samefile(dest, original)  # linked, not copied
    dest.unlink()
    assert original.stat().st_nlink == 1 and original.stat().st_size == size


def test_a_directory_source_copies_where_it_cannot_link(
    tmp_path: Path, prefix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(*args: Any, **kwargs: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr("scorer.cache.sources.os.link", no_link)
    dest = tmp_path / "fetched.tar.gz"
    asyncio.run(DirectorySource(prefix).fetch("a.tar.gz", dest, 1 << 30))
    assert not os.path.samefile(dest, prefix / "a.tar.gz")
    assert dest.read_bytes() == (prefix / "a.tar.gz").read_bytes()


def test_a_directory_source_never_links_a_file_other_than_the_one_it_opened(
    tmp_path: Path, prefix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key's path is replaced between the open and the link: the opened file is copied."""
    real_link = os.link

    def swapped(src: Any, dst: Any, **kwargs: Any) -> None:
        real_link(prefix / "b.tar.gz", dst, **kwargs)

    monkeypatch.setattr("scorer.cache.sources.os.link", swapped)
    dest = tmp_path / "fetched.tar.gz"
    asyncio.run(DirectorySource(prefix).fetch("a.tar.gz", dest, 1 << 30))
    assert dest.read_bytes() == (prefix / "a.tar.gz").read_bytes()
    assert (prefix / "b.tar.gz").stat().st_nlink == 1


def test_an_archive_over_the_size_limit_is_refused(tmp_path: Path, prefix: Path) -> None:
    from scorer.models.archive import ArchiveLimits

    cache, _, _ = make_cache(tmp_path, prefix, archive_limits=ArchiveLimits(max_total_bytes=64))
    with pytest.raises(UnsafeArchiveError):
        run(cache, lambda: touch(cache, "a.tar.gz"))
    assert cache_listing(cache) == []


def test_load_failure_in_the_model_server(tmp_path: Path, prefix: Path) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix)
    registry.script[model_hash("b.tar.gz")] = [
        ModelLoadFailedError("the model server answered 500 (Failed to start workers)")
    ]

    async def body() -> None:
        await touch(cache, "a.tar.gz")
        with pytest.raises(ModelLoadFailedError) as raised:
            await touch(cache, "b.tar.gz")
        assert raised.value.status_code == 500
        assert "'b.tar.gz' failed to load" in raised.value.message
        await touch(cache, "a.tar.gz")
        await touch(cache, "b.tar.gz")  # a later request tries again (and now succeeds)

    run(cache, body)
    assert ("unregister", model_hash("b.tar.gz")) in registry.calls
    assert cache.stats().failures == 1 and cache.stats().loads == 2


def test_a_stale_registration_is_replaced(tmp_path: Path, prefix: Path) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix)
    name = model_hash("a.tar.gz")
    registry.loaded[name] = Path("/stale")
    run(cache, lambda: touch(cache, "a.tar.gz"))
    assert registry.calls == [("register", name), ("unregister", name), ("register", name)]
    assert registry.loaded[name] == cache.root / name / "model"


def test_start_removes_only_what_the_cache_owns(tmp_path: Path, prefix: Path) -> None:
    cache, _, _ = make_cache(tmp_path, prefix)
    cache.root.mkdir(parents=True)
    (cache.root / model_hash("old") / "model").mkdir(parents=True)
    (cache.root / ".scorer-fetch-abc-123").write_bytes(b"partial")
    (cache.root / "keep-me").mkdir()
    (cache.root / "notes.txt").write_text("mine")
    asyncio.run(cache.start())
    assert cache_listing(cache) == ["keep-me", "notes.txt"]


# --------------------------------------------------------------------------- settings


def test_settings_from_the_environment(tmp_path: Path) -> None:
    from scorer.cache import load_cache_settings, parse_size
    from scorer.errors import ConfigError

    settings = load_cache_settings(
        {
            "SCORER_MODEL_PREFIX": "s3://bucket/models/",
            "SCORER_CACHE_DIR": str(tmp_path),
            "SCORER_CACHE_MAX_MODELS": "3",
            "SCORER_CACHE_MAX_MEMORY": "1.5G",
            "SCORER_CACHE_LOAD_WAIT": "5",
            "SCORER_LOG_FORMAT": "text",
        }
    )
    assert settings == CacheSettings(
        model_prefix="s3://bucket/models/",
        cache_dir=tmp_path,
        max_models=3,
        max_memory_bytes=int(1.5 * (1 << 30)),
        load_wait_seconds=5.0,
        log_format="text",
    )
    assert load_cache_settings({}) == CacheSettings()
    assert parse_size("512MiB") == 512 << 20 and parse_size("1024") == 1024
    for bad in (
        {"SCORER_CACHE_MAX_MEMORY": "lots"},
        {"SCORER_CACHE_MAX_MODELS": "-1"},
        {"SCORER_LOG_FORMAT": "xml"},
    ):
        with pytest.raises(ConfigError):
            load_cache_settings(bad)


def test_from_settings_builds_the_source_and_the_host_memory_budget(
    tmp_path: Path, prefix: Path
) -> None:
    from scorer.cache import S3Source

    registry = FakeRegistry()
    settings = CacheSettings(
        model_prefix=str(prefix), cache_dir=tmp_path / "c", max_models=2, max_memory_bytes=10
    )
    cache = ModelCache.from_settings(settings, registry)
    assert isinstance(cache.source, DirectorySource) and cache.max_models == 2
    assert [b.name for b in cache.budgets] == [HOST_MEMORY]
    s3 = ModelCache.from_settings(
        CacheSettings(model_prefix="s3://bucket/deep/prefix"), registry
    ).source
    assert isinstance(s3, S3Source) and s3.uri == "s3://bucket/deep/prefix/"


def test_importing_the_cache_and_the_emulator_does_not_import_torch() -> None:
    code = (
        "import sys, scorer.cache, scorer.local, scorer.local.app, scorer.local.runner; "
        "print(sorted(m for m in ('torch', 'torchvision', 'boto3') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
