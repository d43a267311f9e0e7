"""The processes that serve one model under a model server, and what they use.

A worker is a process under the MMS process whose command line holds ``--model-name
<name>`` (workers forked by scorer's zygote carry it as their process title: one
space-separated string). Host memory is their proportional set size (PSS; RSS where PSS is
unavailable), children included.
"""

from __future__ import annotations

import contextlib

import psutil


def _model_name(process: psutil.Process) -> str | None:
    """The ``--model-name`` on a process's command line, or None."""
    try:
        cmdline = " ".join(process.cmdline()).split()
    except psutil.Error:
        return None
    for idx, arg in enumerate(cmdline[:-1]):
        if arg == "--model-name":
            return cmdline[idx + 1]
    return None


def _descendants(server_pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(server_pid).children(recursive=True)
    except psutil.Error:
        return []


def worker_processes(server_pid: int, name: str) -> list[psutil.Process]:
    """The processes under ``server_pid`` that serve model ``name`` (and their children)."""
    chosen: dict[int, psutil.Process] = {}
    for process in _descendants(server_pid):
        if _model_name(process) == name:
            chosen[process.pid] = process
            with contextlib.suppress(psutil.Error):
                chosen.update({c.pid: c for c in process.children(recursive=True)})
    return list(chosen.values())


def served_models(server_pid: int) -> set[str]:
    """The names of the models that have at least one live process under ``server_pid``."""
    names = set()
    for process in _descendants(server_pid):
        with contextlib.suppress(psutil.Error):
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
        name = _model_name(process)
        if name is not None:
            names.add(name)
    return names


def worker_memory(server_pid: int, name: str) -> int:
    """PSS (or RSS) of the processes that serve model ``name``; 0 when none is found."""
    total = 0
    for process in worker_processes(server_pid, name):
        try:
            info = process.memory_full_info()
            total += int(getattr(info, "pss", 0) or info.rss)
        except psutil.AccessDenied:
            try:
                total += int(process.memory_info().rss)
            except psutil.Error:
                continue
        except psutil.Error:
            continue
    return total
