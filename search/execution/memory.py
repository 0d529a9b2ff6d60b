"""How much memory this machine can still give the sweep: the one reading every limit uses.

`search.workers` is capped by it (search/execution/pool.py) and the decoded image set is moved to
the file cache when it would not fit (search/execution/data_fit.py). Inside a container the
kernel's MemAvailable is the host's: the container's own cgroup limit (v2 `memory.max`, v1
`memory.limit_in_bytes`) less what the cgroup uses, not counting file pages it can drop, is the
real bound, and the smaller of the two is returned.
"""

from __future__ import annotations

from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def available_mb() -> float | None:
    """The memory available to this process in MB: MemAvailable, or less under a cgroup limit;
    None where neither can be read."""
    free = [mb for mb in (_meminfo_mb(), _cgroup_free_mb()) if mb is not None]
    return min(free) if free else None


def _meminfo_mb() -> float | None:
    try:
        with open("/proc/meminfo") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cgroup_free_mb() -> float | None:
    """The cgroup limit less its usage (reclaimable file pages counted free); None: no limit."""
    for folder, limit_name, usage_name, inactive in (
        *((f, "memory.max", "memory.current", "inactive_file") for f in _folders(CGROUP, "")),
        *(
            (f, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
            for f in _folders(CGROUP / "memory", "memory")
        ),
    ):
        limit, usage = _number(folder / limit_name), _number(folder / usage_name)
        if limit is None or usage is None:
            continue
        if limit >= UNLIMITED:
            return None
        reclaimable = _stat(folder / "memory.stat", inactive)
        return max(0, limit - usage + reclaimable) / 2**20
    return None


def _folders(root: Path, controller: str) -> list[Path]:
    """This process's cgroup folder under `root` (named in /proc/self/cgroup), then `root`
    itself (a container sees its own cgroup at the root of the mount)."""
    found = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == controller or (not controller and controllers == ""):
                found.append(root / path.lstrip("/"))
    except (OSError, ValueError):
        pass
    return [*found, root]


def _number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return UNLIMITED
    return int(text) if text.isdigit() else None


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0
