"""The model server a bench measures: the real MMS through scorer, on a free loopback port."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from scorer import config as cfg
from scorer.modelserver.ports import free_loopback_port
from scorer.modelserver.process import ModelServer


def model_server(work: Path, settings: Mapping[str, str]) -> ModelServer:
    """A model server (not started) with its run folder under ``work``, this process's
    environment and ``settings`` (SageMaker's and scorer's variables)."""
    environ = {
        **os.environ,
        cfg.BIND_TO_PORT: str(free_loopback_port()),
        cfg.RUN_DIR: str(work / "run"),
        cfg.MMS_CONFIG_PATH: str(work / "run" / "mms.properties"),
        **settings,
    }
    return ModelServer.from_environ(environ, bind_address="127.0.0.1")
