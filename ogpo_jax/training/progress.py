"""Console feedback for long stages: compiles announced and timed, rates and ETAs.

Every program a stage compiles ahead of its first call goes through `compile_program`, which says
what is compiling (MJX programs take minutes on a CPU), times it and keeps the figure in
`COMPILES` for reports (`summary.json`, `benchmarks/device_suite.py`).
"""
from __future__ import annotations

import time

COMPILES: list = []      # {"what", "seconds"} of every compile_program call in this process, in order


def compile_program(jitted, args, what: str, log=print) -> float:
    """Compile `jitted` for `args` ahead of its first call (`lower(*args).compile()`; the call
    that follows reuses it), with a line before and after. Returns the seconds it took (a hit of
    the persistent compilation cache makes it short)."""
    log(f"[compile] {what} ...")
    t0 = time.perf_counter()
    jitted.lower(*args).compile()
    seconds = time.perf_counter() - t0
    COMPILES.append({"what": what, "seconds": seconds})
    log(f"[compile] {what}: {seconds:.1f}s")
    return seconds


def compile_seconds(prefix: str = "") -> dict:
    """{what: total seconds} of the compiles so far whose description starts with `prefix`."""
    out: dict = {}
    for c in COMPILES:
        if c["what"].startswith(prefix):
            out[c["what"]] = out.get(c["what"], 0.0) + c["seconds"]
    return out


def duration(seconds: float) -> str:
    """1234.5 -> '20m35s'; 42.1 -> '42s'; 7384 -> '2h03m'."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def rate_line(done: float, total: float, elapsed: float, unit: str) -> str:
    """'1234 <unit>/s, ETA 3m12s' for `done` of `total` after `elapsed` seconds; below one unit per
    second, '95.2 s per <unit singular>' instead (a rate that rounds to 0 says nothing)."""
    rate = done / elapsed if elapsed > 0 else float("nan")
    left = (total - done) / rate if rate and rate == rate and rate > 0 else float("nan")
    eta = duration(left) if left == left else "?"
    if 0 < rate < 1:                  # False for nan too
        return f"{1 / rate:.1f} s per {unit[:-1] if unit.endswith('s') else unit}, ETA {eta}"
    return f"{rate:.0f} {unit}/s, ETA {eta}"
