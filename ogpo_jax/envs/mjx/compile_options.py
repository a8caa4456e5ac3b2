"""Per-program XLA options for programs that step MJX environments.

jaxlib 0.10.x (the newest jaxlib on Python 3.11) generates pathological CPU code through its
fusion emitters for MJX's vmapped kinematic-tree scans: on the 2-core CI machine a 7-body hinge
chain at batch 64 took 0.84-1.35 s per `mjx.kinematics` call instead of 1.4-3 ms, which made the
Can task ~100x slower than it should be. Turning the emitters off fixes MJX but slows the OGPO
actor update ~1.5x (toy scale, `benchmarks/update_step.py`), so it is applied per compiled program
(`jax.jit(..., compiler_options=...)`) and only to programs that step an MJX environment, never
through the process-wide XLA_FLAGS. Other jaxlib versions do not know the option (XLA rejects
unknown options), so it is used only with jaxlib 0.10.x on the CPU backend.

With the emitters off, the same jaxlib has a second cliff: one `vmap(mjx.step)` of the Can model
over more than ~200 environments never finished in minutes (batch 128: 28 ms, 160: 22 ms,
192: 35 ms per physics step; 224, 255, 256, 320: > 100 s), although each stage of `mjx.step`
alone (fwd_position ... solve, implicit) runs in 1-40 ms at batch 256. jax 0.12 has no cliff
(148 ms per physics step at batch 256). `max_vmap_batch()` caps the vmapped batch there:
`VmapWrapper` and the demo collector run larger batches as `lax.map` over sub-batches.
"""
from __future__ import annotations

import importlib.metadata

import jax


def _affected_jaxlib() -> bool:
    try:
        return importlib.metadata.version("jaxlib").startswith("0.10.")
    except importlib.metadata.PackageNotFoundError:
        return False


def _affected() -> bool:
    return _affected_jaxlib() and jax.default_backend() == "cpu"


def compiler_options() -> dict | None:
    """XLA compiler options for a program that steps MJX on the default backend (None: none needed)."""
    if _affected():
        return {"xla_cpu_use_fusion_emitters": False}
    return None


def max_vmap_batch() -> int | None:
    """Largest batch to `vmap` an MJX step over in one go on this backend (None: no limit)."""
    if _affected():
        return 128
    return None
