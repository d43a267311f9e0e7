"""Serverless cold start, as a process: launch of ``scorer local`` to its first answer.

``python -m bench.serverless_start`` builds a mobilenet_v3_small creative-scorer archive
(seeded weights, :func:`bench.models.build_archive`), then, ``--runs`` times, launches
``scorer local --model-dir <archive> --serverless-memory-mb 2048
--serverless-max-concurrency 1`` as a new process and sends boto3 ``invoke_endpoint``
(a 1080x1080 JPEG) once ``/ping`` answers 200 (the emulator listens only once the model
server has started with the model loaded). Per run it records seconds from launch to that
``/ping``, to the first answer, and a second (warm) request as the baseline; each run is
followed by one of the same endpoint without the serverless options, for comparison. It
prints JSON with the medians and the cold / warm ratio; nothing is asserted.

SageMaker allows a serverless container 3 minutes for the model download and a passing
``/ping`` (``PLATFORM.md`` section 7 part 3). The container itself is measured only when
``podman images`` lists a scorer image (``--image``; it is started as the endpoint runs it:
``serve``, the model under ``/opt/ml/model``, port 8080).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

from bench.inputs import creative, encode
from bench.models import build_archive
from scorer.modelserver.ports import free_loopback_port

ENDPOINT = "serverless-bench"
LAUNCH_TIMEOUT_S = 300.0  # bounds a hang; SageMaker's own budget is 180 s


def _client(url: str) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=120),
    )


@contextlib.contextmanager
def _launched(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _invoke(client: Any, body: bytes) -> bytes:
    answer: bytes = client.invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="image/jpeg", Body=body
    )["Body"].read()
    return answer


def one_run(archive: Path, body: bytes, work: Path, memory_mb: int | None) -> dict[str, float]:
    """Launch the emulator once (serverless unless ``memory_mb`` is None); seconds from
    launch to its first ``/ping`` 200, to the first answer, and a warm answer's."""
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    log = work / f"local-{port}.log"
    args = [
        sys.executable, "-c", "from scorer.cli import main; raise SystemExit(main())", "local",
        "--model-dir", str(archive), "--endpoint-name", ENDPOINT, "--port", str(port),
        "--run-dir", str(work / f"run-{port}"),
    ]  # fmt: skip
    if memory_mb is not None:
        args += ["--serverless-memory-mb", str(memory_mb), "--serverless-max-concurrency", "1"]
    client = _client(url)
    started = time.monotonic()
    with _launched(args, log) as process, httpx.Client(base_url=url, timeout=5) as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"scorer local exited: {log.read_text()[-2000:]}")
            if time.monotonic() - started > LAUNCH_TIMEOUT_S:
                raise RuntimeError(f"no /ping 200 within {LAUNCH_TIMEOUT_S} s")
            with contextlib.suppress(httpx.HTTPError):
                if http.get("/ping").status_code == 200:
                    break
            time.sleep(0.02)
        ping = time.monotonic() - started
        _invoke(client, body)
        first = time.monotonic() - started
        warm_started = time.monotonic()
        _invoke(client, body)
        warm = time.monotonic() - warm_started
    return {"ping_s": ping, "first_answer_s": first, "warm_s": warm}


def scorer_images(podman: list[str]) -> list[str]:
    """Images ``podman images`` lists whose repository mentions scorer."""
    try:
        listed = subprocess.run(
            [*podman, "images", "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in listed.stdout.split() if "scorer" in line]


def container_run(
    podman: list[str], image: str, model_dir: Path, body: bytes, memory_mb: int
) -> dict[str, float]:
    """``podman run <image> serve`` with the model at /opt/ml/model and the serverless
    memory as the container's limit: seconds to the first ``/ping`` 200 and to the first
    ``/invocations`` answer."""
    port = free_loopback_port()
    name = f"scorer-bench-{port}"
    started = time.monotonic()
    subprocess.run(
        [*podman, "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8080",
         "--memory", f"{memory_mb}m", "-v", f"{model_dir}:/opt/ml/model:ro", image, "serve"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        ping = None
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            while time.monotonic() - started < LAUNCH_TIMEOUT_S:
                try:
                    if ping is None and http.get("/ping").status_code == 200:
                        ping = time.monotonic() - started
                    if ping is not None:
                        answer = http.post(
                            "/invocations", content=body, headers={"Content-Type": "image/jpeg"}
                        )
                        if answer.status_code == 200:
                            return {"ping_s": ping, "first_answer_s": time.monotonic() - started}
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"the container gave no answer within {LAUNCH_TIMEOUT_S} s")
    finally:
        subprocess.run([*podman, "stop", "-t", "5", name], capture_output=True, check=False)


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in runs[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--image", help="a scorer image to measure too (default: any listed)")
    parser.add_argument(
        "--podman",
        default="podman",
        help="the podman command, with options: e.g. scripts/container-test's store, "
        "'podman --root /var/lib/scorer-containers/storage --runroot /run/scorer-containers'",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    options = parser.parse_args(argv)
    body = encode(creative(1080, 1080, seed=1), "JPEG")
    with tempfile.TemporaryDirectory(prefix="serverless-start-") as tmp:
        work = Path(tmp)
        archive = build_archive("mobilenet_v3_small", "serverless-demo", work)
        runs: list[dict[str, float]] = []
        real_time: list[dict[str, float]] = []
        for _ in range(options.runs):  # alternated, so both see the same machine
            runs.append(one_run(archive, body, work, options.memory_mb))
            real_time.append(one_run(archive, body, work, None))
        medians = _medians(runs)
        result: dict[str, Any] = {
            "archive_mb": round(archive.stat().st_size / 1e6, 1),
            "cpus": os.cpu_count(),
            "load_1m": round(os.getloadavg()[0], 1),
            "serverless_runs": runs,
            "median": medians,
            "cold_over_warm": round(medians["first_answer_s"] / medians["warm_s"], 1),
            "real_time_median": _medians(real_time),
        }
        podman = shlex.split(options.podman)
        images = [options.image] if options.image else scorer_images(podman)
        if images:
            model_dir = work / "model"
            model_dir.mkdir()
            subprocess.run(["tar", "-xzf", str(archive), "-C", str(model_dir)], check=False)
            model_dir.chmod(0o755)  # the container may serve as another user
            containers = [
                container_run(podman, images[0], model_dir, body, options.memory_mb)
                for _ in range(options.runs)
            ]
            result["container"] = {
                "image": images[0],
                "memory_mb": options.memory_mb,
                "runs": containers,
                "median": _medians(containers),
            }
        else:
            result["container"] = "not measured: podman images lists no scorer image"
    text = json.dumps(result, indent=2)
    print(text)
    if options.out:
        options.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
