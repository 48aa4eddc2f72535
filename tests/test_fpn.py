"""FPN: shapes over levels with equal and halving resolutions, top-down information flow."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxact.models.fpn import FPN, upsample_to

SHAPES = [(2, 16, 16, 8), (2, 8, 8, 16), (2, 8, 8, 24), (2, 4, 4, 32)]


def _features(seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s, np.float32)) for s in shapes]


@pytest.fixture(scope="module")
def fpn():
    model = FPN(dim=12)
    params = jax.jit(model.init)(jax.random.key(0), _features())
    return params, jax.jit(model.apply)


def test_shapes(fpn):
    params, apply = fpn
    outs = apply(params, _features())
    chex.assert_shape(outs, [(*s[:3], 12) for s in SHAPES])
    chex.assert_tree_all_finite(outs)


def test_information_flows_top_down_only(fpn):
    params, apply = fpn
    feats = _features()
    base = apply(params, feats)
    # A change in the coarsest level reaches every level...
    coarse = apply(params, feats[:-1] + [feats[-1] + 1.0])
    for a, b in zip(base, coarse, strict=True):
        assert np.abs(np.asarray(a - b)).max() > 1e-4
    # ...a change in the finest level stays there.
    fine = apply(params, [feats[0] + 1.0] + feats[1:])
    assert np.abs(np.asarray(base[0] - fine[0])).max() > 1e-4
    for a, b in zip(base[1:], fine[1:], strict=True):
        np.testing.assert_array_equal(a, b)


def test_single_level():
    model = FPN(dim=4)
    x = [jnp.ones((1, 4, 4, 3))]
    outs = model.apply(model.init(jax.random.key(0), x), x)
    chex.assert_shape(outs, [(1, 4, 4, 4)])


def test_upsample_to():
    x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    up = upsample_to(x, 4, 4)
    np.testing.assert_array_equal(up[0, :, :, 0], [[0, 0, 1, 1], [0, 0, 1, 1],
                                                   [2, 2, 3, 3], [2, 2, 3, 3]])
    chex.assert_shape(upsample_to(x, 3, 5), (1, 3, 5, 1))  # non-integer factor: resize
    assert upsample_to(x, 2, 2) is x


def test_levels_must_go_fine_to_coarse():
    feats = _features(shapes=[(1, 4, 4, 2), (1, 8, 8, 2)])
    with pytest.raises(ValueError, match="fine to coarse"):
        FPN(dim=4).init(jax.random.key(0), feats)
