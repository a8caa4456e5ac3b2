"""MuJoCo MJX tasks (`impl='jax'`: the same code runs on CPU, GPU and TPU)."""
