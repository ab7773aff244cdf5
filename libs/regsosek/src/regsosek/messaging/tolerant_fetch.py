"""aiokafka, made to survive a record header key that is not UTF-8.

aiokafka's record reader (its C extension and its pure-Python fallback alike) decodes
header keys as strict UTF-8 while unpacking a fetched batch. A key that is not UTF-8 (any
client other than aiokafka can write one) raises `UnicodeDecodeError` out of `getmany`
for the whole fetch, every time it is fetched again: the partition is stuck for good,
and records of that fetch before it may be skipped. The consumer must instead see the
record and dead-letter it (see messaging.consumer).

`install()` (done on import) replaces the `MemoryRecords` class aiokafka's fetcher uses
with `_TolerantMemoryRecords`: batches are read with aiokafka's fast reader as before and
only when that fails on a key is the rest of that batch re-read with the pure-Python
reader over a buffer whose slices decode with surrogate escapes, so the key's bytes are
kept. This depends on aiokafka internals (`aiokafka.consumer.fetcher.MemoryRecords`,
`aiokafka.record.default_records._DefaultRecordBatchPy`): re-check it on every aiokafka
upgrade; libs/regsosek/tests/test_record_parsing.py fails if it stops working.
"""

from __future__ import annotations

import struct

from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.memory_records import MemoryRecords as _MemoryRecords


class _SurrogateEscapingBytes(bytearray):
    """A slice of a record batch whose `decode` keeps undecodable bytes as surrogate escapes."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:  # noqa: ARG002
        return bytes(self).decode(encoding, "surrogateescape")


class _LenientBuffer(bytearray):
    """A record batch buffer whose slices decode leniently (aiokafka's pure-Python reader
    decodes header keys with `buffer[a:b].decode("utf-8")`)."""

    def __getitem__(self, index):
        item = bytearray.__getitem__(self, index)
        return _SurrogateEscapingBytes(item) if isinstance(index, slice) else item


class _LenientRecordBatch(_DefaultRecordBatchPy):
    """aiokafka's pure-Python batch reader, keeping header keys that are not UTF-8."""

    _buffer: bytearray

    def __init__(self, buffer: bytes) -> None:
        super().__init__(buffer)
        self._buffer = _LenientBuffer(self._buffer)

    def _maybe_uncompress(self) -> None:
        super()._maybe_uncompress()
        if not isinstance(self._buffer, _LenientBuffer):
            self._buffer = _LenientBuffer(self._buffer)


class _TolerantBatch:
    """A fetched batch that reads records with aiokafka's fast reader and, if that fails
    on a header key that is not UTF-8, reads the rest with `_LenientRecordBatch`."""

    def __init__(self, batch, data: bytes, start: int, end: int) -> None:
        self._batch, self._data, self._start, self._end = batch, data, start, end

    def __getattr__(self, name: str):
        return getattr(self._batch, name)

    def __next__(self):
        return next(self._batch)

    def __iter__(self):
        last = None
        try:
            for record in self._batch:
                last = record.offset
                yield record
        except UnicodeDecodeError:
            # Only now copy the batch's bytes: the fast path costs nothing extra.
            for record in iter(_LenientRecordBatch(bytes(self._data[self._start:self._end]))):
                if last is None or record.offset > last:
                    yield record


class _TolerantMemoryRecords:
    """aiokafka's MemoryRecords, handing out `_TolerantBatch`es (magic 2 batches carry headers)."""

    _LOG_OVERHEAD = 12  # base offset (8) + batch length (4)
    _MAGIC_AT = 16

    def __init__(self, data: bytes) -> None:
        self._inner = _MemoryRecords(data)
        self._data = data
        self._pos = 0

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def next_batch(self, *args, **kwargs):
        batch = self._inner.next_batch(*args, **kwargs)
        if batch is None:
            return None
        start = self._pos
        (length,) = struct.unpack_from(">i", self._data, start + 8)
        self._pos = start + self._LOG_OVERHEAD + length
        if self._data[start + self._MAGIC_AT] != 2:
            return batch
        return _TolerantBatch(batch, self._data, start, self._pos)


def install() -> None:
    if aiokafka_fetcher.MemoryRecords is not _TolerantMemoryRecords:
        aiokafka_fetcher.MemoryRecords = _TolerantMemoryRecords


install()
