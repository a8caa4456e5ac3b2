"""The scripted experts that generate demonstrations, each defined beside its task.

An expert is a pair of pure functions: `init(key) -> latent` (per-episode choices such as which
gap to use and how noisy this demonstrator is) and `act(latent, obs, key) -> action`;
`ogpo_jax.training.collect.collect_demos` rolls one out. This module names them in one place and
imports the MJX ones only when they are asked for (MuJoCo stays optional for the toy tasks).
"""
from __future__ import annotations

import importlib

from ogpo_jax.envs.toy import PointGapsExpert

_MJX = {"CanExpert": "can", "SquareExpert": "square", "TwoNutsExpert": "two_nuts"}

__all__ = ["PointGapsExpert", *_MJX]


def __getattr__(name: str):
    if name in _MJX:
        return getattr(importlib.import_module(f"ogpo_jax.envs.mjx.{_MJX[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
