"""MXNet RecordIO framing, for batch transform's ``SplitType RecordIO``.

The format is dmlc-core's ``recordio.h``: each record starts with the magic number
``0xced7230a`` and a header word ``lrec`` (both little-endian uint32; the upper 3 bits of
``lrec`` are a continuation flag, the lower 29 the length), then the data, zero-padded to
a multiple of 4 bytes. A record whose data holds the magic number at a 4-byte boundary is
written in parts (flag 1: first, 2: middle, 3: last; 0: a whole record) with the magic
left out between them; a reader puts it back.

SageMaker splits a RecordIO object at record boundaries; with ``BatchStrategy
SingleRecord`` the container receives one record's data (framing and padding removed),
with ``MultiRecord`` the framed records as they were (``PLATFORM.md`` section 7 part 2:
"binary padding is stripped only with SingleRecord"). :func:`encode` writes a record as
dmlc-core's writer does, so ``encode(decode(data)) == data`` for a writer's output.
"""

from __future__ import annotations

import struct

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<II")
MAX_LENGTH = (1 << 29) - 1


class RecordIOError(ValueError):
    """The bytes are not RecordIO (a bad magic number, a record cut short)."""


def _padded(length: int) -> int:
    return (length + 3) & ~3


def decode(data: bytes) -> list[bytes]:
    """The records' data, in order (multi-part records joined, padding dropped).

    Raises:
        RecordIOError: ``data`` is not a sequence of whole RecordIO records.
    """
    records: list[bytes] = []
    parts: list[bytes] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            raise RecordIOError(f"a record header is cut short at byte {offset}")
        magic, lrec = _HEADER.unpack_from(data, offset)
        if magic != MAGIC:
            raise RecordIOError(f"no RecordIO magic number at byte {offset}")
        flag, length = lrec >> 29, lrec & MAX_LENGTH
        start = offset + _HEADER.size
        end = start + _padded(length)
        if end > len(data):
            raise RecordIOError(f"the record at byte {offset} is cut short")
        if (flag in (0, 1)) == bool(parts):
            raise RecordIOError(f"a multi-part record is out of order at byte {offset}")
        parts.append(data[start : start + length])
        if flag in (0, 3):
            records.append(_MAGIC_BYTES.join(parts))
            parts = []
        offset = end
    if parts:
        raise RecordIOError("the last multi-part record has no last part")
    return records


def encode(record: bytes) -> bytes:
    """``record`` framed as dmlc-core's ``RecordIOWriter::WriteRecord`` frames it."""
    if len(record) > MAX_LENGTH:
        raise RecordIOError(f"a record of {len(record)} bytes is over RecordIO's 2^29 - 1")
    out = bytearray()
    start = 0
    for index in range(0, len(record) - 3, 4):
        if record[index : index + 4] == _MAGIC_BYTES:
            flag = 1 if start == 0 else 2
            out += _HEADER.pack(MAGIC, (flag << 29) | (index - start)) + record[start:index]
            start = index + 4
    flag = 3 if start else 0
    rest = record[start:]
    out += _HEADER.pack(MAGIC, (flag << 29) | len(rest)) + rest
    out += bytes(_padded(len(record)) - len(record))
    return bytes(out)
