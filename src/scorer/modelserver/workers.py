"""The processes that serve one model under a model server, and what they use.

A worker is a process under the MMS process whose command line holds ``--model-name
<name>`` (workers forked by scorer's zygote carry it as their process title: one
space-separated string). Host memory is their proportional set size (PSS; RSS where PSS is
unavailable), children included.
"""

from __future__ import annotations

import contextlib

import psutil


def worker_processes(server_pid: int, name: str) -> list[psutil.Process]:
    """The processes under ``server_pid`` that serve model ``name`` (and their children)."""
    try:
        descendants = psutil.Process(server_pid).children(recursive=True)
    except psutil.Error:
        return []
    chosen: dict[int, psutil.Process] = {}
    for process in descendants:
        try:
            cmdline = " ".join(process.cmdline()).split()
        except psutil.Error:
            continue
        for idx, arg in enumerate(cmdline[:-1]):
            if arg == "--model-name" and cmdline[idx + 1] == name:
                chosen[process.pid] = process
                with contextlib.suppress(psutil.Error):
                    chosen.update({c.pid: c for c in process.children(recursive=True)})
                break
    return list(chosen.values())


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
