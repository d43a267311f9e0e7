"""scorer.local.recordio: MXNet RecordIO framing against bytes laid out by hand from
dmlc-core's recordio.h, and encode/decode round trips."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scorer.local.recordio import MAGIC, RecordIOError, decode, encode

MAGIC_BYTES = struct.pack("<I", MAGIC)


def header(flag: int, length: int) -> bytes:
    return struct.pack("<II", MAGIC, (flag << 29) | length)


def test_a_whole_record_is_its_header_data_and_padding_to_four_bytes() -> None:
    framed = header(0, 5) + b"hello" + b"\0\0\0"
    assert encode(b"hello") == framed
    assert decode(framed + header(0, 4) + b"four") == [b"hello", b"four"]
    assert encode(b"") == header(0, 0) and decode(header(0, 0)) == [b""]


def test_data_holding_the_magic_number_is_written_in_parts_without_it() -> None:
    data = b"abcd" + MAGIC_BYTES + b"efgh" + MAGIC_BYTES + b"ij"
    framed = header(1, 4) + b"abcd" + header(2, 4) + b"efgh" + header(3, 2) + b"ij\0\0"
    assert encode(data) == framed
    assert decode(framed) == [data]


def test_the_magic_number_off_a_four_byte_boundary_stays_in_the_data() -> None:
    data = b"a" + MAGIC_BYTES + b"bcd"
    assert encode(data) == header(0, 8) + data
    assert decode(encode(data)) == [data]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\x00" * 8, "no RecordIO magic number at byte 0"),
        (header(0, 5) + b"hel", "cut short"),
        (header(0, 1) + b"a\0\0\0" + b"\x0a\x23", "header is cut short at byte 12"),
        (header(2, 0), "out of order"),
        (header(1, 0), "no last part"),
    ],
)
def test_what_is_not_recordio_is_refused(data: bytes, needle: str) -> None:
    with pytest.raises(RecordIOError, match=needle):
        decode(data)


@given(st.lists(st.binary(max_size=64) | st.sampled_from([MAGIC_BYTES * 3, b"ab" + MAGIC_BYTES])))
def test_round_trip(records: list[bytes]) -> None:
    framed = b"".join(encode(record) for record in records)
    assert len(framed) % 4 == 0
    assert decode(framed) == records
