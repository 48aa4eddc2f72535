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
    (keys, feats3d), _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x))
    chex.assert_shape(keys, [(2, 8, 8, 16), (2, 4, 4, 16), (2, 2, 2, 32)])
    chex.assert_shape(feats3d, (2, 4, 2, 2, 32))


def test_tiny_values_and_keyframe_slots(tiny):
    model, params, apply = tiny
    x = _video()
    keys, feats3d = apply(params, x)
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
    keys_a, f_a = apply(params, x)
    keys_b, f_b = apply(params, changed)
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
    _, f_a = apply(params, x)
    _, f_b = apply(params, x.at[:, key].add(3.0))
    others = [t for t in range(x.shape[1]) if t != key]
    np.testing.assert_array_equal(f_a[:, others], f_b[:, others])
    assert np.abs(np.asarray(f_a[:, key] - f_b[:, key])).max() > 1e-3


def test_keyframe_features_equal_single_frame_network(tiny):
    # The keyframe branch is the 2D network on the keyframe alone (a T = 1 clip).
    model, params, apply = tiny
    params = _randomize(params)
    x = _video()
    keys, _ = apply(params, x)
    alone, _ = apply(params, x[:, 2:3])
    for a, b in zip(keys, alone, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_without_isolation_keyframe_sees_other_frames(tiny):
    _, params, _ = tiny  # isolation does not change the parameters
    x = _video((1, 3, 16, 16, 3))
    params = _randomize(params)
    apply = jax.jit(VideoResNet(**TINY, isolate_keyframe=False).apply)
    keys_a, _ = apply(params, x)
    keys_b, _ = apply(params, x.at[:, 0].add(3.0))
    assert np.abs(np.asarray(keys_a[-1] - keys_b[-1])).max() > 1e-3


@pytest.mark.parametrize("isolate", [True, False])
def test_temporal_mixing(isolate):
    mix = TemporalMixing(kernel_size=3, isolate_keyframe=isolate)
    x = jax.nn.relu(_video((2, 4, 3, 3, 8)))
    init_params = jax.jit(mix.init)(jax.random.key(0), x)
    apply = jax.jit(mix.apply)
    y = apply(_randomize(init_params), x)
    chex.assert_shape(y, x.shape)
    assert np.array_equal(y[:, 2], x[:, 2]) == isolate
    # At initialisation (zero norm scale) the residual vanishes on every frame.
    np.testing.assert_array_equal(apply(init_params, x), x)


def test_resnet50_preset_size():
    model = VideoResNet(**RESNET50)
    x = jax.ShapeDtypeStruct((1, 4, 64, 64, 3), jnp.float32)
    (keys, feats3d), variables = jax.eval_shape(
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
