"""Tests of kacdist.eval.

``single_threaded`` pins torch's intra-op pool and the BLAS pool to one thread for a test module: the
machines this suite runs on have 2 cores shared with other work, and there 2 threads were measured up to
10x slower than 1 (oversubscription), e.g. a 2048 x 2048 eigensolve 20 s instead of 2 s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)
