"""Where and when a benchmark ran: the date and the machine, as its JSON records them."""

from __future__ import annotations

import datetime
import os
import platform


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def machine_description() -> str:
    """Host name, CPU cores this process may use, CPU model and accelerators, in one line."""
    import jax  # only here: numpy-only benchmarks need not load it

    text = f"{platform.node()}: {cpu_cores()} CPU cores ({cpu_model()})"
    devices = jax.devices()
    if devices[0].platform != "cpu":
        text += f", {len(devices)} x {devices[0].device_kind} ({devices[0].platform})"
    return text
