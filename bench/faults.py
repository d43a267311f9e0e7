"""Faults under load: SIGKILL a worker, a per-model process, and the JVM while clients send.

``python -m bench.faults`` starts ``entrypoint.py serve`` in multi-model mode (as SageMaker
runs the container) with three models, keeps four clients invoking them round-robin, and
in turn SIGKILLs (each round): one model's serving worker; another model's whole per-model
process (the process MMS talks to and the worker it forked, together); and, last, the MMS
Java server. After each fault it waits until the models answer 200 again. Then it checks
the requirements of docs/reliability.md ("Faults under load") and prints the figures as
JSON: requests, failures per fault kind, recovery time per fault kind, violations.

``tests/integration/test_faults_under_load.py`` runs one short round in CI; the bench runs
``--rounds`` of them (default 3) with longer quiet phases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.inputs import creative, encode
from bench.soak import build_models
from scorer.modelserver.ports import free_loopback_port
from scorer.modelserver.workers import worker_processes

ENTRYPOINT = Path(__file__).resolve().parents[1] / "entrypoint.py"
MODELS = 3
CLIENTS = 4
REQUEST_TIMEOUT = 30.0  # a request not answered in this long counts as hung
RECOVERY = {"worker": 15.0, "per-model process": 15.0, "java": 30.0}  # required bounds, s


@dataclass
class Record:
    """One request: when it was sent and answered, for which model, and how it ended."""

    model: str
    sent: float
    done: float
    outcome: str  # "200", another status code, or an exception class name


@dataclass
class Fault:
    """One SIGKILL and when its model(s) answered 200 again."""

    kind: str
    models: list[str]
    at: float
    recovered: float | None = None

    @property
    def recovery_s(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.at


@dataclass
class Run:
    """What one run saw."""

    records: list[Record] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    after_faults_s: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def violations(self) -> list[str]:
        """Every requirement of docs/reliability.md the run broke (empty: all held)."""
        found = []
        for record in self.records:
            if record.done - record.sent >= REQUEST_TIMEOUT:
                found.append(f"{record.model} hung ({record.outcome}) at {record.sent:.1f}")
        for fault in self.faults:
            if fault.recovery_s is None or fault.recovery_s > RECOVERY[fault.kind]:
                found.append(f"{fault.kind} of {fault.models}: recovery {fault.recovery_s}")
        for record in self.records:
            if record.outcome == "200":
                continue
            if not any(_explains(fault, record) for fault in self.faults):
                found.append(
                    f"{record.model}: {record.outcome} at {record.sent:.1f}, outside any fault"
                )
        if self.after_faults_s is None or self.after_faults_s > 30.0:
            found.append(f"models not all serving 30 s after the faults: {self.after_faults_s}")
        return found

    def figures(self) -> dict[str, Any]:
        """Requests, failures per fault kind and recovery time per fault kind."""
        failures: dict[str, int] = {}
        for record in self.records:
            if record.outcome != "200":
                kinds = [f.kind for f in self.faults if _explains(f, record)] or ["none"]
                failures[kinds[0]] = failures.get(kinds[0], 0) + 1
        recovery: dict[str, list[float]] = {}
        for fault in self.faults:
            if fault.recovery_s is not None:
                recovery.setdefault(fault.kind, []).append(round(fault.recovery_s, 1))
        return {
            "requests": len(self.records),
            "ok": sum(r.outcome == "200" for r in self.records),
            "failures_by_fault": failures,
            "recovery_s_by_fault": recovery,
            "hung": sum(r.done - r.sent >= REQUEST_TIMEOUT for r in self.records),
            "all_serving_after_faults_s": (
                None if self.after_faults_s is None else round(self.after_faults_s, 1)
            ),
            "violations": self.violations(),
        }


def _explains(fault: Fault, record: Record) -> bool:
    """A failed request is the fault's if it was in flight or sent during the outage."""
    if fault.kind != "java" and record.model not in fault.models:
        return False
    end = fault.recovered if fault.recovered is not None else float("inf")
    return record.done >= fault.at and record.sent <= end


def _client(url: str, models: list[str], run: Run, stop: threading.Event, offset: int) -> None:
    body = encode(creative(320, 320, seed=offset), "JPEG")
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as client:
        index = offset
        while not stop.is_set():
            model = models[index % len(models)]
            index += 1
            sent = time.monotonic()
            try:
                response = client.post(
                    f"/models/{model}/invoke",
                    content=body,
                    headers={"Content-Type": "image/jpeg"},
                )
                outcome = str(response.status_code)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
                time.sleep(0.2)  # a refused connection answers at once: do not spin
            with run.lock:
                run.records.append(Record(model, sent, time.monotonic(), outcome))


def _serving(url: str, model: str) -> bool:
    try:
        response = httpx.post(
            f"{url}/models/{model}/invoke",
            content=encode(creative(320, 320, seed=99), "JPEG"),
            headers={"Content-Type": "image/jpeg"},
            timeout=5,
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _wait_serving(url: str, models: list[str], bound: float) -> float | None:
    """Seconds until every model answered 200 (polled), or None past ``bound``."""
    start = time.monotonic()
    pending = set(models)
    while pending and time.monotonic() - start < bound:
        pending = {m for m in pending if not _serving(url, m)}
        if pending:
            time.sleep(0.25)
    return None if pending else time.monotonic() - start


def model_server_pid(entrypoint_pid: int) -> int:
    """The MMS process group leader (scorer's zygote) under the entrypoint."""
    for process in psutil.Process(entrypoint_pid).children():
        if "scorer.modelserver.zygote" in " ".join(process.cmdline()):
            return process.pid
    raise RuntimeError("the entrypoint runs no model server")


def _serving_worker(server_pid: int, model: str) -> list[psutil.Process]:
    """The forked process that serves ``model`` (the one an OOM killer would pick)."""
    mine = worker_processes(server_pid, model)
    pids = {p.pid for p in mine}
    return [p for p in mine if p.ppid() in pids and "model_service_worker" in " ".join(p.cmdline())]


def _per_model_process(server_pid: int, model: str) -> list[psutil.Process]:
    """The process MMS talks to for ``model`` and the worker it forked (not the launcher)."""
    return [
        p for p in worker_processes(server_pid, model)
        if "model_service_worker" in " ".join(p.cmdline())
    ]  # fmt: skip


def _java(server_pid: int) -> list[psutil.Process]:
    return [
        p for p in psutil.Process(server_pid).children(recursive=True)
        if "com.amazonaws.ml.mms.ModelServer" in " ".join(p.cmdline())
    ]  # fmt: skip


def start_server(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``entrypoint.py serve`` in multi-model mode with its models root under ``work``."""
    port = free_loopback_port()
    env = {
        **os.environ,
        "SAGEMAKER_MULTI_MODEL": "true",
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SCORER_MODELS_ROOT": str(work / "models"),
        "SCORER_RUN_DIR": str(work / "run"),
        "SCORER_MMS_CONFIG": str(work / "run" / "mms.properties"),
        "SCORER_THREADS_PER_WORKER": "1",
    }
    with open(work / "serve.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(ENTRYPOINT), "serve", "--bind", "127.0.0.1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((work / "serve.log").read_text(errors="replace")[-3000:])
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return process, url
        time.sleep(0.5)
    raise RuntimeError("the endpoint did not become healthy")


def load_models(url: str, work: Path) -> list[str]:
    """Build and register the models (``POST /models``, as SageMaker does)."""
    from scorer.models.archive import safe_extract

    names = []
    for name, archive in build_models(work / "build", MODELS).items():
        target = work / "models" / name / "model"
        target.parent.mkdir(parents=True, exist_ok=True)
        safe_extract(archive, target)
        response = httpx.post(
            f"{url}/models", json={"model_name": name, "url": str(target)}, timeout=180
        )
        response.raise_for_status()
        names.append(name)
    return names


def inject(process: subprocess.Popen[bytes], url: str, models: list[str], quiet: float,
           rounds: int) -> Run:  # fmt: skip
    """Clients send while the faults are injected; returns what they saw."""
    run = Run()
    stop = threading.Event()
    clients = [
        threading.Thread(target=_client, args=(url, models, run, stop, i), daemon=True)
        for i in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    try:
        time.sleep(quiet)
        server = model_server_pid(process.pid)
        for round_ in range(rounds):
            plan = [
                ("worker", [models[round_ % 3]], _serving_worker),
                ("per-model process", [models[(round_ + 1) % 3]], _per_model_process),
            ]
            for kind, victims, find in plan:
                doomed = find(server, victims[0])
                if not doomed:
                    raise RuntimeError(f"no {kind} found for {victims[0]}")
                fault = Fault(kind, victims, time.monotonic())
                for member in doomed:
                    with contextlib.suppress(psutil.Error):
                        member.kill()
                took = _wait_serving(url, victims, RECOVERY[kind] * 3)
                fault.recovered = None if took is None else fault.at + took
                run.faults.append(fault)
                time.sleep(quiet)
        time.sleep(3)  # the entrypoint notes the loaded models every 2 s
        java = _java(server)
        if not java:
            raise RuntimeError("no MMS Java process found")
        fault = Fault("java", list(models), time.monotonic())
        java[0].kill()
        took = _wait_serving(url, models, RECOVERY["java"] * 3)
        fault.recovered = None if took is None else fault.at + took
        run.faults.append(fault)
        time.sleep(quiet)
    finally:
        stop.set()
        for client in clients:
            client.join(REQUEST_TIMEOUT + 5)
    run.after_faults_s = _wait_serving(url, models, 60)
    return run


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.faults [--rounds N] [--quiet S]``: prints the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quiet", type=float, default=15.0, help="seconds between faults")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="scorer-faults-"))
    process = None
    try:
        process, url = start_server(work)
        models = load_models(url, work)
        run = inject(process, url, models, args.quiet, args.rounds)
        print(json.dumps(run.figures(), indent=2))
        return 1 if run.violations() else 0
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
