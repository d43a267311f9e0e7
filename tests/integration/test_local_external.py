"""The emulator in front of a model server it did not start (the docker-compose layout).

A Multi Model Server runs on its own (as the compose ``model-server`` service does); the
emulator gets its URL and a cache directory both see. A registration left by an earlier
emulator run is replaced, and on exit the emulator unloads what it loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from scorer.cache import CacheSettings, model_hash
from scorer.local.runner import LocalEndpoint
from scorer.local.settings import LocalSettings
from scorer.models.archive import pack_directory, safe_extract
from tests.support.clients import runtime_client
from tests.support.models import creative_model_dir, image_bytes
from tests.support.servers import load, running_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_external_model_server_with_a_stale_registration(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    key = "creative-v3.tar.gz"
    pack_directory(creative_model_dir(tmp_path / "build", "creative-v3"), prefix / key)
    cache_dir = tmp_path / "opt-ml-models"
    cache_dir.mkdir()
    extra = {"SAGEMAKER_MULTI_MODEL": "true", "SCORER_MODELS_ROOT": str(cache_dir)}
    with running_server(tmp_path / "mms", extra) as server:
        mms = httpx.Client(base_url=server.url, timeout=60)
        # an earlier emulator run left the model registered (and its files behind)
        stale = cache_dir / model_hash(key) / "model"
        stale.parent.mkdir()
        safe_extract(prefix / key, stale)
        assert load(mms, model_hash(key), stale).status_code == 200

        settings = LocalSettings(
            port=0,
            model_server_url=server.url,
            cache=CacheSettings(model_prefix=str(prefix), cache_dir=cache_dir),
            cache_dir_set=True,
        )
        local = LocalEndpoint(settings, {**os.environ})
        with local.running() as url:
            runtime = runtime_client(url)
            response = runtime.invoke_endpoint(
                EndpointName="scorer-local",
                TargetModel=key,
                ContentType="image/jpeg",
                Body=image_bytes(),
            )
            assert json.loads(response["Body"].read())["model"] == "creative-v3"
            assert local.model_server is None  # it did not start one
            listed = mms.get("/models").json()["models"]
            assert [m["modelUrl"] for m in listed] == [str(stale)]
        # on exit the emulator unloads its models from the server that outlives it
        assert mms.get("/models").json()["models"] == []
        assert list(cache_dir.iterdir()) == []
