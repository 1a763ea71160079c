"""Run a producer iterable in a background thread, consume in the caller.

Generation (draws, table gathers) and consumption (hashing, bf16 conversion, writing) both
spend most of their time in numpy/hashlib/IO calls that release the GIL, so overlapping
them uses both cores. Order is preserved; memory is bounded by `depth` items in flight;
an exception in the producer is re-raised in the consumer.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def background(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as e:  # handed to the consumer
            q.put(_Failure(e))

    thread = threading.Thread(target=produce, name="gpt2v-producer", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
