"""Collect scripted-expert demonstrations into a robomimic-layout HDF5 file.

    python experiments/collect_demos.py --config=configs/can.py --out=demos/can_200.hdf5
    python experiments/collect_demos.py --config=configs/can.py --config.demos.num_demos=500 \\
        --config.env.kwargs.noise_max=0.3 --out=demos/can_noisy.hdf5

The file has `data/demo_<i>/obs/<key>` (robomimic low_dim keys for MJX tasks), `actions`,
`rewards`, `dones`, and `data.attrs['env_args']` (env name and kwargs). Use it for training with
`--config.demos.path=<file>`. With the same config and seed the demos equal those `train.py`
collects into its workdir. An existing --out is never overwritten unless --overwrite is given.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ogpo_jax.training import cli  # noqa: E402
from ogpo_jax import envs  # noqa: E402
from ogpo_jax.training import compile_cache, pipeline, rundir, spec  # noqa: E402
from ogpo_jax.training.config import validate  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/can.py", "Task config (env, demos.num_demos, seed).")
_OUT = flags.DEFINE_string("out", None, "Output HDF5 path.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --out file.")


def main(argv):
    del argv
    compile_cache.enable(print)
    config = _CONFIG.value
    validate(config)
    if os.path.exists(_OUT.value) and not _OVERWRITE.value:
        raise SystemExit(f"--out={_OUT.value!r} exists; pass --overwrite to replace it")
    env, expert, episode_length = envs.make(config.env.name, **spec.env_kwargs(config))
    k_demo = rundir.stage_keys(config)[0]
    print(f"[demos] {config.demos.num_demos} episodes of {config.env.name!r} (<= {episode_length} steps each); "
          "the first call compiles the rollout")
    pipeline.collect_demos_to_file(config, env, expert, episode_length, _OUT.value, k_demo)


if __name__ == "__main__":
    app.run(cli.main(main))
