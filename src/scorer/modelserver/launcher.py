"""The worker launcher: what MMS runs as its "python" when scorer's zygote is on.

:func:`scorer.modelserver.zygote.write_launcher` copies this file, behind a
``#!<real python> -S`` line, into the run directory, with the zygote's socket address in a
file beside it (``<launcher>.address``). MMS then runs ``<launcher> model_service_worker.py
...`` for each model worker; the launcher sends its arguments, environment, working
directory and stdio to the zygote, which forks the worker, and waits for the worker's exit
status, which it returns to MMS as its own. If the zygote cannot be reached it ``exec``s
the real Python, so MMS behaves exactly as without the zygote.

Only stdlib, and nothing from ``site`` (``-S``): it starts in milliseconds.
"""

import contextlib
import json
import os
import signal
import socket
import sys

ADDRESS_SUFFIX = ".address"
_MAX_MESSAGE = 65536


def _ask_zygote(address: str) -> tuple[socket.socket, int]:
    """Send this process's request to the zygote; returns the connection and the worker pid."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect("\0" + address)
    request = {"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
    reply = conn.recv(_MAX_MESSAGE)
    if not reply:
        raise OSError("the zygote refused")
    return conn, int(json.loads(reply)["pid"])


def main() -> None:
    """Become (a proxy of) the worker MMS asked for; exits with the worker's status."""
    real_python = sys.executable
    try:
        with open(sys.argv[0] + ADDRESS_SUFFIX, encoding="utf-8") as source:
            address = source.read().strip()
        conn, pid = _ask_zygote(address)
    except (OSError, ValueError, KeyError):
        os.execv(real_python, [real_python, *sys.argv[1:]])

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        try:
            message = conn.recv(_MAX_MESSAGE)
        except InterruptedError:
            continue
        if not message:
            sys.exit(1)
        code = int(json.loads(message)["exit"])
        sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
