"""The pixel budget: how many decoded pixels one process holds at once.

Analysing a photo holds about ``PEAK_BYTES_PER_PIXEL`` bytes per pixel at its peak (the
decoded array, Pillow's copy being shrunk, the shrink itself; measured in docs/ingest.md,
"Memory"). Every decode of an upload takes its pixel count from this process's budget
first and gives it back when its analysis ends, waiting its turn when the budget is spent, so
a process holds at most ``capacity`` decoded pixels however many requests, threads or batch
files arrive at once. The capacity is ``IMAGE_MAX_PIXELS``: one photo of the largest size
allowed, or several smaller ones side by side.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import typing as t
from collections import deque
from collections.abc import Iterator

__all__ = ["PEAK_BYTES_PER_PIXEL", "PixelBudget", "for_process"]

#: Peak memory of one analysis, per pixel of the photo: 10.8-10.9 measured for RGB, RGBA,
#: palette and grey PNGs and JPEGs of 48-64 MP (bench/pixel_budget.py); ~12 at 16 MP, where
#: the face detector's fixed cost weighs more.
PEAK_BYTES_PER_PIXEL = 11


class PixelBudget:
    """At most ``capacity`` pixels held at once; callers are served first come, first served
    (a big photo is not overtaken for ever by a stream of small ones)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._free = capacity
        self._turns: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def free(self) -> int:
        """Pixels not held right now."""
        with self._changed:
            return self._free

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` (at most the whole capacity) for the ``with`` block, waiting first
        until they are free and every earlier caller has been served."""
        pixels = max(0, min(pixels, self.capacity))
        turn = object()
        with self._changed:
            self._turns.append(turn)
            try:
                self._changed.wait_for(lambda: self._turns[0] is turn and self._free >= pixels)
            finally:
                # Served or interrupted, the next in line may go now.
                self._turns.remove(turn)
                self._changed.notify_all()
            self._free -= pixels
        try:
            yield
        finally:
            if pixels >= TRIM_FROM_PIXELS:
                _return_free_memory()
            with self._changed:
                self._free += pixels
                self._changed.notify_all()


#: Holds of at least this many pixels give the memory they freed back to the system.
TRIM_FROM_PIXELS = 1_000_000


def _return_free_memory() -> None:
    # glibc keeps what a thread freed in that thread's arena, resident, so each thread that
    # analysed a big photo would keep its own high-water mark: after one photo per thread the
    # process would hold several photos' worth although it never decodes two at once.
    # malloc_trim gives the free pages back (a few ms); elsewhere than glibc it does nothing.
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc() -> t.Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 -- glibc only: musl and macOS have no malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()

# One budget per capacity and process: IMAGE_MAX_PIXELS is one value in a deployment, but
# tests build apps with several.
_budgets: dict[int, PixelBudget] = {}
_budgets_lock = threading.Lock()


def for_process(capacity: int) -> PixelBudget:
    """This process's budget of ``capacity`` pixels, made on first use."""
    with _budgets_lock:
        if capacity not in _budgets:
            _budgets[capacity] = PixelBudget(capacity)
        return _budgets[capacity]
