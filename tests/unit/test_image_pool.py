"""scorer.inference.image_pool: in-order results, first error in order, bounded windows;
the JSON batch decoder keeps its guarantees when it decodes on several threads; and the pool
is an object passed in (the worker's thread budget), not process-wide state."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from scorer.errors import BadRequestError, PayloadTooLargeError
from scorer.inference import codecs
from scorer.inference.image_pool import SERIAL, ImagePool
from tests.support.models import image_bytes


@pytest.fixture
def two_threads() -> Iterator[ImagePool]:
    pool = ImagePool(2)
    yield pool
    pool.close()


def test_results_keep_their_order(two_threads: ImagePool) -> None:
    def slow_first(x: int) -> int:
        time.sleep(0.02 if x % 2 == 0 else 0)
        return x * 10

    assert list(two_threads.map_in_order(slow_first, list(range(7)))) == [0, 10, 20, 30, 40, 50, 60]


def test_the_first_error_in_item_order_is_raised(two_threads: ImagePool) -> None:
    def fail_on(x: int) -> int:
        if x in (3, 4):
            raise ValueError(f"item {x}")
        return x

    seen = []
    with pytest.raises(ValueError, match="item 3"):
        for value in two_threads.map_in_order(fail_on, list(range(6))):
            seen.append(value)
    assert seen == [0, 1, 2]


def test_work_runs_on_pool_threads_a_window_at_a_time(two_threads: ImagePool) -> None:
    active = 0
    peak = 0
    names = set()
    lock = threading.Lock()

    def track(_: int) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            names.add(threading.current_thread().name)
        time.sleep(0.01)
        with lock:
            active -= 1

    consumed = 0
    for _ in two_threads.map_in_order(track, list(range(6))):
        consumed += 1
    assert consumed == 6 and peak <= 2
    assert all(name.startswith("scorer-image") for name in names)


@pytest.mark.parametrize("pool", [SERIAL, ImagePool(1), ImagePool(0)], ids=["serial", "1", "0"])
def test_one_thread_runs_in_the_callers_thread(pool: ImagePool) -> None:
    caller = threading.current_thread().name
    assert pool.threads == 1
    assert list(pool.map_in_order(lambda _: threading.current_thread().name, [1, 2])) == [
        caller,
        caller,
    ]
    assert pool._executor is None  # no thread was ever started


def test_a_single_item_runs_in_the_callers_thread(two_threads: ImagePool) -> None:
    caller = threading.current_thread().name
    assert list(two_threads.map_in_order(lambda _: threading.current_thread().name, [1])) == [
        caller
    ]


def test_pools_are_independent_objects(two_threads: ImagePool) -> None:
    three = ImagePool(3)
    try:
        assert (two_threads.threads, three.threads, SERIAL.threads) == (2, 3, 1)
        assert list(three.map_in_order(lambda x: x + 1, [1, 2, 3, 4])) == [2, 3, 4, 5]
        assert two_threads.threads == 2  # a second pool changes nothing in the first
    finally:
        three.close()
    assert list(three.map_in_order(lambda x: -x, [1, 2])) == [-1, -2]  # restarts when used


def test_json_batch_on_two_threads_keeps_order_errors_and_pixel_budget(
    two_threads: ImagePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = base64.b64encode(image_bytes("PNG", (32, 24))).decode()
    wide = base64.b64encode(image_bytes("PNG", (64, 24))).decode()

    def decode(*items: str) -> codecs.ImageBatch:
        body = ('{"images": ["' + '", "'.join(items) + '"]}').encode()
        batch = codecs.decode(body, "application/json", None, two_threads)
        assert isinstance(batch, codecs.ImageBatch)
        return batch

    assert [image.size for image in decode(small, wide, small).images] == [
        (32, 24),
        (64, 24),
        (32, 24),
    ]
    with pytest.raises(BadRequestError, match=r"images\[1\]"):
        decode(small, "bad!", small)
    monkeypatch.setattr(codecs, "MAX_BATCH_PIXELS", 32 * 24 * 2)
    with pytest.raises(PayloadTooLargeError):
        decode(small, small, small)


def test_json_batch_images_are_decoded_on_the_pool_passed_in(two_threads: ImagePool) -> None:
    image = base64.b64encode(image_bytes("PNG", (16, 16))).decode()
    body = f'{{"images": ["{image}", "{image}", "{image}"]}}'.encode()
    names: list[str] = []
    real = codecs._decode_b64

    def spy(item: object, index: int, target: int | None, *read: Any) -> object:
        names.append(threading.current_thread().name)
        return real(item, index, target, *read)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codecs, "_decode_b64", spy)
        codecs.decode(body, "application/json", None)  # no pool: the caller's thread
        serial = list(names)
        names.clear()
        codecs.decode(body, "application/json", None, two_threads)
    assert serial == [threading.current_thread().name] * 3
    assert all(name.startswith("scorer-image") for name in names)
