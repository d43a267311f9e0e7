"""A model whose worker processes all die at once serves again (MMS alone never recovers it).

MMS 1.1.11 restarts a worker that dies alone, but when the per-model server process dies
together with the worker it forked, it keeps listing the worker as ready and requests
queue until their clients time out (docs/reliability.md). The entrypoint's supervisor
notices and registers the model again, and scorer's MMS plugin answers the requests MMS
abandons with the old registration (503) instead of leaving them unanswered.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from scorer.modelserver.workers import worker_processes
from tests.support.models import creative_model_dir, image_bytes
from tests.support.processes import serving_entrypoint
from tests.support.servers import load, server_environ
from tests.support.waiting import until_answered

pytestmark = pytest.mark.integration

RECOVERY_BOUND = 60.0  # seconds the test waits for a 200; a bound, not a measured figure


def _model_server_pid(entrypoint_pid: int) -> int:
    for process in psutil.Process(entrypoint_pid).children():
        if "scorer.modelserver.zygote" in " ".join(process.cmdline()):
            return process.pid
    raise AssertionError("the entrypoint runs no model server")


def _answer(client: httpx.Client, name: str, timeout: float = 5) -> tuple[int | str, str]:
    try:
        response = client.post(
            f"/models/{name}/invoke",
            content=image_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=timeout,
        )
    except httpx.TimeoutException:
        return "timeout", ""
    return response.status_code, response.text


def _invoke(client: httpx.Client, name: str) -> int | str:
    return _answer(client, name)[0]


def test_a_model_whose_processes_all_died_is_registered_again(tmp_path: Path) -> None:
    models = tmp_path / "models"
    kept = creative_model_dir(models, "kept")
    victim = creative_model_dir(models, "victim", seed=1)
    env = server_environ(
        tmp_path / "run", {"SAGEMAKER_MULTI_MODEL": "true", "SCORER_MODELS_ROOT": str(models)}
    )
    with (
        serving_entrypoint(env, tmp_path / "serve.log") as (process, url),
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        assert load(client, "kept", kept).status_code == 200
        assert load(client, "victim", victim).status_code == 200
        assert _invoke(client, "victim") == 200
        server_pid = _model_server_pid(process.pid)
        doomed = worker_processes(server_pid, "victim")
        assert len(doomed) >= 2  # the per-model process and the worker it forked
        for member in doomed:
            member.kill()
        psutil.wait_procs(doomed, timeout=10)

        # MMS still lists the dead worker as ready, so this request waits in the model's
        # queue; the re-registration drops that queue, and scorer answers it then
        status, text = _answer(client, "victim", timeout=RECOVERY_BOUND)
        assert status != "timeout", "a request queued for the dead model was never answered"
        if status != 200:
            assert status == 503 and "was restarted" in text, (status, text)

        outcomes, _ = until_answered(
            lambda timeout: client.post(
                "/models/victim/invoke", content=image_bytes(),
                headers={"Content-Type": "image/jpeg"}, timeout=timeout,
            ),
            RECOVERY_BOUND,
        )  # fmt: skip
        assert outcomes[-1] == 200, outcomes
        assert _invoke(client, "kept") == 200  # the neighbour was never touched
        assert {p.pid for p in worker_processes(server_pid, "victim")}.isdisjoint(
            {p.pid for p in doomed}
        )
