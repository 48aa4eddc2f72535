"""ActionDetector: output shapes, keyframe-only localization, config building, FLOPs, overfitting."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxact import detection_losses as dl
from jaxact.models.detector import PRESETS, ActionDetector, PooledActionHead, gflops_per_clip

TINY = dict(num_actions=3, stem_width=8, widths=(8, 8, 16), stage_sizes=(1, 1, 1),
            strides=(1, 2, 1), dilations=(1, 1, 2), temporal_kernels=(3, 3, 3), fpn_dim=16,
            num_queries=6, localizer_stages=2, localizer_heads=2, dynamic_dim=4, ffn_dim=32,
            localizer_roi_size=3, action_roi_size=3, head_dim=16)
SHAPE = (2, 4, 32, 32, 3)


def _normal(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


@pytest.fixture(scope="module")
def tiny():
    model = ActionDetector(**TINY)
    video = _normal(SHAPE, 0)
    variables = jax.jit(model.init)(jax.random.key(1), video)
    return model, variables, jax.jit(model.apply)


def _assert_output_shapes(out, b, t, n, a, s, c, d, stages):
    chex.assert_shape([out["boxes"], out["person_logits"], out["action_logits"],
                       out["actor_features"], out["query_features"]],
                      [(b, n, 4), (b, n), (b, n, a), (b, n, t, s, s, c), (b, n, d)])
    assert len(out["aux_outputs"]) == stages - 1


def test_tiny_shapes_and_values(tiny):
    model, variables, apply = tiny
    out = apply(variables, _normal(SHAPE, 2))
    _assert_output_shapes(out, 2, 4, 6, 3, 3, 16, 16, 2)
    chex.assert_tree_all_finite(out)
    boxes = np.asarray(out["boxes"])
    assert np.all((boxes > 0) & (boxes < 1))


def test_default_model_shapes():
    # The CPU default on the classroom data's clip size, traced only.
    video = jax.ShapeDtypeStruct((1, 8, 128, 128, 3), jnp.float32)
    out, _ = jax.eval_shape(lambda v: ActionDetector().init_with_output(jax.random.key(0), v), video)
    _assert_output_shapes(out, 1, 8, 20, 5, 7, 64, 64, 3)


def test_localization_depends_on_keyframe_only(tiny):
    model, variables, apply = tiny
    # Move every parameter off its initial value: zero-initialised temporal residuals would make
    # the isolation hold trivially.
    rng = np.random.default_rng(3)
    variables = jax.tree.map(lambda p: p + 0.2 * rng.standard_normal(p.shape, np.float32),
                             variables)
    video = _normal(SHAPE, 4)
    key = SHAPE[1] // 2
    noise = 3.0 * _normal(SHAPE, 5)
    a = apply(variables, video)
    b = apply(variables, video + noise.at[:, key].set(0.0))
    for name in ("boxes", "person_logits", "query_features"):
        np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_array_equal(a["actor_features"][:, :, key], b["actor_features"][:, :, key])
    others = [t for t in range(SHAPE[1]) if t != key]
    assert np.abs(np.asarray(a["actor_features"][:, :, others] -
                             b["actor_features"][:, :, others])).max() > 1e-3
    assert np.abs(np.asarray(a["action_logits"] - b["action_logits"])).max() > 1e-4


def test_build_from_config_dict(tiny):
    _, variables, _ = tiny
    cfg = ml_collections.ConfigDict(TINY)
    model = ActionDetector(**cfg)
    out = jax.eval_shape(model.apply, variables, jnp.zeros(SHAPE))
    chex.assert_shape(out["action_logits"], (2, 6, 3))
    assert model.widths == (8, 8, 16)


def test_resnet50_preset_builds():
    model = ActionDetector(**PRESETS["resnet50"], num_actions=80)
    video = jax.ShapeDtypeStruct((1, 4, 64, 64, 3), jnp.float32)
    out, variables = jax.eval_shape(lambda v: model.init_with_output(jax.random.key(0), v), video)
    _assert_output_shapes(out, 1, 4, 50, 80, 7, 2048, 256, 6)
    backbone = sum(np.prod(p.shape) for p in jax.tree.leaves(variables["params"]["backbone"]))
    assert 23e6 < backbone < 30e6


def test_gflops_per_clip(tiny):
    model, variables, _ = tiny
    one = gflops_per_clip(model, variables, (1, *SHAPE[1:]))
    two = gflops_per_clip(model, variables["params"], (2, *SHAPE[1:]))
    assert 0.001 < one < 1.0
    np.testing.assert_allclose(two, one, rtol=0.05)  # per clip, not per batch


def test_action_head_pooling():
    feats = _normal((2, 3, 4, 2, 2, 5), 0)
    for pool in ("avg", "max"):
        head = PooledActionHead(num_actions=7, hidden_dim=8, pool=pool)
        logits, _ = head.init_with_output(jax.random.key(1), feats)
        chex.assert_shape(logits, (2, 3, 7))
    with pytest.raises(ValueError, match="pool must be"):
        PooledActionHead(num_actions=7, pool="sum").init(jax.random.key(1), feats)


def _toy_batch():
    """Two clips of bright rectangles (the "people") on noise, with their boxes and actions."""
    rng = np.random.default_rng(0)
    b, t, h, w, _ = SHAPE
    video = 0.1 * rng.standard_normal(SHAPE).astype(np.float32)
    boxes = np.array([[[0.1, 0.1, 0.4, 0.6], [0.55, 0.3, 0.9, 0.9]],
                      [[0.3, 0.2, 0.7, 0.8], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    mask = np.array([[True, True], [True, False]])
    actions = np.array([[[1, 0, 0], [0, 1, 1]], [[0, 1, 0], [0, 0, 0]]], np.float32)
    for i in range(b):
        for j in np.flatnonzero(mask[i]):
            x1, y1, x2, y2 = np.round(boxes[i, j] * [w, h, w, h]).astype(int)
            video[i, :, y1:y2, x1:x2] += 1.0 + actions[i, j]  # brightness per channel ~ actions
    targets = {"boxes": jnp.asarray(boxes), "actions": jnp.asarray(actions),
               "person_mask": jnp.asarray(mask)}
    return jnp.asarray(video), targets


@pytest.mark.slow  # ~20-40 s, mostly compiling the train step; `make test-slow`
def test_overfits_one_batch(tiny):
    model, variables, _ = tiny
    video, targets = _toy_batch()
    opt = optax.adam(3e-3)
    weights = dl.LossWeights()

    @jax.jit
    def step(params, opt_state):
        def loss_fn(p):
            return dl.set_criterion(model.apply(p, video), targets, weights)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, metrics

    params, opt_state = variables, opt.init(variables)
    losses = []
    for _ in range(25):
        params, opt_state, loss, metrics = step(params, opt_state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
