"""The MJX backend is a field of the MJX tasks (`env.kwargs.impl`), with named errors."""
import importlib.util

import pytest

from configs import can
from ogpo_jax import envs


@pytest.mark.skipif(importlib.util.find_spec("warp") is not None, reason="warp-lang is installed here")
def test_warp_without_warp_lang_is_a_named_error():
    with pytest.raises(ImportError, match=r"env\.kwargs\.impl='warp' needs the warp-lang package"):
        envs.make("can", impl="warp")


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"env\.kwargs\.impl='cuda'.*\('jax', 'warp'\)"):
        envs.make("can", impl="cuda")


def test_backend_is_a_config_field_that_overrides():
    c = can.get_config("quick")
    c.env.kwargs.impl = "warp"
    with pytest.raises((ImportError, ValueError), match=r"env\.kwargs\.impl='warp'"):
        envs.make(c.env.name, **c.env.kwargs.to_dict())
