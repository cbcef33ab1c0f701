"""Where a real process's threads may run, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path

from taskapi.server import affinity


def thread_cpus(pid: int) -> dict[int, frozenset[int]]:
    """Thread id -> the CPUs it may run on, for every thread of `pid`."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
        allowed = next(line for line in status.splitlines() if line.startswith("Cpus_allowed_list:"))
        found[int(task.name)] = affinity.parse_cpu_list(allowed.split(":", 1)[1])
    return found


def children(pid: int) -> dict[int, str]:
    """Child process id -> its command name, for the direct children of `pid`."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            child_ids = (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in child_ids:
            try:
                found[int(child)] = Path(f"/proc/{child}/comm").read_text().strip()
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found
