"""scorer.inference.image_pool: in-order results, first error in order, bounded windows;
and the JSON batch decoder keeps its guarantees when it decodes on several threads."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import pytest

from scorer.errors import BadRequestError, PayloadTooLargeError
from scorer.inference import codecs, image_pool
from tests.support.models import image_bytes


@pytest.fixture
def two_threads() -> Iterator[None]:
    image_pool.set_threads(2)
    yield
    image_pool.set_threads(1)


def test_results_keep_their_order(two_threads: None) -> None:
    def slow_first(x: int) -> int:
        time.sleep(0.02 if x % 2 == 0 else 0)
        return x * 10

    assert list(image_pool.map_in_order(slow_first, list(range(7)))) == [0, 10, 20, 30, 40, 50, 60]


def test_the_first_error_in_item_order_is_raised(two_threads: None) -> None:
    def fail_on(x: int) -> int:
        if x in (3, 4):
            raise ValueError(f"item {x}")
        return x

    seen = []
    with pytest.raises(ValueError, match="item 3"):
        for value in image_pool.map_in_order(fail_on, list(range(6))):
            seen.append(value)
    assert seen == [0, 1, 2]


def test_work_runs_on_pool_threads_a_window_at_a_time(two_threads: None) -> None:
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
    for _ in image_pool.map_in_order(track, list(range(6))):
        consumed += 1
    assert consumed == 6 and peak <= 2
    assert all(name.startswith("scorer-image") for name in names)


def test_one_thread_runs_in_the_callers_thread() -> None:
    image_pool.set_threads(1)
    caller = threading.current_thread().name
    assert list(image_pool.map_in_order(lambda _: threading.current_thread().name, [1, 2])) == [
        caller,
        caller,
    ]


def test_json_batch_on_two_threads_keeps_order_errors_and_pixel_budget(
    two_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = base64.b64encode(image_bytes("PNG", (32, 24))).decode()
    wide = base64.b64encode(image_bytes("PNG", (64, 24))).decode()
    batch = codecs.decode_json(f'{{"images": ["{small}", "{wide}", "{small}"]}}'.encode(), None)
    assert [image.size for image in batch.images] == [(32, 24), (64, 24), (32, 24)]
    with pytest.raises(BadRequestError, match=r"images\[1\]"):
        codecs.decode_json(f'{{"images": ["{small}", "bad!", "{small}"]}}'.encode(), None)
    monkeypatch.setattr(codecs, "MAX_BATCH_PIXELS", 32 * 24 * 2)
    with pytest.raises(PayloadTooLargeError):
        codecs.decode_json(f'{{"images": ["{small}", "{small}", "{small}"]}}'.encode(), None)
