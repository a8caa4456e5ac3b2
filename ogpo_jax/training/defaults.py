"""Every run-config field with its default. Task configs (`configs/*.py`) start from
this (`configs/base.py` re-exports it), and `training.config.validate` checks a config's keys and
types against it.

    python experiments/train.py --config=configs/toy.py --config.algo.group_size=8
"""

from ml_collections import ConfigDict

from ogpo_jax.algorithms.config import all_defaults


def get_config(preset: str = "") -> ConfigDict:
    c = ConfigDict()
    c.seed = 0
    c.num_seeds = 1                      # S > 1: seeds seed..seed+S-1 finetuned as one vmapped program

    c.env = ConfigDict()
    c.env.name = "point_gaps"
    c.env.kwargs = ConfigDict()          # task-specific keyword arguments (see ogpo_jax.envs.make)
    c.env.chunk_horizon = 4              # H: actions per chunk, executed open-loop

    c.demos = ConfigDict()
    c.demos.num_demos = 200              # scripted-expert demonstrations collected into demos.hdf5
    c.demos.path = ""                    # read demonstrations from this HDF5 file instead
    c.demos.successful_only = False      # BC on the demos whose last reward is positive only

    c.bc = ConfigDict()
    c.bc.max_steps = 500_000             # flow-matching BC steps (upper bound)
    c.bc.batch_size = 256
    c.bc.lr = 3e-4
    c.bc.eval_every = 5_000              # BC steps between early-stop evaluations
    c.bc.eval_mode = "sde"               # sampler the early stop looks at
    c.bc.clipped = True                  # "clipped" init: stop once eval success >= stop_success
    c.bc.stop_success = 0.45
    c.bc.eval_episodes = 64
    # camera observations only (env.kwargs.obs='pixels...'): the image encoder BC trains, then freezes
    c.bc.encoder = "conv"                # 'conv' | 'vit' (ogpo_jax.encoders)
    c.bc.encoder_features = 64           # image features the actor and critics read beside proprio
    c.bc.augment_shift = 2               # random-shift augmentation of BC's images, in pixels (0: none)

    # every algorithm's fields; `algo.name` picks the algorithm and so the fields that apply
    c.algo = ConfigDict(all_defaults())

    c.train = ConfigDict()
    c.train.num_envs = 32
    c.train.total_env_steps = 2_000_000
    c.train.truncation_is_terminal = False  # True when the observation holds normalized time
    c.train.start_training = 10_000      # env steps collected before the first update
    c.train.updates_per_iteration = 1    # OGPO updates per iteration (all envs act one chunk)
    c.train.log_every_iterations = 50    # iterations per compiled interval (= per log record)
    c.train.replay_capacity = 2_000_000  # online data only; in chunk transitions (x H env steps)
    # 'chunk': the replay keeps the executed chunk transitions; 'step': every env step, in one ring
    # per env holding replay_capacity x H / num_envs steps, and batches are length-H windows starting
    # at any step (the paper's sampler; data/replay.py, "step windows")
    c.train.replay_windows = "chunk"
    c.train.success_capacity = 200_000
    c.train.eval_every_env_steps = 20_000
    c.train.eval_episodes = 64
    # the 'select' evaluation sampler (compare.py --eval_modes=alone,select): best of N chunks of the
    # policy by the target critics, heads combined by 'mean' or 'min', alike for every method
    c.train.eval_select_n = 8
    c.train.eval_select_aggregation = "mean"
    c.train.checkpoint_every_env_steps = 100_000
    c.train.max_checkpoints = 2
    c.train.nonfinite = "stop"           # non-finite loss/grad/Q: 'stop' (checkpoint last good state) | 'skip'
    c.train.matmul_precision = ""        # '' = JAX's default; 'highest' = full fp32 matmuls (jax.default_matmul_precision)
    c.train.sized_for = "any"            # 'gpu': a CPU start prints a cost estimate and points to a CPU preset

    c.distributed = ConfigDict()
    c.distributed.enabled = False        # multi-host: call jax.distributed.initialize
    c.distributed.coordinator_address = ""   # "" = $JAX_COORDINATOR_ADDRESS or auto-detect (TPU, SLURM)
    c.distributed.num_processes = 0      # 0 = $JAX_NUM_PROCESSES or auto-detect
    c.distributed.process_id = -1        # -1 = $JAX_PROCESS_ID or auto-detect
    c.distributed.num_devices = 1        # devices of the data-parallel mesh (0 = all, every host's)

    c.log = ConfigDict()
    c.log.tensorboard = True
    c.log.progress = True
    c.log.wandb = False                  # also log to Weights & Biases (pip install 'ogpo-jax[wandb]')
    c.log.wandb_project = "ogpo-jax"
    c.log.wandb_entity = ""              # "" = your default entity
    c.log.wandb_mode = ""                # "" = wandb's default ($WANDB_MODE); 'offline' needs no network
    return c
