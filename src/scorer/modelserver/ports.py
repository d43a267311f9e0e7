"""Free loopback ports for a model server scorer starts behind a front end."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Collection, Sequence

MMS_PORT_RANGE = range(20000, 32000)
"""MMS refuses ports above 32767; this range is below the kernel's ephemeral ports."""


def free_loopback_port(
    candidates: Sequence[int] | None = None, exclude: Collection[int] = ()
) -> int:
    """A loopback TCP port nobody listens on.

    Args:
        candidates: ports to try in order (e.g. SageMaker's safe port range); default:
            up to 500 random ports of :data:`MMS_PORT_RANGE`, so servers started at the
            same moment rarely pick the same one.
        exclude: ports never to choose (e.g. the front end's own).

    Raises:
        RuntimeError: none of the candidates is free.
    """
    if candidates is None:
        candidates = random.sample(MMS_PORT_RANGE, 500)
    for port in candidates:
        if port in exclude:
            continue
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free loopback port for the model server")
