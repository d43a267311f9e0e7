"""The built-in demo creative scorer, trained on generated creatives on a CPU in about a minute.

The network (``creative_cnn``) sees the whole creative resized to 64x64 by the same
:func:`~scorer.inference.images.resize_image` and :func:`~scorer.inference.images.to_batch`
the server uses. It regresses five properties measured on exactly those pixels (see
:mod:`scorer.demo.creatives` for what they are and how they are scaled). Quality is measured
on a held-out generated set (Spearman rank correlation per head) and by the two rankings the
served demo must get right: an image scores higher on sharpness than its blurred copy, and
higher on colourfulness than its greyscale copy.

Training is deterministic: fixed seeds, a fixed torch thread count (one by default: on two
cores a second intra-op thread buys little and collapses when other processes compete for
the CPU), deterministic kernels. Creatives are generated on a background thread while the
network trains, in a fixed order, so the result does not depend on timing.

Run it with ``python -m scorer.demo.training --out var/models/demo``. Needs the ``demo``
extra (scipy): ``pip install 'scorer[demo]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import itertools
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from safetensors.torch import load_file, save_file

from scorer.demo import INSTALL_HINT
from scorer.demo.creatives import LABELS, generate_creative, measure
from scorer.inference.images import resize_image, to_batch
from scorer.models.family import CreativeScorer, build_network
from scorer.models.spec import SPEC_FILE, HeadSpec, InputSpec, ModelSpec

try:
    from scipy.stats import spearmanr
except ModuleNotFoundError as exc:  # the optional "demo" extra is not installed
    _missing = (exc.name or "scipy").partition(".")[0]
    raise ModuleNotFoundError(
        f"scorer.demo.training needs {_missing}, from the 'demo' extra: {INSTALL_HINT}",
        name=_missing,
    ) from None

RECIPE_VERSION = "1.0.0"
"""Bump whenever data, labels, network or training change; cached models are then retrained."""

MODEL_NAME = "demo-creative-scorer"
REPORT_FILE = "report.json"
INPUT = InputSpec(size=64, resize=64, policy="resize")
RANKING_BLUR_RADIUS = 3.0
"""Gaussian blur radius (pixels of the original image) of the sharpness ranking check."""

# Creative seeds of the training, held-out and ranking sets: disjoint ranges of non-negative
# integers per training seed. Negative seeds are never used, so tests can use them freely.
_SEED_STRIDE = 10_000_000
_HELD_OUT_OFFSET = 5_000_000
_RANKING_OFFSET = 7_000_000
_LEARNING_RATE = 4e-3
_STATS_SIZE = 256  # creatives whose label mean/std scale the loss


@dataclass(frozen=True)
class DemoReport:
    """What one training run produced and how good it is on held-out creatives."""

    recipe_version: str
    seed: int
    train_size: int
    held_out_size: int
    ranking_size: int
    epochs: int
    threads: int
    spearman: dict[str, float]
    """Held-out Spearman rank correlation between prediction and label, per head."""
    ranking: dict[str, float]
    """Fraction of clean held-out creatives scored above their blurred / greyscale copy."""
    train_seconds: float
    """Wall time of data generation plus training (the two overlap)."""
    total_seconds: float
    """Wall time of the whole run, evaluation and writing included."""
    weights_sha256: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written to ``report.json``."""
        return asdict(self)

    def to_json(self) -> str:
        """Indented JSON text with a trailing newline."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def read(cls, model_dir: Path) -> DemoReport:
        """Read ``report.json`` from a demo model directory."""
        return cls(**json.loads((Path(model_dir) / REPORT_FILE).read_text(encoding="utf-8")))


def demo_spec() -> ModelSpec:
    """The demo model's spec: ``creative_cnn``, the whole creative at 64x64, five heads."""
    return ModelSpec(
        name=MODEL_NAME,
        version=RECIPE_VERSION,
        architecture="creative_cnn",
        heads=tuple(HeadSpec(name, "regression") for name in LABELS),
        input=INPUT,
    )


def labelled_creative(seed: int, spec: InputSpec = INPUT) -> tuple[Image.Image, list[float]]:
    """Generate creative ``seed``, resize it as the server does, and label those pixels.

    Returns the resized image and its labels in ``LABELS`` order. Text coverage is a
    fraction of the canvas, so it is the same at any resolution.
    """
    creative = generate_creative(seed)
    resized = resize_image(creative.image, spec)
    labels = measure(resized)
    labels["text_coverage"] = creative.text_coverage
    return resized, [labels[name] for name in LABELS]


def train_demo_model(
    out_dir: Path,
    *,
    seed: int = 0,
    train_size: int = 3000,
    held_out_size: int = 500,
    ranking_size: int = 100,
    epochs: int = 8,
    batch_size: int = 16,
    threads: int = 1,
) -> DemoReport:
    """Generate data, train the demo model, evaluate it on held-out creatives, write it.

    ``out_dir`` receives ``spec.json``, ``model.safetensors`` (loads into
    ``build_network(spec)`` with ``strict=True``) and ``report.json``; the evaluation runs on
    the weights as read back from disk. Deterministic for a given ``seed`` and ``threads``.
    Torch's global state (thread count, RNG, deterministic mode) is restored afterwards.
    """
    if seed < 0 or min(train_size, epochs, threads, batch_size) < 1 or held_out_size < 2:
        raise ValueError("need seed >= 0, held_out_size >= 2 and the other sizes >= 1")
    start = time.perf_counter()
    spec = demo_spec()
    base = seed * _SEED_STRIDE
    train_seeds = range(base, base + train_size)
    held_out_seeds = range(base + _HELD_OUT_OFFSET, base + _HELD_OUT_OFFSET + held_out_size)
    ranking_seeds = range(base + _RANKING_OFFSET, base + _RANKING_OFFSET + ranking_size)
    with _torch_settings(threads), _background_thread() as pool:
        # One background thread generates everything, in order, while the network trains.
        stream = pool.map(labelled_creative, itertools.chain(train_seeds, held_out_seeds))
        ranking_future = pool.submit(_ranking_images, ranking_seeds, spec.input)
        torch.manual_seed(seed)
        network = build_network(spec)
        _fit(network, spec, stream, train_size, epochs, batch_size, seed)
        train_seconds = time.perf_counter() - start

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SPEC_FILE).write_text(spec.to_json(), encoding="utf-8")
        weights = out_dir / spec.weights
        state = {key: value.detach().contiguous() for key, value in network.state_dict().items()}
        save_file(state, str(weights), metadata={"recipe_version": RECIPE_VERSION})

        reloaded = load_network(out_dir)
        test_images, test_labels = _collect(stream, held_out_size)
        predictions = predict(reloaded, spec, test_images, resized=True)
        spearman = {
            name: round(float(spearmanr(predictions[:, i], test_labels[:, i]).statistic), 4)
            for i, name in enumerate(LABELS)
        }
        ranking = _ranking_rates(reloaded, spec, *ranking_future.result())
    report = DemoReport(
        recipe_version=RECIPE_VERSION,
        seed=seed,
        train_size=train_size,
        held_out_size=held_out_size,
        ranking_size=ranking_size,
        epochs=epochs,
        threads=threads,
        spearman=spearman,
        ranking=ranking,
        train_seconds=round(train_seconds, 1),
        total_seconds=round(time.perf_counter() - start, 1),
        weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
    )
    (out_dir / REPORT_FILE).write_text(report.to_json(), encoding="utf-8")
    return report


def ensure_demo_model(cache_dir: Path) -> Path:
    """Return ``cache_dir`` holding a trained demo model, training it first if needed.

    Trains when the directory lacks a complete model or its ``report.json`` names another
    recipe version. Concurrent callers (processes) are serialised by a lock file beside
    ``cache_dir``; the model is trained in a temporary sibling directory and moved into
    place complete, so a reader never sees half a model.
    """
    cache_dir = Path(cache_dir)
    if _is_current(cache_dir):
        return cache_dir
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    with (cache_dir.parent / f".{cache_dir.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_current(cache_dir):
            staging = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.", dir=cache_dir.parent))
            try:
                train_demo_model(staging)
                staging.chmod(0o755)  # mkdtemp made it private
                if cache_dir.exists():
                    shutil.rmtree(cache_dir)
                staging.rename(cache_dir)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return cache_dir


def load_network(model_dir: Path) -> CreativeScorer:
    """Build the network a model directory's ``spec.json`` describes, load its weights (strict)."""
    spec = ModelSpec.read(model_dir)
    network = build_network(spec)
    network.load_state_dict(load_file(str(Path(model_dir) / spec.weights)), strict=True)
    return network.eval()


def predict(
    network: CreativeScorer,
    spec: ModelSpec,
    images: Sequence[Image.Image],
    *,
    resized: bool = False,
    batch_size: int = 128,
) -> np.ndarray:
    """Score images as the server does (eval mode, inference mode): an ``(n, heads)`` array.

    ``resized=True`` says the images already went through ``resize_image``.
    """
    network.eval()
    outputs = [np.zeros((0, len(spec.heads)), np.float32)]
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            chunk = list(images[i : i + batch_size])
            if not resized:
                chunk = [resize_image(img, spec.input) for img in chunk]
            outputs.append(network(to_batch(chunk, spec.input)).numpy())
    return np.concatenate(outputs)


def _ranking_images(
    seeds: Iterable[int], spec: InputSpec
) -> tuple[list[Image.Image], list[Image.Image], list[Image.Image]]:
    originals, blurred, grey = [], [], []
    for s in seeds:
        image = generate_creative(s, degrade=False).image
        originals.append(resize_image(image, spec))
        blur = ImageFilter.GaussianBlur(RANKING_BLUR_RADIUS)
        blurred.append(resize_image(image.filter(blur), spec))
        grey.append(resize_image(image.convert("L").convert("RGB"), spec))
    return originals, blurred, grey


def _ranking_rates(
    network: CreativeScorer,
    spec: ModelSpec,
    originals: list[Image.Image],
    blurred: list[Image.Image],
    grey: list[Image.Image],
) -> dict[str, float]:
    """How often the model ranks a clean creative above its degraded copy.

    ``sharpness_vs_blur``: sharpness(image) > sharpness(GaussianBlur(RANKING_BLUR_RADIUS)(image));
    ``colourfulness_vs_greyscale``: colourfulness(image) > colourfulness(greyscale(image)).
    """
    scores = predict(network, spec, originals + blurred + grey, resized=True)
    n = len(originals)
    sharp, colour = LABELS.index("sharpness"), LABELS.index("colourfulness")
    return {
        "sharpness_vs_blur": float(np.mean(scores[:n, sharp] > scores[n : 2 * n, sharp])),
        "colourfulness_vs_greyscale": float(np.mean(scores[:n, colour] > scores[2 * n :, colour])),
    }


def _is_current(model_dir: Path) -> bool:
    try:
        report = json.loads((model_dir / REPORT_FILE).read_text(encoding="utf-8"))
        spec = ModelSpec.read(model_dir)
    except Exception:  # anything missing or unreadable means: train again
        return False
    return (
        isinstance(report, dict)
        and report.get("recipe_version") == RECIPE_VERSION
        and spec.name == MODEL_NAME
        and (model_dir / spec.weights).is_file()
    )


def _collect(
    stream: Iterator[tuple[Image.Image, list[float]]], count: int
) -> tuple[list[Image.Image], np.ndarray]:
    pairs = list(itertools.islice(stream, count))
    return [image for image, _ in pairs], np.asarray([lab for _, lab in pairs], np.float32)


def _fit(
    network: CreativeScorer,
    spec: ModelSpec,
    stream: Iterator[tuple[Image.Image, list[float]]],
    train_size: int,
    epochs: int,
    batch_size: int,
    seed: int,
) -> None:
    """Minimise the squared error of every head, each scaled by its label's spread.

    The first epoch takes the creatives in generation order as they arrive (they are
    i.i.d., so that order is as good as a shuffle); later epochs shuffle. Each image gets one
    of the eight flips/rotations of the square, which leave every label unchanged.
    """
    images, labels = _collect(stream, min(train_size, _STATS_SIZE))
    scale = torch.from_numpy(labels).std(0).clamp_min(1e-3)
    with torch.no_grad():
        network.heads.bias.copy_(torch.from_numpy(labels).mean(0))
    network.to(memory_format=torch.channels_last).train()
    steps_per_epoch = math.ceil(train_size / batch_size)
    optimiser = torch.optim.AdamW(network.parameters(), lr=_LEARNING_RATE, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=_LEARNING_RATE, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    generator = torch.Generator().manual_seed(seed)
    all_labels = list(labels)
    for epoch in range(epochs):
        if epoch == 0:
            order = list(range(train_size))
        else:
            order = torch.randperm(train_size, generator=generator).tolist()
        for i in range(0, train_size, batch_size):
            index = order[i : i + batch_size]
            while len(images) <= index[-1]:  # first epoch: wait for the generator thread
                image, label = next(stream)
                images.append(image)
                all_labels.append(label)
            batch = to_batch(_augment([images[j] for j in index], generator), spec.input)
            target = torch.tensor(np.asarray([all_labels[j] for j in index], np.float32))
            loss = (((network(batch) - target) / scale) ** 2).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    network.eval()


_DIHEDRAL = (None, *Image.Transpose)


def _augment(images: Sequence[Image.Image], generator: torch.Generator) -> list[Image.Image]:
    picks = torch.randint(len(_DIHEDRAL), (len(images),), generator=generator).tolist()
    return [
        image if _DIHEDRAL[k] is None else image.transpose(_DIHEDRAL[k])
        for image, k in zip(images, picks, strict=True)
    ]


@contextlib.contextmanager
def _background_thread() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(1, thread_name_prefix="demo-creatives")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _torch_settings(threads: int) -> Iterator[None]:
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous_deterministic)
            torch.set_num_threads(previous_threads)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m scorer.demo.training --out DIR``: train the demo model, print its report."""
    parser = argparse.ArgumentParser(
        prog="python -m scorer.demo.training",
        description="Train the built-in demo creative scorer and print its held-out report.",
    )
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    report = train_demo_model(args.out, seed=args.seed, threads=args.threads)
    sys.stdout.write(report.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
