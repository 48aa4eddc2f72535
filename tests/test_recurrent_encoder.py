"""Recurrent encoder: shapes for every frame encoder and temporal model, causality of the one-way
RNN, the temporal conv against `nn.Conv` and its receptive field, any ResNet width, mixed
precision, the matmul stem against the convolution it replaces."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxact.models.backbone import num_groups
from jaxact.models.recurrent_encoder import (
    ConvFrameEncoder,
    Im2ColConv,
    PatchConv,
    RecurrentEncoder,
    ResidualBlock,
    ResNetFrameEncoder,
    TemporalConv,
    VideoClassifierNet,
)

CASES = [
    ("conv", {"widths": (4, 8), "patch_size": 4, "embed_dim": 8}, (16, 16, 3)),
    ("resnet", {"stage_sizes": (1, 1), "width": 8, "embed_dim": 8}, (16, 16, 3)),
    ("mlp", {"widths": (8,), "embed_dim": 8}, (15, 2)),
    ("mlp", {"widths": (8,), "embed_dim": 8}, (24,)),
]


@pytest.mark.parametrize("frame_encoder,kwargs,frame_shape", CASES)
@pytest.mark.parametrize("cell,bidirectional", [
    ("lstm", False), ("lstm", True), ("gru", False), ("gru", True),
    ("conv", False)])  # the temporal conv sees both ways: `bidirectional` does not apply
def test_shapes(frame_encoder, kwargs, frame_shape, cell, bidirectional):
    model = VideoClassifierNet(num_classes=5, encoder=dict(
        frame_encoder=frame_encoder, frame_encoder_kwargs=kwargs, cell=cell, hidden_size=8,
        feature_dim=6, bidirectional=bidirectional))
    x = jnp.ones((2, 3, *frame_shape))
    params = model.init(jax.random.key(0), x)
    feats, logits = model.apply(params, x)
    chex.assert_shape([feats, logits], [(2, 3, 6), (2, 3, 5)])
    chex.assert_tree_all_finite((feats, logits))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_future_frames_affect_past_features_only_when_bidirectional(bidirectional):
    model = RecurrentEncoder(frame_encoder="mlp", frame_encoder_kwargs={"widths": (8,)},
                             hidden_size=8, feature_dim=4, bidirectional=bidirectional)
    x = jax.random.normal(jax.random.key(0), (1, 5, 3))
    params = model.init(jax.random.key(1), x)
    changed = x.at[:, -1].add(10.0)
    a, b = model.apply(params, x), model.apply(params, changed)
    same_past = np.allclose(a[:, :-1], b[:, :-1])
    assert same_past != bidirectional


def test_normalized_features_are_unit_length_and_leave_the_head_unchanged():
    encoder = dict(frame_encoder="mlp", frame_encoder_kwargs={"widths": (8,)}, hidden_size=8,
                   feature_dim=6)
    raw = VideoClassifierNet(num_classes=3, encoder=encoder)
    unit = VideoClassifierNet(num_classes=3, encoder=encoder, normalize_features=True)
    x = jax.random.normal(jax.random.key(0), (2, 4, 5))
    params = raw.init(jax.random.key(1), x)  # same tree: normalising adds no parameters
    raw_feats, raw_logits = raw.apply(params, x)
    feats, logits = unit.apply(params, x)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(feats, raw_feats / np.linalg.norm(raw_feats, axis=-1,
                                                                 keepdims=True), rtol=1e-5)
    np.testing.assert_array_equal(logits, raw_logits)


@pytest.mark.parametrize("width", [6, 18, 20, 36])
def test_resnet_frame_encoder_any_width(width):
    # GroupNorm groups come from backbone.num_groups: 18 // 4 = 4 groups would not divide 18.
    model = ResNetFrameEncoder(stage_sizes=(1, 1), width=width, embed_dim=4)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3), np.float32))
    out, variables = jax.jit(model.init_with_output)(jax.random.key(0), x)
    chex.assert_shape(out, (2, 4))
    chex.assert_tree_all_finite(out)
    for stage, w in enumerate((width, 2 * width)):
        norm = variables["params"][f"stage{stage}_block0"]["norm0"]
        chex.assert_shape(norm["scale"], (w,))
    # The block alone, with a projection shortcut (stride 2).
    y, _ = jax.eval_shape(ResidualBlock(width, strides=2).init_with_output, jax.random.key(1),
                          jax.ShapeDtypeStruct((1, 4, 4, 3), jnp.float32))
    chex.assert_shape(y, (1, 2, 2, width))


def test_group_counts_unchanged_where_the_old_formula_worked():
    # ResidualBlock used min(32, width // 4) groups; num_groups gives the same count wherever that
    # divided the width, so existing parameter trees and numerics are unchanged.
    for width in range(4, 1025):
        old = min(32, width // 4)
        if width % old == 0:
            assert num_groups(width) == old, width
    assert [num_groups(w) for w in (8, 16, 32, 64, 128)] == [2, 4, 8, 16, 32]


@pytest.mark.parametrize("frame_encoder,kwargs,frame_shape", CASES[:3])
def test_mixed_precision(frame_encoder, kwargs, frame_shape):
    # bfloat16 compute, float32 params: every layer (RNN cells included) computes in bfloat16.
    # Traced only (eval_shape): no compile.
    model = VideoClassifierNet(num_classes=5, encoder=dict(
        frame_encoder=frame_encoder, frame_encoder_kwargs=kwargs, hidden_size=8, feature_dim=6,
        bidirectional=True), dtype=jnp.bfloat16, param_dtype=jnp.float32)
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dense | nn.Conv | nn.GroupNorm | nn.RNNCellBase):
            seen.append((context.module.path, context.module.dtype))
        return next_fun(*args, **kwargs)

    x = jax.ShapeDtypeStruct((2, 3, *frame_shape), jnp.float32)
    with nn.intercept_methods(record):
        (feats, logits), variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
    assert seen and all(dtype == jnp.bfloat16 for _, dtype in seen), seen
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    chex.assert_shape([feats, logits], [(2, 3, 6), (2, 3, 5)])
    assert feats.dtype == logits.dtype == jnp.float32  # the losses and the bank read float32


def assert_same_conv(conv: nn.Conv, matmul: nn.Module, x):
    """`matmul` draws `conv`'s parameters alike and gives its outputs and gradients (with
    respect to the parameters and the input) on `x`."""
    variables = conv.init(jax.random.key(0), x)
    chex.assert_trees_all_equal(variables, matmul.init(jax.random.key(0), x))

    def loss(module, variables, x):
        return jnp.sum(jnp.sin(module.apply(variables, x)))

    np.testing.assert_allclose(matmul.apply(variables, x), conv.apply(variables, x), atol=1e-5)
    for argnum in (1, 2):
        chex.assert_trees_all_close(jax.grad(loss, argnum)(matmul, variables, x),
                                    jax.grad(loss, argnum)(conv, variables, x), atol=1e-5)


@pytest.mark.parametrize("height,width,channels,patch", [(16, 16, 3, 4), (18, 13, 2, 4), (9, 9, 1, 3)])
def test_patch_conv_is_the_strided_valid_conv(height, width, channels, patch):
    # Same parameters drawn alike (checkpoints of the nn.Conv stem load), same outputs and
    # gradients, also when the frame is no multiple of the patch (VALID drops the edge).
    x = jax.random.normal(jax.random.key(1), (2, height, width, channels))
    assert_same_conv(nn.Conv(5, (patch, patch), strides=patch, padding="VALID"),
                     PatchConv(5, patch), x)


@pytest.mark.parametrize("height,width,channels,kernel,stride",
                         [(16, 16, 6, 3, 2), (15, 13, 3, 3, 2), (9, 9, 2, 3, 1), (10, 7, 4, 5, 3)])
def test_im2col_conv_is_the_same_conv(height, width, channels, kernel, stride):
    # Same parameters drawn alike (checkpoints of the nn.Conv layers load), same outputs and
    # gradients, odd sizes included (SAME pads the odd pixel after, as lax does).
    x = jax.random.normal(jax.random.key(1), (2, height, width, channels))
    assert_same_conv(nn.Conv(5, (kernel, kernel), strides=stride, padding="SAME"),
                     Im2ColConv(5, kernel, stride), x)


@pytest.mark.parametrize("pool,extra", [("flatten", 0), ("flatten_max", 8), ("max", None)])
def test_conv_pools_feed_the_embedding_what_they_name(pool, extra):
    encoder = ConvFrameEncoder(widths=(4, 8), patch_size=4, embed_dim=6, pool=pool)
    frames = jnp.zeros((1, 32, 32, 3))
    params = encoder.init(jax.random.key(0), frames)
    flat = 4 * 4 * 8  # [h, w, c] of the last map: 32 px / (patch 4 * stride 2)
    fan_in = 8 if extra is None else flat + extra
    assert params["params"]["embed"]["kernel"].shape == (fan_in, 6)


def test_max_pool_sees_a_cue_anywhere_flatten_sees_where():
    """A bright 8 x 8 blob moved by whole multiples of the encoder's stride (8 px), away from the
    borders: the spatial max is unchanged, the flattened map is not."""
    frames = np.zeros((2, 48, 48, 3), np.float32)
    frames[0, 16:24, 16:24] = 1.0
    frames[1, 24:32, 16:24] = 1.0
    for pool, same in (("max", True), ("flatten", False)):
        encoder = ConvFrameEncoder(widths=(4, 8), patch_size=4, embed_dim=6, pool=pool)
        params = encoder.init(jax.random.key(1), frames)
        out = encoder.apply(params, frames)
        assert bool(jnp.allclose(out[0], out[1], atol=1e-6)) == same, pool
    with pytest.raises(ValueError, match="frame_encoder_kwargs.pool='mean'"):
        ConvFrameEncoder(pool="mean").init(jax.random.key(0), frames)


def test_track_joins_the_frame_embeddings_as_the_rnns_input():
    encoder = dict(frame_encoder="mlp", frame_encoder_kwargs={"widths": (8,), "embed_dim": 8},
                   hidden_size=8, feature_dim=6)
    model = VideoClassifierNet(num_classes=3, encoder=encoder)
    x = jax.random.normal(jax.random.key(0), (2, 4, 5))
    track = jax.random.normal(jax.random.key(1), (2, 4, 3))
    params = model.init(jax.random.key(2), {"video": x, "track": track})
    # The RNN reads embed_dim + 3 values per frame; the frame encoder is unchanged.
    frames_only = model.init(jax.random.key(2), x)
    chex.assert_trees_all_equal_shapes(params["params"]["encoder"]["frame_encoder"],
                                       frames_only["params"]["encoder"]["frame_encoder"])
    size = sum(p.size for p in jax.tree.leaves(params))
    assert size - sum(p.size for p in jax.tree.leaves(frames_only)) == 3 * 4 * 8  # LSTM gates
    feats, logits = model.apply(params, {"video": x, "track": track})
    chex.assert_shape([feats, logits], [(2, 4, 6), (2, 4, 3)])
    # A change of the track at frame 2 reaches frames 2-3 only (one-way RNN), through the RNN.
    moved, _ = model.apply(params, {"video": x, "track": track.at[:, 2].add(1.0)})
    np.testing.assert_array_equal(moved[:, :2], feats[:, :2])
    assert not np.allclose(moved[:, 2:], feats[:, 2:])
    with pytest.raises(AssertionError):  # one track row per frame
        model.apply(params, {"video": x, "track": track[:, :3]})


def _reference_temporal_conv(params, x, kernel_size, dilations):
    """TemporalConv by `nn.Conv` with `kernel_dilation` and 'SAME' padding (its kernel is the
    matmul's `[k * C, C']` reshaped to `[k, C, C']`)."""
    p = params["params"]
    x = nn.Dense(p["input"]["kernel"].shape[1]).apply({"params": p["input"]}, x)
    for i, dilation in enumerate(dilations):
        y = nn.relu(nn.LayerNorm().apply({"params": p[f"norm{i}"]}, x))
        kernel = p[f"conv{i}"]["kernel"].reshape(kernel_size, x.shape[-1], -1)
        conv = nn.Conv(kernel.shape[-1], (kernel_size,), kernel_dilation=(dilation,),
                       padding="SAME")
        x = x + conv.apply({"params": {"kernel": kernel, "bias": p[f"conv{i}"]["bias"]}}, y)
    return nn.relu(nn.LayerNorm().apply({"params": p["out_norm"]}, x))


@pytest.mark.parametrize("kernel_size,dilations", [(3, (1, 2, 4, 8)), (5, (1, 2)), (1, (1,))])
def test_temporal_conv_is_the_dilated_same_conv(kernel_size, dilations):
    x = jax.random.normal(jax.random.key(0), (2, 11, 5))
    model = TemporalConv(6, kernel_size, dilations)
    params = model.init(jax.random.key(1), x)
    np.testing.assert_allclose(model.apply(params, x),
                               _reference_temporal_conv(params, x, kernel_size, dilations),
                               rtol=1e-5, atol=1e-5)


def test_temporal_conv_sees_its_receptive_field_and_no_further():
    model = RecurrentEncoder(frame_encoder="mlp",
                             frame_encoder_kwargs={"widths": (), "embed_dim": 4}, cell="conv",
                             hidden_size=4, feature_dim=3, temporal_kernel=3,
                             temporal_dilations=(1, 2))  # sees 7 frames: 3 each way
    x = jax.random.normal(jax.random.key(0), (1, 12, 2))
    params = model.init(jax.random.key(1), x)
    moved = model.apply(params, x.at[:, 6].add(1.0)) - model.apply(params, x)
    changed = np.abs(np.asarray(moved[0])).max(axis=-1) > 1e-6
    np.testing.assert_array_equal(changed, np.abs(np.arange(12) - 6) <= 3)


def test_unknown_temporal_model_is_named():
    model = RecurrentEncoder(frame_encoder="mlp", cell="transformer")
    with pytest.raises(ValueError, match="model.cell='transformer'"):
        model.init(jax.random.key(0), jnp.ones((1, 3, 4)))
    with pytest.raises(ValueError, match="odd"):
        TemporalConv(4, kernel_size=2).init(jax.random.key(0), jnp.ones((1, 3, 4)))
