"""The self-managed mode's routing rule and GPU budget plumbing (no server needed)."""

from __future__ import annotations

import pytest

from scorer.cache.settings import load_cache_settings
from scorer.errors import BadRequestError, ConfigError
from scorer.modelserver import gpu
from scorer.serving.gateway import target_model
from scorer.serving.self_managed import gpu_budget

ATTRS = "x-amzn-sagemaker-custom-attributes"


def test_target_model_from_custom_attributes() -> None:
    headers = {ATTRS: "trace=1;target_model=market/fr.tar.gz"}
    assert target_model(headers, default="default.tar.gz") == "market/fr.tar.gz"


def test_target_model_falls_back_to_the_default() -> None:
    assert target_model({ATTRS: "trace=1"}, default="default.tar.gz") == "default.tar.gz"


def test_no_target_and_no_default_is_400() -> None:
    with pytest.raises(BadRequestError, match="target_model="):
        target_model({}, default=None)


def test_gpu_fraction_setting() -> None:
    settings = load_cache_settings({"SCORER_CACHE_GPU_MEMORY_FRACTION": "0.8"})
    assert settings.gpu_memory_fraction == 0.8
    for bad in ("0", "1.5", "lots"):
        with pytest.raises(ConfigError, match="SCORER_CACHE_GPU_MEMORY_FRACTION"):
            load_cache_settings({"SCORER_CACHE_GPU_MEMORY_FRACTION": bad})


def test_no_gpu_means_no_gpu_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu.shutil, "which", lambda _name: None)
    assert gpu.total_gpu_memory() is None
    assert gpu.gpu_memory_by_pid() == {}
    assert gpu_budget(0.5, server_pid=1) is None
