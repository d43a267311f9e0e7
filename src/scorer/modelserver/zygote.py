"""A pre-warmed parent for MMS's model workers: loading a model no longer starts Python.

Multi Model Server starts one fresh Python process per model (``python
model_service_worker.py ...``), which then imports torch, torchvision and scorer: about 2-4 s
of every ``POST /models`` before the model's own weights are read. On a multi-model endpoint
that is paid on every cache miss.

The zygote imports all of that once, then forks a worker per model. It is the process
scorer starts (in place of MMS's launcher, so the process group, ``wait`` and the process
tree stay as before): it opens its socket, starts MMS as its child, imports the heavy
modules while the JVM boots, then serves fork requests. MMS is pointed at a tiny launcher
script (:mod:`scorer.modelserver.launcher`) as its "python"; the launcher sends its arguments,
environment, working directory and stdio to the zygote and waits for the forked worker's
exit status, which it returns to MMS as its own. If the zygote cannot be reached the
launcher ``exec``s the real Python, so MMS behaves exactly as without it.

A forked worker watches its launcher: when MMS kills the launcher (unload), the worker
exits too. The zygote never touches CUDA or runs a torch op, so forking is safe; only
processes of the same user may ask it to fork (``SO_PEERCRED``).

It also leads MMS's process group (with ``SCORER_WORKER_ZYGOTE=false`` it does only that):
a stop signals the whole group and the zygote waits for MMS; if scorer itself dies, even
by SIGKILL, the kernel tells the zygote (``PR_SET_PDEATHSIG``) and it kills the group, so
no JVM or model worker outlives the command that started it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
from pathlib import Path

from scorer.modelserver import launcher

PRELOAD = (
    "torch",
    "torchvision.models",
    "safetensors.torch",
    "PIL.Image",
    "numpy",
    "mms.model_service_worker",
    "mms.model_loader",
    "mms.service",
    "scorer.serving.handler_service",
    "scorer.models.family",
    "scorer.models.loading",
)
_MAX_REQUEST = 256 * 1024
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def write_launcher(path: Path, real_python: str, address: str) -> Path:
    """Write the worker launcher (mode 0755) to ``path``, for the zygote at ``address``.

    The launcher is :mod:`scorer.modelserver.launcher` behind a ``#!<real_python> -S``
    line; the address goes into ``<path>.address`` beside it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    source = Path(launcher.__file__).read_text(encoding="utf-8")
    path.write_text(f"#!{real_python} -S\n{source}", encoding="utf-8")
    path.chmod(0o755)
    Path(str(path) + launcher.ADDRESS_SUFFIX).write_text(address, encoding="utf-8")
    return path


def _preload() -> None:
    for module in PRELOAD:
        try:
            __import__(module)
        except Exception as exc:  # a missing optional module only costs speed
            print(f"zygote: could not preload {module}: {exc!r}", file=sys.stderr, flush=True)
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.getproctitle()  # set up here: a child that rewrote its environ cannot


def _same_user(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


def _worker_title(argv: list[str]) -> None:
    """Give the forked worker the command line MMS would have started (ps, psutil, tests)."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(" ".join([sys.executable, *argv[1:]]))


def _run_worker(conn: socket.socket, fds: list[int], request: dict[str, object]) -> None:
    """In the forked child: become the worker MMS asked for; never returns."""
    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        env = {str(k): str(v) for k, v in request["env"].items()}  # type: ignore[attr-defined]
        os.chdir(str(request["cwd"]))
        os.environ.clear()
        os.environ.update(env)
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:0] = [p for p in extra if p not in sys.path]
        sys.argv = argv[1:]
        _worker_title(argv)

        def lifeline() -> None:  # the launcher is MMS's handle on this worker
            with contextlib.suppress(OSError):
                while conn.recv(1):
                    pass
            os._exit(1)

        threading.Thread(target=lifeline, name="scorer-lifeline", daemon=True).start()
        runpy.run_path(argv[1], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class Zygote:
    """The fork server: one listening socket, the MMS child, the forked workers."""

    def __init__(self, address: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind("\0" + address)
        self.listener.listen(64)
        self.selector = selectors.DefaultSelector()
        self.workers: dict[int, socket.socket] = {}

    def _fork(self, conn: socket.socket) -> None:
        try:
            message, fds, _flags, _addr = socket.recv_fds(conn, _MAX_REQUEST, 3)
            request = json.loads(message)
        except (OSError, ValueError):
            conn.close()
            return
        if len(fds) != 3 or not isinstance(request, dict):
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.listener.close()
            self.selector.close()
            for other in self.workers.values():
                other.close()
            _run_worker(conn, fds, request)
        for fd in fds:
            os.close(fd)
        self.workers[pid] = conn
        self.selector.register(conn, selectors.EVENT_READ, pid)
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"pid": pid}).encode())

    def _reaped(self, pid: int, status: int) -> None:
        conn = self.workers.pop(pid, None)
        if conn is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn)
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
        conn.close()

    def serve(self, mms_pid: int) -> int:
        """Fork workers until the MMS child exits; return its exit code."""
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        while True:
            for key, _ in self.selector.select(timeout=0.1):
                if key.data is None:
                    conn, _ = self.listener.accept()
                    if _same_user(conn):
                        self._fork(conn)
                    else:
                        conn.close()
                else:  # the launcher went away; its worker follows through its lifeline
                    worker = key.fileobj
                    assert isinstance(worker, socket.socket)
                    with contextlib.suppress(OSError):
                        if worker.recv(1, socket.MSG_PEEK):
                            continue
                    self.selector.unregister(worker)
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return 1
                if pid == 0:
                    break
                if pid == mms_pid:
                    return os.waitstatus_to_exitcode(status)
                self._reaped(pid, status)


def _die_with(parent: int) -> None:
    """Take the whole process group down when ``parent`` (scorer) dies, however it dies.

    The kernel sends SIGHUP when the parent exits (``PR_SET_PDEATHSIG``); the handler kills
    the group: MMS, the JVM, the model workers and anything they started. A parent that
    died before this call is noticed by its pid.
    """
    signal.signal(signal.SIGHUP, lambda _signum, _frame: os.killpg(0, signal.SIGKILL))
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != parent:
        os.killpg(0, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    """``python -m scorer.modelserver.zygote [--address NAME] --parent PID -- MMS COMMAND...``.

    Without ``--address`` it only leads the process group (no forking, no preloading).
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", help="abstract unix socket name (omit: no zygote)")
    parser.add_argument("--parent", type=int, help="scorer's pid: the group dies with it")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the MMS command line")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.parent is not None:
        _die_with(args.parent)
    for signum in (signal.SIGTERM, signal.SIGINT):  # a stop signals the whole group:
        signal.signal(signum, lambda _signum, _frame: None)  # wait for MMS to finish
    if args.address is None:
        code = subprocess.Popen(command).wait()
        return code if code >= 0 else 128 - code
    zygote = Zygote(args.address)  # listening before MMS can ask for a worker
    mms = subprocess.Popen(command)
    _preload()
    code = zygote.serve(mms.pid)
    mms.returncode = code  # reaped above; keep Popen from waiting on it again
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
