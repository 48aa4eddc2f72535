"""ActionDetector: output shapes, keyframe-only localization, config building and checks, mixed
precision, FLOPs, overfitting."""

import json

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxact import detection_losses as dl
from jaxact.models.detector import (
    FLAT_MODEL_FIELDS,
    HEADS,
    PRESETS,
    ActionDetector,
    PooledActionHead,
    build_detector,
    check_model_fields,
    gated_gflops_per_clip,
    gflops_per_clip,
    model_fields,
    upgrade_flat_model_config,
)
from jaxact.train import detector as detector_train

TINY = dict(num_actions=3, fpn_dim=16, num_queries=6, action_roi_size=3,
            backbone=dict(stem_width=8, widths=(8, 8, 16), stage_sizes=(1, 1, 1), strides=(1, 2, 1),
                          dilations=(1, 1, 2), temporal_kernels=(3, 3, 3)),
            localizer=dict(num_stages=2, num_heads=2, dynamic_dim=4, ffn_dim=32, roi_size=3),
            head=dict(name="pooled", hidden_dim=16))
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


@pytest.mark.parametrize("fusion", ["sum", "gram"])
def test_decoupled_head_adds_behaviour_maps(fusion):
    """The decoupled head's per-bin map logits come out beside the action logits; the pooled
    head's outputs hold no maps."""
    head = {"name": "decoupled", "fusion": fusion, "enc_dim": 8, "fused_dim": 8, "hidden_dim": 8}
    video = jax.ShapeDtypeStruct(SHAPE, jnp.float32)
    out, _ = jax.eval_shape(lambda v: ActionDetector(**{**TINY, "head": head}).init_with_output(
        jax.random.key(0), v), video)
    _assert_output_shapes(out, 2, 4, 6, 3, 3, 16, 16, 2)
    chex.assert_shape(out["map_logits"], (2, 6, 3, 3, 4))
    pooled, _ = jax.eval_shape(lambda v: ActionDetector(**TINY).init_with_output(
        jax.random.key(0), v), video)
    assert "map_logits" not in pooled


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
    model, variables, _ = tiny
    cfg = ml_collections.ConfigDict({k: v for k, v in TINY.items() if k != "num_actions"})
    cfg.backbone.widths = [8, 8, 16]  # as a config.json read back gives it
    built = build_detector(cfg, num_actions=3)
    out = jax.eval_shape(built.apply, variables, jnp.zeros(SHAPE))
    chex.assert_shape(out["action_logits"], (2, 6, 3))
    assert built.backbone["widths"] == (8, 8, 16)
    # Nested sections are frozen: equal configs give equal, hashable models (jit caches key on them).
    assert built == model and hash(built) == hash(model)
    assert hash(ActionDetector(backbone={"widths": [8, 8, 16]})) == hash(
        ActionDetector(backbone={"widths": (8, 8, 16)}))


def test_model_fields_mirror_the_modules():
    fields = model_fields()
    assert set(fields) == {"", "backbone", "localizer", "head"}
    assert {"backbone", "localizer", "head", "fpn_dim", "dtype"} <= set(fields[""])
    assert "num_actions" not in fields[""]
    assert set(fields["localizer"]) == {"num_stages", "num_heads", "dynamic_dim", "ffn_dim",
                                        "roi_size", "prior_prob"}
    assert set(fields["head"]) == {"name", "hidden_dim", "pool", "use_query"}
    assert "pooled" in HEADS


@pytest.mark.parametrize(("config", "match"), [
    ({"widthz": (8,)}, r"unknown field\(s\) \['model.widthz'\]"),
    ({"num_actions": 3}, r"'model.num_actions'.*comes from the data"),
    ({"backbone": {"widthz": (8,)}}, r"\['model.backbone.widthz'\]"),
    ({"localizer": {"num_queries": 4}}, r"\['model.localizer.num_queries'\]"),
    ({"head": {"name": "pooled", "head_dim": 4}}, r"\['model.head.head_dim'\]"),
    ({"head": {"name": "fusion"}},
     r"model.head.name='fusion': expected one of \['decoupled', 'pooled'\]"),
    ({"head": {"pool": "sum"}}, r"model.head.pool='sum'"),
    ({"head": {"name": "decoupled", "fusion": "max"}}, r"model.head.fusion='max'"),
    ({"backbone": {"block": "wide"}}, r"model.backbone.block='wide'"),
    ({"backbone": 3}, r"model.backbone must be a mapping"),
    ({"dtype": "int32"}, r"model.dtype='int32'"),
    ({"param_dtype": "f32"}, r"model.param_dtype='f32'"),
])
def test_bad_model_config_names_the_field(config, match):
    with pytest.raises(ValueError, match=match):
        check_model_fields(config)
    with pytest.raises(ValueError, match=match):
        build_detector(ml_collections.ConfigDict(config), num_actions=3)


# The flat `model` fields of configs written before the nested sections, with their defaults.
OLD_FLAT_DEFAULTS = dict(
    stem="patchify", stem_width=16, patch_size=4, block="basic", stage_sizes=[1, 1, 1, 1],
    widths=[16, 32, 48, 64], strides=[1, 2, 1, 1], dilations=[1, 1, 2, 4],
    temporal_kernels=[3, 3, 3, 3], isolate_keyframe=True, fpn_dim=64, num_queries=20,
    localizer_stages=3, localizer_heads=4, dynamic_dim=16, ffn_dim=256, localizer_roi_size=7,
    prior_prob=0.1, action_roi_size=7, roi_sampling_ratio=2, head_dim=128, head_pool="avg",
    head_use_query=True)


def test_upgrade_flat_model_config():
    old = dict(OLD_FLAT_DEFAULTS, widths=[8, 16, 24, 32], localizer_stages=2, head_pool="max")
    new = upgrade_flat_model_config(old)
    assert old == dict(OLD_FLAT_DEFAULTS, widths=[8, 16, 24, 32], localizer_stages=2,
                       head_pool="max")  # not modified
    assert set(FLAT_MODEL_FIELDS) == set(OLD_FLAT_DEFAULTS) - set(model_fields()[""])
    assert new["backbone"]["widths"] == [8, 16, 24, 32]
    assert new["localizer"]["num_stages"] == 2
    assert new["head"] == {"name": "pooled", "hidden_dim": 128, "pool": "max", "use_query": True}
    assert (new["fpn_dim"], new["dtype"], new["param_dtype"]) == (64, "float32", "float32")
    check_model_fields(new)
    assert upgrade_flat_model_config(new) == new  # a nested config passes unchanged
    # The old defaults are today's defaults: the same parameter tree (traced only).
    video = jax.ShapeDtypeStruct((1, 2, 16, 16, 3), jnp.float32)
    shapes = [jax.eval_shape(model.init, jax.random.key(0), video) for model in (
        build_detector(upgrade_flat_model_config(OLD_FLAT_DEFAULTS), 5), ActionDetector())]
    assert shapes[0] == shapes[1]
    with pytest.raises(ValueError, match="model.head_dim=8 conflicts with model.head.hidden_dim=4"):
        upgrade_flat_model_config({"head_dim": 8, "head": {"hidden_dim": 4}})


def test_upgrade_gives_older_decoupled_configs_the_adaptive_layers_off():
    from configs import classroom_detector

    today = json.loads(classroom_detector.get_config("fusion=gram").model.to_json())
    old = json.loads(json.dumps(today))
    del old["gate"], old["backbone"]["gate_hidden"]
    for field in HEADS["decoupled"].ADAPTIVE_FIELDS:
        del old["head"][field]
    assert upgrade_flat_model_config(old) == today


def test_mixed_precision_dtypes():
    # bfloat16 compute, float32 params: every layer computes in bfloat16, the parameters and what
    # the losses read (boxes, logits) are float32. Traced only (eval_shape): no compile.
    model = build_detector({k: v for k, v in TINY.items() if k != "num_actions"} | {
        "dtype": "bfloat16", "param_dtype": "float32"}, num_actions=3)
    layers = (nn.Dense, nn.Conv, nn.LayerNorm, nn.GroupNorm, nn.MultiHeadDotProductAttention)
    seen = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, layers) and context.method_name == "__call__":
            seen.append((context.module.path, out.dtype))
        return out

    video = jax.ShapeDtypeStruct((1, 4, 16, 16, 3), jnp.float32)
    with nn.intercept_methods(record):
        out, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), video)
    assert len(seen) > 50
    assert all(dtype == jnp.bfloat16 for _, dtype in seen), [s for s in seen if s[1] != jnp.bfloat16]
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    _assert_output_shapes(out, 1, 4, 6, 3, 3, 16, 16, 2)
    for name in ("boxes", "person_logits", "action_logits"):
        assert out[name].dtype == jnp.float32, name
    assert out["actor_features"].dtype == jnp.bfloat16


def test_resnet50_preset_builds():
    model = build_detector(PRESETS["resnet50"], num_actions=80)
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
        head = PooledActionHead(num_actions=7, hidden_dim=8, pool=pool, use_query=False)
        logits, _ = head.init_with_output(jax.random.key(1), feats)
        chex.assert_shape(logits, (2, 3, 7))
    logits, variables = PooledActionHead(num_actions=7, hidden_dim=8).init_with_output(
        jax.random.key(1), feats, _normal((2, 3, 4), 1))
    chex.assert_shape([logits, variables["params"]["hidden"]["kernel"]], [(2, 3, 7), (5 + 4, 8)])
    with pytest.raises(ValueError, match="pool must be"):
        PooledActionHead(num_actions=7, pool="sum", use_query=False).init(jax.random.key(1), feats)
    with pytest.raises(ValueError, match="use_query=True needs query_features"):
        PooledActionHead(num_actions=7).init(jax.random.key(1), feats)


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


def test_gate_and_relation_through_the_detector():
    head = {"name": "decoupled", "fusion": "sum", "enc_dim": 8, "fused_dim": 8, "hidden_dim": 8,
            "temporal_layers": 2, "relation": True, "num_groups": 2, "relation_heads": 2}
    model = ActionDetector(**{**TINY, "head": head, "gate": "both"})
    video = _normal(SHAPE, 3)
    fast = {"compiler_options": detector_train.FAST_COMPILE}
    variables = jax.jit(model.init, **fast)(jax.random.key(0), video)
    out = jax.jit(model.apply, **fast)(variables, video)
    b, t, n = SHAPE[0], SHAPE[1], TINY["num_queries"]
    backbone, heads = out["gates"][:3], out["gates"][3:]  # one per backbone stage, then L = 2
    assert len(heads) == 2
    for gate, width in zip(backbone, TINY["backbone"]["widths"], strict=True):
        chex.assert_shape(gate.decisions, (b, width, 3))
    for gate in heads:
        chex.assert_shape(gate.decisions, (b, n, 8, 3))
        assert gate.flops == 2 * t * 3 * 8 * 8  # 2 T K C_e^2 per actor
    counted = (sum(g.flops for g in backbone) + n * sum(g.flops for g in heads)) / 1e9
    assert gated_gflops_per_clip(model, SHAPE) == pytest.approx(counted)
    # select_actors decides who relates; without it, the person scores do.
    everyone = jax.jit(lambda v, x: model.apply(
        v, x, select_actors=lambda loc: jnp.ones((b, n), bool)), **fast)(variables, video)
    assert bool(jnp.all(everyone["relation"]["pair_mask"] == ~jnp.eye(n, dtype=bool)))
    assert gated_gflops_per_clip(ActionDetector(**TINY), SHAPE) == 0.0


@pytest.mark.parametrize("config, match", [
    ({"gate": "all"}, "model.gate"),
    ({"gate": "both"}, "temporal_layers"),
    ({"gate": "head"}, "temporal_layers"),
    ({"gate": "head", "head": {"name": "decoupled"}}, "temporal_layers"),
])
def test_bad_gate_settings_fail_before_tracing(config, match):
    with pytest.raises(ValueError, match=match):
        build_detector(config, 5)


def test_gumbel_temperature_anneals_exponentially():
    train_config = ml_collections.ConfigDict(dict(num_steps=4, temperature_start=5.0,
                                                  temperature_end=0.5))
    temperature = detector_train.gumbel_temperature(train_config)
    assert [float(temperature(s)) for s in (0, 2, 4, 8)] == pytest.approx(
        [5.0, 5.0 * 0.1**0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="temperature"):
        detector_train.gumbel_temperature(ml_collections.ConfigDict(dict(
            num_steps=4, temperature_start=5.0, temperature_end=0.0)))
