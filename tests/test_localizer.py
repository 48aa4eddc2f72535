"""Sparse R-CNN-style localizer: shapes, initial proposals, deep-supervision outputs, gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxact.models.localizer import SparseLocalizer, grid_box_logits, multilevel_roi_align
from jaxact.ops.roi_align import roi_align

N, D = 6, 16


def _pyramid(seed=0, b=2):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s, np.float32)) for s in [(b, 16, 16, D), (b, 8, 8, D)]]


@pytest.fixture(scope="module")
def localizer():
    model = SparseLocalizer(num_queries=N, dim=D, num_stages=2, num_heads=2, dynamic_dim=4,
                            ffn_dim=32, roi_size=3)
    params = jax.jit(model.init)(jax.random.key(0), _pyramid())
    return model, params, jax.jit(model.apply)(params, _pyramid())


def test_shapes_and_ranges(localizer):
    _, params, out = localizer
    chex.assert_shape([out["boxes"], out["person_logits"], out["query_features"]],
                      [(2, N, 4), (2, N), (2, N, D)])
    assert len(out["aux_outputs"]) == 1
    chex.assert_shape([out["aux_outputs"][0]["boxes"], out["aux_outputs"][0]["person_logits"]],
                      [(2, N, 4), (2, N)])
    chex.assert_tree_all_finite(out)
    boxes = np.asarray(out["boxes"])
    assert np.all((boxes > 0) & (boxes < 1))


def test_initial_predictions_are_the_grid_proposals(localizer):
    # The box regressors start at zero, so every stage predicts the learned proposals.
    _, params, out = localizer
    init = jax.nn.sigmoid(params["params"]["init_boxes"])
    for boxes in (out["boxes"], out["aux_outputs"][0]["boxes"]):
        np.testing.assert_allclose(boxes, jnp.broadcast_to(init, boxes.shape), atol=1e-6)
    # Every clip in the batch starts from the same proposals.
    np.testing.assert_allclose(out["boxes"][0], out["boxes"][1], atol=1e-6)


def test_grid_box_logits():
    boxes = np.asarray(jax.nn.sigmoid(grid_box_logits(None, (20, 4))))
    assert len(np.unique(boxes[:, :2], axis=0)) == 20  # distinct centres
    assert np.all((boxes[:, :2] > 0.05) & (boxes[:, :2] < 0.95))
    np.testing.assert_allclose(boxes[:, 2:], 0.4, rtol=1e-5)


def test_multilevel_roi_align_is_max_over_levels():
    feats = _pyramid(b=1)
    boxes = jnp.array([[[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]]])
    pooled = jax.jit(multilevel_roi_align, static_argnums=2)(feats, boxes, 3)
    chex.assert_shape(pooled, (1, 2, 3, 3, D))
    single = jax.jit(lambda f, b: roi_align(f, b, 3, 2, normalized=True))
    per_level = [single(f[0], boxes[0]) for f in feats]
    np.testing.assert_allclose(pooled[0], np.maximum(*per_level), rtol=1e-6)


def test_gradients_reach_proposals_and_features(localizer):
    model, params, _ = localizer
    feats = _pyramid()

    def loss(p, f):
        out = model.apply(p, f)
        # The proposals learn through the first stage's prediction (later stages stop gradients).
        first = out["aux_outputs"][0]
        return jnp.sum(out["boxes"] ** 2) + jnp.sum(out["person_logits"]) + jnp.sum(first["boxes"])

    # Step away from the zero-initialised regressors so box gradients are not trivially zero.
    params = jax.tree.map(lambda p: p + 0.05, params)
    g_params, g_feats = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, feats)
    chex.assert_tree_all_finite((g_params, g_feats))
    assert np.abs(np.asarray(g_params["params"]["init_boxes"])).max() > 0
    for g in g_feats:
        assert np.abs(np.asarray(g)).max() > 0
