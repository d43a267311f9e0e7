"""The built-in demo scorer, packaged, validated and served by the real Multi Model Server:
its scores mean what they say (an image beats its blurred copy on sharpness and its
greyscale copy on colourfulness)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageFilter

from scorer.demo.creatives import generate_creative
from scorer.demo.training import ensure_demo_model
from scorer.models.archive import safe_extract
from scorer.models.package import package_directory
from scorer.validate import validate
from tests.support.servers import load, running_server

pytestmark = pytest.mark.integration

DEMO_DIR = Path(__file__).parents[2] / "var" / "models" / "demo"
SEEDS = range(-101, -109, -1)  # creatives never seen in training (which uses seeds >= 0)


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    archive = tmp_path_factory.mktemp("archive") / "demo.tar.gz"
    package_directory(ensure_demo_model(DEMO_DIR), archive)
    report = validate(archive)
    assert "sharpness" in report.output_heads and "colourfulness" in report.output_heads
    root = tmp_path_factory.mktemp("models")
    model_dir = root / "demo" / "model"
    model_dir.parent.mkdir()
    safe_extract(archive, model_dir)
    extra = {"SAGEMAKER_MULTI_MODEL": "true", "SCORER_MODELS_ROOT": str(root)}
    with (
        running_server(tmp_path_factory.mktemp("run"), extra) as server,
        httpx.Client(base_url=server.url, timeout=120) as http,
    ):
        assert load(http, "demo", model_dir).status_code == 200
        yield http


def score(client: httpx.Client, img: Image.Image) -> dict[str, float]:
    response = client.post(
        "/models/demo/invoke", content=jpeg(img), headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    return response.json()["scores"][0]


@pytest.mark.parametrize("seed", SEEDS)
def test_sharper_than_its_blurred_copy(client: httpx.Client, seed: int) -> None:
    image = generate_creative(seed, size=(480, 480), degrade=False).image
    blurred = image.filter(ImageFilter.GaussianBlur(3))
    assert score(client, image)["sharpness"] > score(client, blurred)["sharpness"]


@pytest.mark.parametrize("seed", SEEDS)
def test_more_colourful_than_its_greyscale_copy(client: httpx.Client, seed: int) -> None:
    image = generate_creative(seed, size=(480, 480), degrade=False).image
    grey = image.convert("L").convert("RGB")
    assert score(client, image)["colourfulness"] > score(client, grey)["colourfulness"]
