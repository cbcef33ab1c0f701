"""Which CPUs a replica's serving threads run on (Linux CPU affinity).

A replica's threads take turns holding one GIL, so together they use about one core. Left
to the scheduler, each handoff of the GIL between two threads often wakes a thread on the
other core (on a VM: an interprocessor interrupt and an idle vCPU waking up), whose cache is
cold. With all of them on one CPU a handoff is an ordinary switch on that CPU. Measured on 2
cores, 64 connections, 1 replica (bench/README.md "Serving threads on one CPU"): the cached
mix at 0.8-0.9x the server CPU per call and 1.1-1.2x the req/s, cache misses at 0.5-0.8x.

`pin_process` puts every thread of this process on the serving CPUs (threads started later
inherit them). Two kinds of work leave them:
- processes started from here (Envoy and Redis in `taskapi dev`) run on the CPUs left over
  (`off_serving`), so they never take the serving CPU from the calls;
- password hashing, which releases the GIL for ~0.2 s of pure CPU, runs on every CPU the
  process had (`unpinned`): confined to the left-over CPUs, sign-ins during a storm of them
  halved (2.3/s against 3.5-3.7/s), and reads beside them were no faster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

# Linux numbers CPUs below its build's NR_CPUS (at most 8192); this bounds what a list may name.
MAX_CPU = 8191
# One item of a list: ASCII digits only (str.isdigit also takes "²" and "١"), at most 4 of them.
_ITEM = re.compile(r"([0-9]{1,4})(?:-([0-9]{1,4}))?")

# Set while the process is pinned: the CPUs it could use before, and those the pin left over.
_before: frozenset[int] | None = None
_left_over: frozenset[int] | None = None


def supported() -> bool:
    return hasattr(os, "sched_setaffinity")


def allowed() -> frozenset[int]:
    """The CPUs this thread may run on (all of them where affinity is not supported)."""
    if not supported():
        return frozenset(range(os.cpu_count() or 1))
    return frozenset(os.sched_getaffinity(0))


def parse_cpu_list(text: str) -> frozenset[int]:
    """A Linux CPU list, as taskset -c and cpusets write it: `1`, `0,2`, `0-3,8`."""
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        item = _ITEM.fullmatch(part)
        if item is None:
            raise ValueError(f"{part[:20]!r} is not a CPU number or range like 0-3")
        low, high = int(item[1]), int(item[2] or item[1])
        if low > high or high > MAX_CPU:
            raise ValueError(f"{part!r} is not a range of CPUs from 0 to {MAX_CPU}")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def text(cpus: frozenset[int]) -> str:
    """`0,2,3`, for messages and logs."""
    return ",".join(str(cpu) for cpu in sorted(cpus))


def dev_serving() -> frozenset[int] | None:
    """`taskapi dev`'s serving CPU: the last one this process may use, when there are at least
    two (the others are left to Envoy and Redis); else None, no pinning."""
    cpus = allowed()
    if not supported() or len(cpus) < 2:
        return None
    return frozenset({max(cpus)})


def pin_process(serving: frozenset[int]) -> None:
    """Every thread of this process onto `serving` (see the module's docstring for what leaves it)."""
    global _before, _left_over
    before = allowed()
    _set_all_threads(serving)
    _before, _left_over = before, frozenset(before - serving) or before


@contextmanager
def pinned(serving: frozenset[int]) -> Iterator[None]:
    """`pin_process` for the block; then every thread of the process may run where it could
    before (for a caller that goes on running: `taskapi dev` called in process, by tests)."""
    global _before, _left_over
    pin_process(serving)
    try:
        yield
    finally:
        assert _before is not None  # set by pin_process
        _set_all_threads(_before)
        _before = _left_over = None


def described() -> tuple[str, str, str]:
    """(this thread's CPUs, the left-over ones, all the process had) as text, for start-up lines."""
    here = allowed()
    return text(here), text(_left_over or here), text(_before or here)


@contextmanager
def off_serving() -> Iterator[None]:
    """The calling thread on the left-over CPUs for the block, so a process started inside
    it inherits them (nothing changes when the process is not pinned)."""
    with _running_on(_left_over):
        yield


@contextmanager
def unpinned() -> Iterator[None]:
    """The calling thread on every CPU the process had before it was pinned, for the block."""
    with _running_on(_before):
        yield


@contextmanager
def _running_on(cpus: frozenset[int] | None) -> Iterator[None]:
    if cpus is None:
        yield
        return
    here = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)  # pid 0: the calling thread only
    try:
        yield
    finally:
        os.sched_setaffinity(0, here)


def _set_all_threads(cpus: frozenset[int]) -> None:
    for thread in os.listdir("/proc/self/task"):  # sched_setaffinity(pid) sets one thread only
        try:
            os.sched_setaffinity(int(thread), cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            pass
