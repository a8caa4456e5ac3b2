"""Per-program XLA options for programs that step MJX environments.

jaxlib 0.10.x (the newest jaxlib on Python 3.11) generates pathological CPU code through its
fusion emitters for MJX's vmapped kinematic-tree scans: on the 2-core CI machine a 7-body hinge
chain at batch 64 took 0.84-1.35 s per `mjx.kinematics` call instead of 1.4-3 ms, which made the
Can task ~100x slower than it should be. Turning the emitters off fixes MJX but slows the OGPO
actor update ~1.5x (toy scale, `benchmarks/update_step.py`), so it is applied per compiled program
(`jax.jit(..., compiler_options=...)`) and only to programs that step an MJX environment, never
through the process-wide XLA_FLAGS. Other jaxlib versions do not know the option (XLA rejects
unknown options), so it is used only with jaxlib 0.10.x on the CPU backend.
"""
from __future__ import annotations

import importlib.metadata

import jax


def _affected_jaxlib() -> bool:
    try:
        return importlib.metadata.version("jaxlib").startswith("0.10.")
    except importlib.metadata.PackageNotFoundError:
        return False


def compiler_options() -> dict | None:
    """XLA compiler options for a program that steps MJX on the default backend (None: none needed)."""
    if _affected_jaxlib() and jax.default_backend() == "cpu":
        return {"xla_cpu_use_fusion_emitters": False}
    return None
