"""Generative control policies (GCPs) behind one interface: flow matching (`flow.py`, `FlowSpec`)
and DDPM diffusion (`diffusion.py`, `DiffusionSpec`). The spec picks the class, so algorithms
call these functions with `config.gcp_spec` and run on either policy class unchanged:

    loss = gcp.bc_loss(apply_fn, params, obs, actions, valid, key, spec)
    actions = gcp.sample_ode(apply_fn, params, obs, key, spec, D)          # deterministic
    chain, actions, lp = gcp.sample_sde(apply_fn, params, obs, key, spec, D, log_prob=True)
    lp = gcp.chain_log_prob(apply_fn, params, obs, chain, spec)

`apply_fn(params, obs, x, t)` is the network (`networks.VelocityField`): the velocity for flow,
the predicted noise for diffusion; t = i / K at sampling step i for both (0 = noise).
"""
from __future__ import annotations

from ogpo_jax.gcp import diffusion, flow
from ogpo_jax.gcp.diffusion import DiffusionSpec
from ogpo_jax.gcp.flow import FlowSpec

POLICIES = ("flow", "diffusion")


def module(spec):
    """The module that implements `spec`'s policy class."""
    if isinstance(spec, FlowSpec):
        return flow
    if isinstance(spec, DiffusionSpec):
        return diffusion
    raise TypeError(f"not a generative-policy spec: {type(spec).__name__} (expected FlowSpec or DiffusionSpec)")


def bc_loss(apply_fn, params, obs, actions, valid, key, spec, weights=None):
    """BC loss of the policy class (flow matching / epsilon prediction), masked by `valid`."""
    if isinstance(spec, FlowSpec):
        return flow.bc_loss(apply_fn, params, obs, actions, valid, key, weights=weights)
    return module(spec).bc_loss(apply_fn, params, obs, actions, valid, key, spec, weights=weights)


def sample_ode(apply_fn, params, obs, key, spec, action_dim):
    return module(spec).sample_ode(apply_fn, params, obs, key, spec, action_dim)


def integrate_ode(apply_fn, params, obs, x0, spec):
    return module(spec).integrate_ode(apply_fn, params, obs, x0, spec)


def sample_sde(apply_fn, params, obs, key, spec, action_dim, log_prob=False):
    return module(spec).sample_sde(apply_fn, params, obs, key, spec, action_dim, log_prob=log_prob)


def chain_log_prob(apply_fn, params, obs, chain, spec):
    return module(spec).chain_log_prob(apply_fn, params, obs, chain, spec)


def step_log_probs(apply_fn, params, obs, chain, spec):
    return module(spec).step_log_probs(apply_fn, params, obs, chain, spec)
