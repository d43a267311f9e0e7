"""Reading a request body within a size limit, without holding more than the limit."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request


async def read_body(
    request: Request,
    limit: int,
    too_large: Callable[[int], Exception],
    disconnected: Callable[[], Exception],
) -> bytes:
    """The body of ``request``, at most ``limit`` bytes.

    Args:
        request: the incoming request.
        limit: the largest body accepted, in bytes.
        too_large: makes the error raised when the body (declared or read) is larger.
        disconnected: makes the error raised when the client leaves before the end.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise disconnected() from None
    return b"".join(chunks)
