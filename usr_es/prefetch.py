"""Producing the next item on a second core while the caller uses this one (`prefetched`)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterable
from typing import Any

#: Batches `prefetched` produces ahead of the consumer (memory: this many batches more).
PREFETCH = 2
_DONE = object()


def prefetched(items: Iterable[Any], depth: int = PREFETCH) -> Generator[Any, None, None]:
    """Iterate `items` on a worker thread, up to `depth` items ahead of the caller.

    Producing the next batch (Parquet decoding, the overlay merge) and consuming this one (encoding,
    writing) are native code that releases the GIL, so on two cores they overlap: an export's batches,
    a materialize's row groups. Items arrive in order; an exception raised by `items` is re-raised here
    at its place in the sequence. When the caller stops early (an error, `close()`), the worker stops
    after the item it is on and `items` is closed on the worker (generators must be closed by the
    thread that runs them).
    """
    channel: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                channel.put(entry, timeout=0.05)
                return True
        return False

    def work() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # handed to the caller, raised there
            put((_DONE, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="usr-es-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = channel.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()
