"""ModelCache.reload: a resident model's archive changed at the source (``scorer local --watch``).

The new version loads under ``<hash>-r<N>`` while the old one serves; requests holding the
old one finish on it, and it is unloaded (and its files removed) once they are done. The
fake model server and the real directory source are test_cache.py's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scorer.cache import model_hash
from scorer.errors import ModelLoadFailedError
from tests.unit.test_cache import archive, cache_listing, make_cache, run, touch

pytestmark = pytest.mark.timeout(30)

SLOT = model_hash("a.tar.gz")


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    root = tmp_path / "prefix"
    for key in ("a.tar.gz", "b.tar.gz"):
        archive(root, key, payload=key.encode() * 10)
    return root


def test_a_reload_swaps_versions_after_the_requests_holding_the_old_one(
    tmp_path: Path, prefix: Path
) -> None:
    cache, registry, source = make_cache(tmp_path, prefix)

    async def body() -> dict[str, object]:
        first = await touch(cache, "a.tar.gz")
        lease = await cache.acquire("a.tar.gz")  # a request in flight on the old version
        archive(prefix, "a.tar.gz", payload=b"new weights")
        reloaded = await cache.reload("a.tar.gz")
        during = {
            "new": (await touch(cache, "a.tar.gz")).name,
            "retiring": [m.name for m in cache.retiring()],
            "loaded": sorted(registry.loaded),
            "old_files": (cache.root / first.name / "model" / "model.bin").read_bytes(),
        }
        lease.release()
        while cache.retiring():
            await asyncio.sleep(0.01)
        return {
            "first": first.name,
            "reloaded": reloaded,
            "during": during,
            "after": sorted(registry.loaded),
            "listing": cache_listing(cache),
            "new_files": (cache.root / f"{SLOT}-r1" / "model" / "model.bin").read_bytes(),
        }

    result = run(cache, body)
    assert result["first"] == SLOT
    assert result["reloaded"] is True
    assert result["during"] == {
        "new": f"{SLOT}-r1",
        "retiring": [SLOT],
        "loaded": sorted([SLOT, f"{SLOT}-r1"]),
        "old_files": b"a.tar.gz" * 10,
    }
    assert result["after"] == [f"{SLOT}-r1"]
    assert result["listing"] == [f"{SLOT}-r1"]
    assert result["new_files"] == b"new weights"
    assert source.fetches == ["a.tar.gz", "a.tar.gz"]
    assert cache.stats().resident_models == ("a.tar.gz",)


def test_a_model_that_is_not_resident_is_not_loaded_by_a_reload(
    tmp_path: Path, prefix: Path
) -> None:
    cache, registry, source = make_cache(tmp_path, prefix)

    async def body() -> bool:
        return await cache.reload("a.tar.gz")

    assert run(cache, body) is False
    assert source.fetches == [] and registry.calls == []


def test_a_failed_reload_unloads_the_old_version_and_the_next_request_loads_again(
    tmp_path: Path, prefix: Path
) -> None:
    cache, registry, source = make_cache(tmp_path, prefix)

    async def body() -> tuple[str, str, list[str]]:
        await touch(cache, "a.tar.gz")
        registry.script[f"{SLOT}-r1"] = [
            ModelLoadFailedError("code/inference.py, line 3"),
            ModelLoadFailedError("code/inference.py, line 3"),
        ]
        with pytest.raises(ModelLoadFailedError) as failed:
            await cache.reload("a.tar.gz")
        while cache.retiring():
            await asyncio.sleep(0.01)
        with pytest.raises(ModelLoadFailedError) as again:  # until the archive is fixed
            await touch(cache, "a.tar.gz")
        fixed = await touch(cache, "a.tar.gz")
        return failed.value.message, again.value.message, [fixed.name, *registry.loaded]

    failed, again, loaded = run(cache, body)
    assert "'a.tar.gz' failed to load" in failed and "line 3" in failed
    assert "line 3" in again
    assert loaded == [f"{SLOT}-r1", f"{SLOT}-r1"]
    assert source.fetches == ["a.tar.gz"] * 4
    assert cache_listing(cache) == [f"{SLOT}-r1"]


def test_a_reload_during_a_load_waits_for_it_then_loads_again(tmp_path: Path, prefix: Path) -> None:
    cache, registry, source = make_cache(tmp_path, prefix)

    async def body() -> tuple[bool, str]:
        registry.gate = asyncio.Event()
        first = asyncio.create_task(touch(cache, "a.tar.gz"))
        while not registry.calls:
            await asyncio.sleep(0.01)
        reload = asyncio.create_task(cache.reload("a.tar.gz"))
        await asyncio.sleep(0.05)
        registry.gate.set()
        await first
        reloaded = await reload
        return reloaded, (await touch(cache, "a.tar.gz")).name

    assert run(cache, body) == (True, f"{SLOT}-r1")
    assert source.fetches == ["a.tar.gz", "a.tar.gz"]


def test_a_version_evicted_later_loads_again_under_its_own_name(
    tmp_path: Path, prefix: Path
) -> None:
    cache, registry, _ = make_cache(tmp_path, prefix, max_models=1)

    async def body() -> list[str]:
        await touch(cache, "a.tar.gz")
        await cache.reload("a.tar.gz")
        await touch(cache, "b.tar.gz")  # evicts a (r1)
        while cache.retiring():
            await asyncio.sleep(0.01)
        return [(await touch(cache, "a.tar.gz")).name, *sorted(registry.loaded)]

    assert run(cache, body) == [f"{SLOT}-r1", f"{SLOT}-r1"]


def test_leftover_versions_are_removed_at_start(tmp_path: Path, prefix: Path) -> None:
    cache, _, _ = make_cache(tmp_path, prefix)
    (cache.root / f"{SLOT}-r7" / "model").mkdir(parents=True)
    (cache.root / "keep-me").mkdir()

    async def body() -> list[str]:
        return cache_listing(cache)

    assert run(cache, body) == ["keep-me"]
