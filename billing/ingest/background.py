"""Work done one step ahead in a second thread.

pyarrow, the CSV reader and the database drivers release the GIL while they work, so on a
multi-core machine a producer thread overlaps them with the consumer: the reading of a file with
its checks and summing (pipeline.py), the formatting of charge rows with their insert (writer.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Queue
from typing import TypeVar

T = TypeVar("T")


def produced_in_background(items: Iterator[T], ahead: int, *, name: str) -> Iterator[T]:
    """The items, made in a thread of their own up to `ahead` in advance, in order. An exception of
    the producer is raised here, in the consumer, where the item would have come; a consumer that
    stops early stops the producer, and `items` is closed in the producer's thread (a reader's
    `finally` runs there, not whenever the garbage collector gets to it). The producer must not
    touch what the consumer uses (the database connection, above all)."""
    queue: Queue = Queue(maxsize=ahead)
    done = object()
    failure: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                queue.put(item)
        except BaseException as exc:  # handed to the consumer, re-raised there
            failure.append(exc)
        finally:
            try:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
            except BaseException as exc:
                failure.append(exc)
            finally:
                queue.put(done)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not done:
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            while not queue.empty():
                queue.get_nowait()
            thread.join(timeout=0.1)
    if failure:
        raise failure[0]
