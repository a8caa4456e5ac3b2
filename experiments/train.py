"""Run the whole OGPO pipeline: collect demos -> clipped BC -> OGPO finetune.

    python experiments/train.py --config=configs/toy.py --workdir=runs/toy
    python experiments/train.py --config=configs/toy.py:quick --config.algo.group_size=8
Rerunning with the same --workdir skips finished stages and resumes finetuning.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ogpo_jax.training import pipeline  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/toy.py", "Config file, optionally with ':preset'.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<env>_seed<seed>).")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint step at INFO
    config = _CONFIG.value
    workdir = _WORKDIR.value or os.path.join("runs", f"{config.env.name}_seed{config.seed}")
    print(f"[train] workdir {workdir}")
    pipeline.run(config, workdir)


if __name__ == "__main__":
    app.run(main)
