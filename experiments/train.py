"""Run the whole OGPO pipeline: collect demos -> clipped BC -> OGPO finetune.

    python experiments/train.py --config=configs/toy.py --workdir=runs/toy
    python experiments/train.py --config=configs/toy.py:quick --config.algo.group_size=8
    python experiments/train.py --config=configs/can.py --config.num_seeds=4          # 4 vmapped seeds
    python experiments/train.py --config=configs/can.py --config.distributed.num_devices=0   # all GPUs
    python experiments/train.py --config=configs/can.py --config.distributed.enabled=True \
        --config.distributed.num_devices=0        # on every host of a TPU pod slice / GPU cluster

Rerunning with the same --workdir skips finished stages and resumes finetuning from the latest
checkpoint, moving a damaged one aside (SIGTERM / Ctrl-C checkpoint before stopping). An
expected failure prints one line (`--debug` shows the traceback). Exit codes: 0 done, 1 error,
2 stopped by a non-finite loss/gradient/Q-value (last good state checkpointed), 130 interrupted.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ogpo_jax.training import cli, compile_cache, distributed, pipeline  # noqa: E402
from ogpo_jax.training import spec as spec_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/toy.py", "Config file, optionally with ':preset'.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<env>_seed<seed>).")


def main(argv):
    del argv
    cache = compile_cache.enable(print)
    logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint step at INFO
    config = _CONFIG.value
    distributed.initialize(config.distributed)
    # every check (config, env kwargs, device memory) once, before any stage runs
    spec = spec_lib.make(config)
    workdir = _WORKDIR.value or os.path.join("runs", f"{config.env.name}_seed{config.seed}")
    if distributed.is_main_process():
        print(f"[train] workdir {workdir}; XLA compilation cache "
              + (f"{cache} (JAX_COMPILATION_CACHE_DIR= turns it off)" if cache else "off"))
    pipeline.run(spec, workdir)


if __name__ == "__main__":
    app.run(cli.main(main))
