"""Orbax checkpoints of whole training states (any pytree: LoopState, actor params)."""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Keeps the last `max_to_keep` checkpoints under `directory`; steps are env steps."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step: int, tree) -> None:
        self.manager.save(int(step), args=ocp.args.StandardSave(tree))
        self.manager.wait_until_finished()

    def restore(self, like, step=None):
        """Restore into the structure (and dtypes/shapes) of `like`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self):
        self.manager.close()
