"""Reading one byte range of a file: the lines that start in it, and the Parquet row groups it
owns (the leaf under :mod:`selectllm.text.splits`, which plans the ranges, and
:mod:`selectllm.text.formats`, which parses them)."""

from __future__ import annotations

import io
from typing import Iterator

CHUNK = 1 << 20


# ----------------------------------------------------------------------------- reading a range
def range_chunks(f, start: int, end: int, size: int = CHUNK) -> Iterator[bytes]:
    """The bytes of the lines that start in ``[start, end)`` of a seekable byte stream, in chunks.

    ``end < 0`` means the end of the file.  Never holds more than ``size`` bytes (plus one line's
    head when skipping), whatever the lines' lengths.
    """
    if start > 0:
        f.seek(start - 1)  # from the byte before: a range starting at a line start keeps that line
        pos = start - 1
        while True:
            chunk = f.read(size)
            if not chunk:
                return
            i = chunk.find(b"\n")
            if i >= 0:
                pos += i + 1
                rest = chunk[i + 1:]
                break
            pos += len(chunk)
    else:
        f.seek(0)
        pos, rest = 0, b""
    if 0 <= end <= pos:
        return  # the range lies inside one line that started before it
    last = b"\n"
    while end < 0 or pos < end:
        if not rest:
            rest = f.read(size)
            if not rest:
                return
        take = rest if end < 0 else rest[: end - pos]
        rest = rest[len(take):]
        pos += len(take)
        last = take[-1:]
        yield take
    if last == b"\n":
        return
    while True:  # finish the line that crosses the end
        if not rest:
            rest = f.read(size)
            if not rest:
                return
        i = rest.find(b"\n")
        if i >= 0:
            yield rest[: i + 1]
            return
        yield rest
        rest = b""


class ReadStream(io.RawIOBase):
    """A read-only byte stream whose subclass defines ``read(n)`` (it may return fewer bytes)."""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class ChunkStream(ReadStream):
    """A read-only byte stream over an iterator of chunks (``read`` may return fewer bytes)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.buf = chunks, b""

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            out = self.buf + b"".join(self.chunks)
            self.buf = b""
            return out
        if not self.buf:
            self.buf = next(self.chunks, b"")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def open_range(f, start: int, end: int) -> ChunkStream:
    return ChunkStream(range_chunks(f, start, end))


# ----------------------------------------------------------------------------- the count pass


def parquet_row_groups(pf, start: int, end: int) -> tuple[list[int], int]:
    """(row groups owned by ``[start, end)``, data-row index of the first one) of a ParquetFile."""
    meta = pf.metadata
    owned, first, before = [], None, 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        col = rg.column(0)
        offset = col.data_page_offset
        if col.has_dictionary_page and col.dictionary_page_offset is not None:
            offset = min(offset, col.dictionary_page_offset)
        if end < 0 or start <= offset < end:
            owned.append(g)
            if first is None:
                first = before
        before += rg.num_rows
    return owned, first or 0
