"""Run logging: tensorboardX event files, `metrics.jsonl`, optionally Weights & Biases, and a
console progress bar."""
from __future__ import annotations

import hashlib
import json
import os

from tqdm import tqdm

_CONSOLE_KEYS = (
    ("rollout/success", "succ"), ("eval/success_ode", "ode"), ("eval/success_sde", "sde"),
    ("critic/loss", "qloss"), ("actor/clip_frac", "clip"), ("env_steps_per_s", "sps"),
)


def start_wandb(workdir: str, project: str, entity: str = "", mode: str = "", name: str = "", group: str = "",
                config: dict | None = None):
    """A Weights & Biases run whose files live in `workdir`/wandb. Its id is derived from the
    absolute `workdir`, so a resumed run (same workdir) continues the same W&B run; several runs
    (one per seed) can be open in one process. mode 'offline' writes locally (`wandb sync` later)."""
    try:
        import wandb
    except ImportError as e:
        raise ImportError("log.wandb=True needs the wandb package: pip install 'ogpo-jax[wandb]' "
                          "(or pip install wandb), or set --config.log.wandb=False") from e
    run_id = hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:16]
    return wandb.init(project=project, entity=entity or None, mode=mode or None, name=name or None,
                      group=group or None, config=config, dir=workdir, id=run_id, resume="allow",
                      reinit="create_new")


class Logger:
    """Writes every record to metrics.jsonl, TensorBoard and (if given `wandb` settings, the
    keyword arguments of `start_wandb`) Weights & Biases; shows a progress bar over env steps."""

    def __init__(self, workdir: str, total_env_steps: int, initial_env_steps: int = 0,
                 tensorboard: bool = True, progress: bool = True, purge_step: int | None = None,
                 wandb: dict | None = None):
        """`purge_step`: on resume, TensorBoard drops events at steps >= it that an interrupted run
        wrote after its last checkpoint (metrics.jsonl is trimmed by the pipeline)."""
        os.makedirs(workdir, exist_ok=True)
        self.wandb = start_wandb(workdir, **wandb) if wandb is not None else None
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
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "env_steps"}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
            self.writer.flush()
        if self.wandb is not None:     # records of one env step (train, eval) merge into one W&B step
            self.wandb.log(scalars, step=int(step))
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
        if self.wandb is not None:
            self.wandb.finish()
