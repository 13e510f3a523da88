"""A consumer of a BPF ring buffer map (BPF_MAP_TYPE_RINGBUF) through mmap.

The kernel's layout (kernel/bpf/ringbuf.c), offsets into the map fd:
  page 0                consumer position (u64): the only page user space may write
  page 1                producer position (u64): read-only
  page 2 ...            the data area (max_entries bytes, a power of two), mapped twice
                        back to back so a record that wraps reads as one contiguous slice
Each record starts with an 8-byte header {u32 len | BUSY bit 31 | DISCARD bit 30, u32
page offset}; the next record starts at the 8-byte aligned end of this one. A BUSY record
is still being written (the producer reserved it but has not committed yet): reading
stops there. DISCARD records are skipped. After each record the consumer position is
advanced, which gives the space back to the producer.

The consumer is single-threaded by design (one reader per ring buffer).
"""
from __future__ import annotations

import mmap
import select
import struct
from collections.abc import Iterator
from typing import Any

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8

PAGE_SIZE = mmap.PAGESIZE


class RingBufferError(Exception):
    """The ring buffer cannot be mapped or holds a record that makes no sense."""


class RingBuffer:
    """Reads records from a ring buffer map fd. `size` is the map's max_entries (the data
    area size, a power of two multiple of the page size). Does not own `map_fd`."""

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1) or size % PAGE_SIZE:
            raise RingBufferError(
                f"ring buffer size {size} is not a power-of-two multiple of the page size "
                f"({PAGE_SIZE}): is fd {map_fd} really a BPF_MAP_TYPE_RINGBUF map?")
        self.fd = map_fd
        self.size = size
        self._mask = size - 1
        try:
            self._consumer = mmap.mmap(map_fd, PAGE_SIZE, mmap.MAP_SHARED,
                                       mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        except OSError as exc:
            raise RingBufferError(f"mmap of the consumer page of ring buffer fd {map_fd} "
                                  f"failed: {exc}") from exc
        try:
            # producer page + the data area twice
            self._producer = mmap.mmap(map_fd, PAGE_SIZE + 2 * size, mmap.MAP_SHARED,
                                       mmap.PROT_READ, offset=PAGE_SIZE)
        except OSError as exc:
            self._consumer.close()
            raise RingBufferError(f"mmap of the data area of ring buffer fd {map_fd} "
                                  f"failed: {exc}") from exc
        self._data = memoryview(self._producer)[PAGE_SIZE:]

    @classmethod
    def from_map(cls, bpf_map: Any) -> RingBuffer:
        """From a `lwt_agent.bpf.BpfMap` (uses its .fd and .max_entries)."""
        return cls(bpf_map.fd, bpf_map.max_entries)

    # positions -------------------------------------------------------------------------

    @property
    def consumer_pos(self) -> int:
        return int(struct.unpack_from("<Q", self._consumer, 0)[0])

    @property
    def producer_pos(self) -> int:
        return int(struct.unpack_from("<Q", self._producer, 0)[0])

    def _set_consumer_pos(self, pos: int) -> None:
        # An aligned 8-byte store: the kernel reads it with smp_load_acquire.
        struct.pack_into("<Q", self._consumer, 0, pos)

    def pending_bytes(self) -> int:
        return self.producer_pos - self.consumer_pos

    # reading ---------------------------------------------------------------------------

    def consume(self, limit: int | None = None) -> Iterator[bytes]:
        """Yields committed records (copies) until the buffer is empty, a record is still
        BUSY, or `limit` records were returned."""
        returned = 0
        cons = self.consumer_pos
        while limit is None or returned < limit:
            prod = self.producer_pos
            if cons >= prod:
                break
            offset = cons & self._mask
            (header,) = struct.unpack_from("<I", self._data, offset)
            if header & BUSY_BIT:
                break
            length = header & ~(BUSY_BIT | DISCARD_BIT)
            total = (length + HEADER_SIZE + 7) & ~7
            if total > self.size:
                raise RingBufferError(f"corrupt ring buffer record at position {cons}: "
                                      f"length {length} exceeds the buffer ({self.size})")
            record = None
            if not header & DISCARD_BIT:
                start = offset + HEADER_SIZE
                record = bytes(self._data[start:start + length])
            cons += total
            self._set_consumer_pos(cons)
            if record is not None:
                returned += 1
                yield record

    def poll(self, timeout: float | None = None) -> bool:
        """Waits until the kernel signals data (or `timeout` seconds pass). True when
        records may be available."""
        if self.pending_bytes() > 0:
            return True
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        events = poller.poll(None if timeout is None else int(timeout * 1000))
        return bool(events) or self.pending_bytes() > 0

    def close(self) -> None:
        self._data.release()
        self._producer.close()
        self._consumer.close()

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RingBuffer", "RingBufferError"]
