"""Run logging: tensorboardX event files, `metrics.jsonl`, and a console progress bar."""
from __future__ import annotations

import json
import os

from tqdm import tqdm

_CONSOLE_KEYS = (
    ("rollout/success", "succ"), ("eval/success_ode", "ode"), ("eval/success_sde", "sde"),
    ("critic/loss", "qloss"), ("actor/clip_frac", "clip"), ("env_steps_per_s", "sps"),
)


class Logger:
    """Writes every record to metrics.jsonl and TensorBoard; shows a progress bar over env steps."""

    def __init__(self, workdir: str, total_env_steps: int, initial_env_steps: int = 0,
                 tensorboard: bool = True, progress: bool = True, purge_step: int | None = None):
        """`purge_step`: on resume, TensorBoard drops events at steps >= it that an interrupted run
        wrote after its last checkpoint (metrics.jsonl is trimmed by the pipeline)."""
        os.makedirs(workdir, exist_ok=True)
        self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(os.path.join(workdir, "tb"), purge_step=purge_step)
        self.bar = tqdm(total=total_env_steps, initial=initial_env_steps, unit="env step",
                        dynamic_ncols=True, disable=not progress, mininterval=1.0)
        self._last = initial_env_steps

    def log(self, step: int, record: dict):
        record = {"env_steps": int(step), **{k: v for k, v in record.items() if k != "env_steps"}}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "env_steps":
                    self.writer.add_scalar(k, v, step)
            self.writer.flush()
        self.bar.update(max(step - self._last, 0))
        self._last = max(step, self._last)
        post = {short: f"{record[k]:.3g}" for k, short in _CONSOLE_KEYS if k in record}
        if post:
            self.bar.set_postfix(post, refresh=True)

    def write(self, msg: str):
        self.bar.write(msg)

    def close(self):
        self.bar.close()
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()
