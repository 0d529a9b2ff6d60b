"""Who runs a trial: host, pid and the pid's start time, and whether that process still lives.

Runs and trials record their worker so that the next start can tell a trial left RUNNING by a
dead process (SIGKILL, power loss) from one that another live worker is training right now.
Only a process on this host can be checked directly; elsewhere the engine's heartbeat decides.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def _start_ticks(pid: int) -> str:
    """The process start time in clock ticks since boot (Linux), so a reused pid is not alive."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_worker() -> dict[str, str]:
    """This process as {host, pid, pid_start}: the tags and attributes that name a worker."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": str(pid), "pid_start": _start_ticks(pid)}


def is_alive(worker: Mapping[str, str] | None) -> bool | None:
    """True or False for a worker on this host; None when it cannot be told (another host)."""
    if not worker or worker.get("host") != socket.gethostname() or not worker.get("pid"):
        return None
    pid = int(worker["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    recorded = worker.get("pid_start", "")
    return not recorded or _start_ticks(pid) in ("", recorded)
