"""What the peer benchmarks share: a network watch, result files, the machine line and the epochs that
fill a wall-clock budget. Imported by benchmarks/*_peers.py, which run as scripts (this folder is
first on their ``sys.path``) and re-run themselves as worker processes."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any


def watch_network() -> list[str]:
    """Record every internet connection and name lookup this process tries (it does not block them)."""
    import socket

    tried: list[str] = []

    def hook(event: str, args: tuple) -> None:
        if event == "socket.getaddrinfo":
            tried.append(f"lookup {args[0]}:{args[1]}")
        elif event == "socket.connect":
            sock, address = args[0], args[1]
            if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
                tried.append(f"connect {address}")
        elif event == "urllib.Request":
            tried.append(f"urllib {args[0]}")

    sys.addaudithook(hook)
    return tried


def write_result(path: str, payload: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(payload))


def fill_epochs(probe: dict[str, Any], budget_s: float) -> tuple[int, float, float]:
    """Epochs that fill ``budget_s``: the first pass (with its warm-up) and then passes like the later ones."""
    first = probe["pass_s"][0]
    later = statistics.median(probe["pass_s"][1:]) if len(probe["pass_s"]) > 1 else first
    return max(1, 1 + math.floor((budget_s - first) / later)), first, later


def machine_note(args: argparse.Namespace) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{cpu}, {cores} usable cores{mem}; {args.threads} torch thread(s) per contender; "
            f"load average {load}; {platform.system()} {platform.release()}, Python {platform.python_version()}")
