"""Video ResNet: shapes for every stem/block variant, and keyframe isolation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxact.models.backbone import RESNET50, TemporalMixing, VideoResNet, num_groups

TINY = dict(stem_width=8, widths=(8, 8, 16), stage_sizes=(1, 1, 1), strides=(1, 2, 1),
            dilations=(1, 1, 2), temporal_kernels=(3, 3, 3))


def _video(shape=(2, 5, 32, 32, 3), seed=0):
    # numpy RNG: jax.random compiles a kernel per shape, slower than these tests' models.
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


@pytest.fixture(scope="module")
def tiny():
    model = VideoResNet(**TINY)
    params = jax.jit(model.init)(jax.random.key(0), _video())
    return model, params, jax.jit(model.apply)


@pytest.mark.parametrize("stem,block,stage_sizes,temporal_kernels", [
    ("patchify", "basic", (1, 1, 1), (3, 3, 3)),
    ("resnet", "bottleneck", (2, 1, 1), (1, 3, 5)),
])
def test_shapes(stem, block, stage_sizes, temporal_kernels):
    model = VideoResNet(stem=stem, stem_width=8, block=block, stage_sizes=stage_sizes,
                        widths=(16, 16, 32), strides=(1, 2, 2), dilations=(1, 1, 1),
                        temporal_kernels=temporal_kernels)
    x = _video((2, 4, 32, 32, 3))
    (keys, feats3d, gates), _ = jax.eval_shape(
        lambda: model.init_with_output(jax.random.key(0), x))
    assert gates == []
    chex.assert_shape(keys, [(2, 8, 8, 16), (2, 4, 4, 16), (2, 2, 2, 32)])
    chex.assert_shape(feats3d, (2, 4, 2, 2, 32))


def test_tiny_values_and_keyframe_slots(tiny):
    model, params, apply = tiny
    x = _video()
    keys, feats3d, _ = apply(params, x)
    chex.assert_shape(keys, [(2, 8, 8, 8), (2, 4, 4, 8), (2, 4, 4, 16)])
    chex.assert_shape(feats3d, (2, 5, 4, 4, 16))
    chex.assert_tree_all_finite((keys, feats3d))
    # The last keyframe feature is the keyframe slot (T // 2) of the 3D map.
    np.testing.assert_array_equal(keys[-1], feats3d[:, 2])


def _randomize(params, seed=1):
    # Zero-initialised norm scales make temporal residuals vanish at init; perturb every leaf so
    # the isolation tests are not passing merely because the temporal branch outputs zero.
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: p + 0.3 * rng.standard_normal(p.shape, np.float32), params)


def test_perturbing_other_frames_leaves_keyframe_branch_unchanged(tiny):
    model, params, apply = tiny
    params = _randomize(params)
    x = _video()
    key = x.shape[1] // 2
    noise = 5.0 * _video(x.shape, seed=7)
    changed = x + noise.at[:, key].set(0.0)  # every frame but the keyframe
    keys_a, f_a, _ = apply(params, x)
    keys_b, f_b, _ = apply(params, changed)
    for a, b in zip(keys_a, keys_b, strict=True):
        np.testing.assert_array_equal(a, b)  # bit for bit
    np.testing.assert_array_equal(f_a[:, key], f_b[:, key])
    for t in range(x.shape[1]):
        if t != key:
            assert np.abs(np.asarray(f_a[:, t] - f_b[:, t])).max() > 1e-3, t


def test_perturbing_keyframe_changes_only_its_slot(tiny):
    # Non-key frames never read the keyframe either.
    model, params, apply = tiny
    params = _randomize(params)
    x = _video()
    key = x.shape[1] // 2
    _, f_a, _ = apply(params, x)
    _, f_b, _ = apply(params, x.at[:, key].add(3.0))
    others = [t for t in range(x.shape[1]) if t != key]
    np.testing.assert_array_equal(f_a[:, others], f_b[:, others])
    assert np.abs(np.asarray(f_a[:, key] - f_b[:, key])).max() > 1e-3


def test_keyframe_features_equal_single_frame_network(tiny):
    # The keyframe branch is the 2D network on the keyframe alone (a T = 1 clip).
    model, params, apply = tiny
    params = _randomize(params)
    x = _video()
    keys, _, _ = apply(params, x)
    alone, _, _ = apply(params, x[:, 2:3])
    for a, b in zip(keys, alone, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_without_isolation_keyframe_sees_other_frames(tiny):
    _, params, _ = tiny  # isolation does not change the parameters
    x = _video((1, 3, 16, 16, 3))
    params = _randomize(params)
    apply = jax.jit(VideoResNet(**TINY, isolate_keyframe=False).apply)
    keys_a, _, _ = apply(params, x)
    keys_b, _, _ = apply(params, x.at[:, 0].add(3.0))
    assert np.abs(np.asarray(keys_a[-1] - keys_b[-1])).max() > 1e-3


@pytest.mark.parametrize("isolate", [True, False])
def test_temporal_mixing(isolate):
    mix = TemporalMixing(kernel_size=3, isolate_keyframe=isolate)
    x = jax.nn.relu(_video((2, 4, 3, 3, 8)))
    init_params = jax.jit(mix.init)(jax.random.key(0), x)
    apply = jax.jit(mix.apply)
    y, gate = apply(_randomize(init_params), x)
    chex.assert_shape(y, x.shape)
    assert gate is None
    assert np.array_equal(y[:, 2], x[:, 2]) == isolate
    # At initialisation (zero norm scale) the residual vanishes on every frame.
    np.testing.assert_array_equal(apply(init_params, x)[0], x)


def test_resnet50_preset_size():
    model = VideoResNet(**RESNET50)
    x = jax.ShapeDtypeStruct((1, 4, 64, 64, 3), jnp.float32)
    (keys, feats3d, _), variables = jax.eval_shape(
        lambda v: model.init_with_output(jax.random.key(0), v), x)
    count = sum(np.prod(p.shape) for p in jax.tree.leaves(variables["params"]))
    # ResNet-50's convolutions hold 23.5M weights; temporal kernels in res4/res5 add ~3.5M.
    assert 23e6 < count < 30e6, count
    chex.assert_shape(keys, [(1, 16, 16, 256), (1, 8, 8, 512), (1, 4, 4, 1024), (1, 4, 4, 2048)])
    chex.assert_shape(feats3d, (1, 4, 4, 4, 2048))


def test_bad_config_errors():
    x = _video((1, 2, 16, 16, 3))
    with pytest.raises(ValueError, match="one entry per stage"):
        VideoResNet(widths=(8, 8)).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        VideoResNet(**TINY).init(jax.random.key(0), _video((1, 2, 18, 16, 3)))
    with pytest.raises(ValueError, match="block must be"):
        VideoResNet(**dict(TINY, block="wide")).init(jax.random.key(0), x)


@pytest.mark.parametrize("channels,groups", [(8, 2), (16, 4), (48, 12), (64, 16), (256, 32), (6, 1)])
def test_num_groups(channels, groups):
    assert num_groups(channels) == groups


def _forced_gate(params, codes):
    """Params whose gate policy decides `codes` `[G]` (0 keep, 1 reuse, 2 drop) for any input."""
    params = jax.tree.map(lambda p: p, params)
    logits = params["params"]["gate"]["logits"]
    groups = len(codes)
    logits["kernel"] = jnp.zeros_like(logits["kernel"])
    logits["bias"] = jnp.asarray(10.0 * np.eye(3)[codes].reshape(groups * 3), jnp.float32)
    return params


def test_gated_temporal_mixing_keeps_reuses_and_drops_per_norm_group():
    c = 16  # num_groups(16) = 4 groups of 4 channels
    mix = TemporalMixing(kernel_size=3, gate=True)
    x = jax.nn.relu(_video((2, 5, 3, 3, c)))
    params = _randomize(mix.init(jax.random.key(0), x))
    plain = TemporalMixing(kernel_size=3)
    reference, _ = plain.apply({"params": {k: params["params"][k] for k in ("conv", "norm")}}, x)
    codes = np.array([0, 1, 2, 0])
    y, gate = mix.apply(_forced_gate(params, codes), x)
    per_channel = np.repeat(codes, 4)
    np.testing.assert_array_equal(gate.decisions.argmax(-1), np.tile(per_channel, (2, 1)))
    assert gate.flops == 2 * 4 * 3 * 3 * 3 * c * c  # 4 non-key frames of 3 x 3, kernel 3
    for ch in range(c):
        want = {0: reference[..., ch], 1: x[..., ch], 2: 0 * x[..., ch]}[per_channel[ch]]
        np.testing.assert_allclose(np.delete(y[..., ch], 2, 1), np.delete(want, 2, 1),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y[:, 2], x[:, 2])  # the keyframe stays isolated
    # The policy reads only the non-key frames.
    other = x.at[:, 2].add(5.0)
    np.testing.assert_array_equal(mix.apply(params, other)[1].decisions,
                                  mix.apply(params, x)[1].decisions)


@pytest.mark.slow  # ~37 s of a worker (compiles both paths of a gated backbone)
def test_gated_backbone_compact_path_equals_the_masked_one():
    model = VideoResNet(**TINY, gate=True)
    x = _video((2, 4, 32, 32, 3))
    params = _randomize(model.init(jax.random.key(0), x))
    params = jax.tree_util.tree_map_with_path(  # random policies: varied decisions per clip
        lambda path, p: 3 * jax.random.normal(jax.random.key(len(path)), p.shape)
        if "gate" in jax.tree_util.keystr(path) else p, params)
    keys, feats, gates = model.apply(params, x)
    assert len(gates) == len(TINY["stage_sizes"])
    kept = max(float(jnp.max(jnp.mean(g.decisions[..., 0], -1))) for g in gates)
    assert 0 < kept <= 1 and any(float(jnp.min(g.decisions[..., 0])) == 0 for g in gates)
    for budget in (kept, 1.0):
        k_c, f_c, _ = model.apply(params, x, gate_budget=budget)
        np.testing.assert_allclose(f_c, feats, rtol=1e-4, atol=1e-4)
        for a, b in zip(k_c, keys, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # Every group kept: a budget of one group per layer reuses the others instead.
    keep_all = jax.tree_util.tree_map_with_path(
        lambda path, p: (jnp.zeros_like(p) if "kernel" in jax.tree_util.keystr(path) else
                         jnp.tile(jnp.array([10.0, 0.0, 0.0]), p.size // 3))
        if "gate" in jax.tree_util.keystr(path) and "logits" in jax.tree_util.keystr(path)
        else p, params)
    _, full, _ = model.apply(keep_all, x)
    _, short, _ = model.apply(keep_all, x, gate_budget=0.01)
    assert np.abs(np.asarray(short) - np.asarray(full)).max() > 1e-3
