"""Run the whole OGPO pipeline: collect demos -> clipped BC -> OGPO finetune.

    python experiments/train.py --config=configs/toy.py --workdir=runs/toy
    python experiments/train.py --config=configs/toy.py:quick --config.algo.group_size=8
    python experiments/train.py --config=configs/can.py --config.num_seeds=4          # 4 vmapped seeds
    python experiments/train.py --config=configs/can.py --config.distributed.num_devices=0   # all GPUs
    python experiments/train.py --config=configs/can.py --config.distributed.enabled=True \
        --config.distributed.num_devices=0        # on every host of a TPU pod slice / GPU cluster

    python experiments/train.py --config=configs/can.py --time_budget_s=600    # finetune until ~10 min

Rerunning with the same --workdir skips finished stages and resumes finetuning from the latest
checkpoint, moving a damaged one aside (SIGTERM / Ctrl-C checkpoint before stopping). An
expected failure prints one line (`--debug` shows the traceback). Exit codes: 0 done, 1 error,
2 stopped by a non-finite loss/gradient/Q-value (last good state checkpointed), 130 interrupted.

`--time_budget_s`: a wall-clock budget counted from the command's start. Finetuning stops at the
first log interval that ends past it, then checkpoints and evaluates as at the end (summary.json
says `stopped_at_budget`); demos and BC are never cut. `benchmarks/device_suite.py` sets it.
The last line reports the persistent compilation cache's hits and misses in this process.
"""
import time

_STARTED = time.time()          # the time budget counts the imports too

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ogpo_jax.training import cli, compile_cache, distributed, pipeline  # noqa: E402
from ogpo_jax.training import spec as spec_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/toy.py", "Config file, optionally with ':preset'.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<env>_seed<seed>).")
_TIME_BUDGET = flags.DEFINE_float(
    "time_budget_s", 0.0, "Wall-clock seconds from the command's start (0: no budget): finetuning stops at the "
    "first log interval past it, then checkpoints and evaluates as at the end; demos and BC are not cut.")


def main(argv):
    del argv
    budget = _TIME_BUDGET.value
    if not budget >= 0:
        raise ValueError(f"--time_budget_s={budget}: must be >= 0 seconds (0: no budget)")
    cache = compile_cache.enable(print)
    counts = compile_cache.count_events()
    logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint step at INFO
    config = _CONFIG.value
    distributed.initialize(config.distributed)
    # every check (config, env kwargs, device memory) once, before any stage runs
    spec = spec_lib.make(config)
    workdir = _WORKDIR.value or os.path.join("runs", f"{config.env.name}_seed{config.seed}")
    if distributed.is_main_process():
        print(f"[train] workdir {workdir}; XLA compilation cache "
              + (f"{cache} (JAX_COMPILATION_CACHE_DIR= turns it off)" if cache else "off"))
    try:
        pipeline.run(spec, workdir, stop_at=_STARTED + budget if budget > 0 else None)
    finally:
        if cache and distributed.is_main_process():
            # benchmarks/device_suite.py reads this line
            print(f"[train] XLA compilation cache: {counts['hits']} hits, {counts['lookups'] - counts['hits']} "
                  f"misses ({counts['lookups']} lookups; {counts['written']} programs written)", flush=True)


if __name__ == "__main__":
    app.run(cli.main(main))
