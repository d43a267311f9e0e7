"""The demo creative scorer: generator, labels, training, and the rankings it must get right.

The model is trained once into ``<repo>/var/models/demo`` (git-ignored) by
:func:`ensure_demo_model` and reused by later runs and by other test modules.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter
from safetensors.torch import load_file

from scorer.demo import training
from scorer.demo.creatives import (
    LABELS,
    brightness,
    colourfulness,
    contrast,
    generate_creative,
    measure,
    sharpness,
    text_coverage,
)
from scorer.demo.training import (
    RECIPE_VERSION,
    REPORT_FILE,
    DemoReport,
    demo_spec,
    ensure_demo_model,
    train_demo_model,
)
from scorer.inference.images import preprocess_images
from scorer.models.family import CreativeScorer, build_network
from scorer.models.spec import ModelSpec

DEMO_DIR = Path(__file__).parents[2] / "var" / "models" / "demo"
# Training and evaluation use non-negative creative seeds only.
TEST_SEEDS = range(-1, -9, -1)


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    return ensure_demo_model(DEMO_DIR)


@pytest.fixture(scope="session")
def demo_network(demo_model_dir: Path) -> tuple[ModelSpec, CreativeScorer]:
    spec = ModelSpec.read(demo_model_dir)
    network = build_network(spec)
    network.load_state_dict(load_file(str(demo_model_dir / spec.weights)), strict=True)
    return spec, network.eval()


def scores(
    spec: ModelSpec, network: CreativeScorer, images: list[Image.Image]
) -> list[dict[str, float]]:
    """Score images exactly as the server does: its preprocessing, eval and inference mode."""
    with torch.inference_mode():
        out = network(preprocess_images(images, spec.input))
    return [dict(zip(spec.head_names, row.tolist(), strict=True)) for row in out]


def blurred(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(3))


def greyscale(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("RGB")


# -- generator and labels -------------------------------------------------------------------


def test_same_seed_gives_the_same_image_bytes() -> None:
    for seed in (0, 7, -3, 123_456_789):
        first, second = generate_creative(seed), generate_creative(seed)
        assert first.image.mode == "RGB"
        assert first.image.tobytes() == second.image.tobytes()
        assert first.text_boxes == second.text_boxes
    assert generate_creative(1).image.tobytes() != generate_creative(2).image.tobytes()


def test_requested_size_and_clean_creatives_have_text_and_colour() -> None:
    for seed in TEST_SEEDS:
        creative = generate_creative(seed, size=(200, 120), degrade=False)
        assert creative.image.size == (200, 120)
        assert creative.text_boxes and creative.text_coverage > 0
        assert colourfulness(creative.image) > 0.02


def test_labels_are_roughly_unit_scaled() -> None:
    for seed in range(40):
        creative = generate_creative(seed)
        labels = measure(creative.image, creative.text_boxes)
        assert list(labels) == list(LABELS)
        assert all(-1e-9 <= value <= 1.6 for value in labels.values()), (seed, labels)


def test_blurred_copy_has_a_lower_sharpness_label() -> None:
    for seed in TEST_SEEDS:
        image = generate_creative(seed, degrade=False).image
        assert sharpness(blurred(image)) < sharpness(image)


def test_greyscale_copy_has_zero_colourfulness() -> None:
    for seed in TEST_SEEDS:
        image = generate_creative(seed, degrade=False).image
        assert colourfulness(greyscale(image)) == pytest.approx(0.0, abs=1e-9)
        assert colourfulness(image) > 0


def test_brighter_copy_is_brighter_and_flatter_copy_has_less_contrast() -> None:
    for seed in TEST_SEEDS:
        image = generate_creative(seed, degrade=False).image
        assert brightness(ImageEnhance.Brightness(image).enhance(1.3)) > brightness(image)
        assert contrast(ImageEnhance.Contrast(image).enhance(0.5)) < contrast(image)


def test_text_coverage_counts_overlapping_boxes_once() -> None:
    assert text_coverage([(0, 0, 10, 10), (5, 5, 15, 15)], (20, 20)) == 175 / 400
    assert text_coverage([], (20, 20)) == 0.0
    assert text_coverage([(0, 0, 20, 20), (-5, -5, 40, 40)], (20, 20)) == 1.0


# -- training -------------------------------------------------------------------------------


def test_training_is_deterministic_and_restores_torch_state(tmp_path: Path) -> None:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    tiny = {"train_size": 48, "held_out_size": 12, "ranking_size": 2, "epochs": 1}
    first = train_demo_model(tmp_path / "a", seed=3, **tiny)
    second = train_demo_model(tmp_path / "b", seed=3, **tiny)
    assert first.weights_sha256 == second.weights_sha256
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_model_dir_holds_spec_weights_and_report(demo_model_dir: Path) -> None:
    spec = ModelSpec.read(demo_model_dir)
    assert spec == demo_spec()
    assert spec.input.policy == "resize"
    assert spec.head_names == list(LABELS)
    network = build_network(spec)
    network.load_state_dict(load_file(str(demo_model_dir / spec.weights)), strict=True)
    report = DemoReport.read(demo_model_dir)
    assert report.recipe_version == RECIPE_VERSION
    assert set(report.spearman) == set(LABELS)


def test_held_out_spearman_is_above_floors(demo_model_dir: Path) -> None:
    report = DemoReport.read(demo_model_dir)
    floors = {
        "sharpness": 0.9,
        "colourfulness": 0.9,
        "contrast": 0.9,
        "brightness": 0.95,
        "text_coverage": 0.65,
    }
    for head, floor in floors.items():
        assert report.spearman[head] >= floor, (head, report.spearman)
    assert report.ranking["sharpness_vs_blur"] >= 0.95
    assert report.ranking["colourfulness_vs_greyscale"] >= 0.95


@pytest.mark.parametrize("size", [None, (320, 240)])
@pytest.mark.parametrize(
    ("degrade", "head"), [(blurred, "sharpness"), (greyscale, "colourfulness")]
)
def test_image_outranks_its_degraded_copy_on_that_head(
    demo_network: tuple[ModelSpec, CreativeScorer],
    size: tuple[int, int] | None,
    degrade: Callable[[Image.Image], Image.Image],
    head: str,
) -> None:
    spec, network = demo_network
    images = [generate_creative(seed, size=size, degrade=False).image for seed in TEST_SEEDS]
    originals = scores(spec, network, images)
    copies = scores(spec, network, [degrade(image) for image in images])
    for seed, original, copy in zip(TEST_SEEDS, originals, copies, strict=True):
        assert original[head] > copy[head], (seed, original, copy)


def test_brighter_copy_scores_brighter(demo_network: tuple[ModelSpec, CreativeScorer]) -> None:
    spec, network = demo_network
    images = [generate_creative(seed, degrade=False).image for seed in TEST_SEEDS]
    darker = [ImageEnhance.Brightness(image).enhance(0.6) for image in images]
    for original, copy in zip(
        scores(spec, network, images), scores(spec, network, darker), strict=True
    ):
        assert original["brightness"] > copy["brightness"]


# -- the cache ------------------------------------------------------------------------------


def test_ensure_reuses_a_current_model(demo_model_dir: Path) -> None:
    weights = demo_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert ensure_demo_model(demo_model_dir) == demo_model_dir
    assert weights.stat().st_mtime_ns == before


def test_ensure_retrains_when_the_recipe_version_changed(
    demo_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "demo"
    shutil.copytree(demo_model_dir, cache)
    report = json.loads((cache / REPORT_FILE).read_text())
    report["recipe_version"] = "0.0.0-old"
    (cache / REPORT_FILE).write_text(json.dumps(report))
    trained: list[Path] = []

    def fake_train(out_dir: Path) -> None:  # copies the real model instead of training again
        trained.append(out_dir)
        for name in ("spec.json", "model.safetensors", REPORT_FILE):
            shutil.copy(demo_model_dir / name, out_dir / name)

    monkeypatch.setattr(training, "train_demo_model", fake_train)
    assert ensure_demo_model(cache) == cache
    assert len(trained) == 1 and trained[0].parent == tmp_path and not trained[0].exists()
    assert DemoReport.read(cache).recipe_version == RECIPE_VERSION
    assert ensure_demo_model(cache) == cache and len(trained) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]
