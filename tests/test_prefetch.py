"""Producing items on a worker thread ahead of the consumer."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from usr_es.prefetch import prefetched


def test_prefetched_keeps_the_order_and_raises_a_producer_error_in_its_place() -> None:
    def batches() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("decoding failed")

    it = prefetched(batches())
    assert [next(it), next(it)] == [1, 2]
    with pytest.raises(ValueError, match="decoding failed"):
        next(it)


def test_prefetched_reads_a_bounded_amount_ahead_and_stops_when_the_consumer_does() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            for k in itertools.count():
                produced.append(k)
                yield k
        finally:
            closed.set()

    it = prefetched(endless(), depth=2)
    assert next(it) == 0
    it.close()  # joins the worker, which closes the producer
    assert closed.is_set()
    assert len(produced) <= 4  # the item handed over, `depth` queued, one waiting to be queued
