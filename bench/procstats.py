"""CPU and memory of groups of processes, read from /proc (Linux only; no dependency).

A group is named by root process ids; it holds those processes, their descendants and, for a
root started in a new session, every process of that session (so a proxy command that starts
workers or a load balancer is measured whole). CPU is counted per process between two
snapshots: a process born in between counts from its birth, one that ended in between loses
its last moments (snapshots are taken at the edges of each measured window, so little is lost).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    session: int
    ticks: int  # utime + stime
    rss: int  # bytes


def processes() -> dict[int, Proc]:
    """Every process this user can read, by pid."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = text.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        found[pid] = Proc(
            pid,
            ppid=int(fields[1]),
            session=int(fields[3]),
            ticks=int(fields[11]) + int(fields[12]),
            rss=int(fields[21]) * PAGE,
        )
    return found


def members(table: dict[int, Proc], roots: list[int], sessions: bool) -> list[int]:
    """The roots, their descendants and (`sessions`) the sessions they lead."""
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    chosen = {pid for pid in roots if pid in table}
    if sessions:
        chosen |= {proc.pid for proc in table.values() if proc.session in roots}
    stack = list(chosen)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in chosen:
                chosen.add(child)
                stack.append(child)
    return sorted(chosen)


def pss(pid: int) -> int | None:
    """Proportional set size in bytes (shared pages divided among their users), if readable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def run_queue_ns(pid: int) -> int:
    """Nanoseconds the threads of a process have waited, runnable, for a CPU (schedstat)."""
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(task.path, "schedstat").read_text().split()[1])
    except OSError:
        pass
    return total


def busy_ticks() -> int:
    """Ticks all CPUs spent running processes (user, nice, system) or stolen by the hypervisor.
    Interrupts and softirqs are left out: our own loopback traffic lands there."""
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return user + nice + system + steal


@dataclass
class Group:
    name: str
    roots: list[int]
    sessions: bool = False  # the roots were started with start_new_session=True


@dataclass
class Snapshot:
    at: float  # time.monotonic()
    busy: int
    ticks: dict[str, dict[int, int]] = field(default_factory=dict)  # group -> pid -> ticks
    rss: dict[str, int] = field(default_factory=dict)  # group -> bytes
    waited: dict[str, int] = field(default_factory=dict)  # group -> run-queue ns


def snapshot(groups: list[Group], at: float) -> Snapshot:
    table = processes()
    shot = Snapshot(at=at, busy=busy_ticks())
    for group in groups:
        pids = members(table, group.roots, group.sessions)
        shot.ticks[group.name] = {pid: table[pid].ticks for pid in pids}
        shot.rss[group.name] = sum(table[pid].rss for pid in pids)
        shot.waited[group.name] = sum(run_queue_ns(pid) for pid in pids)
    return shot


@dataclass(frozen=True)
class Usage:
    """CPU between two snapshots, in cores (CPU seconds per wall second)."""

    seconds: float  # wall
    cores: dict[str, float]  # per group
    busiest: dict[str, float]  # the busiest single process of each group
    waiting: dict[str, float]  # seconds per second the group's threads waited for a CPU
    machine: float  # every process on the machine
    others: float  # the machine minus all groups: someone else's load

    @classmethod
    def between(cls, before: Snapshot, after: Snapshot) -> Usage:
        wall = max(after.at - before.at, 1e-9)
        cores, busiest = {}, {}
        for name, now in after.ticks.items():
            then = before.ticks.get(name, {})
            per_process = [(ticks - then.get(pid, 0)) / TICKS / wall for pid, ticks in now.items()]
            cores[name] = sum(per_process)
            busiest[name] = max(per_process, default=0.0)
        # Per-CPU counters of a tickless kernel lag a little: never more than every CPU.
        waiting = {
            name: max(0, ns - before.waited.get(name, 0)) / 1e9 / wall
            for name, ns in after.waited.items()
        }
        machine = min((after.busy - before.busy) / TICKS / wall, len(os.sched_getaffinity(0)))
        return cls(wall, cores, busiest, waiting, machine, max(0.0, machine - sum(cores.values())))


def memory(group: Group) -> tuple[int, int, int, int]:
    """(RSS, PSS, open files, processes) of a group now; PSS falls back to RSS if unreadable."""
    table = processes()
    pids = members(table, group.roots, group.sessions)
    rss = sum(table[pid].rss for pid in pids)
    shares = [pss(pid) for pid in pids]
    proportional = sum(s for s in shares if s is not None) if None not in shares else rss
    return rss, proportional, sum(open_files(pid) for pid in pids), len(pids)
