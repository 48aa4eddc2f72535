"""Recurrent encoder: shapes for every frame encoder and cell, causality of the one-way RNN."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxact.models.recurrent_encoder import RecurrentEncoder, VideoClassifierNet

CASES = [
    ("conv", {"widths": (4, 8), "patch_size": 4, "embed_dim": 8}, (16, 16, 3)),
    ("resnet", {"stage_sizes": (1, 1), "width": 8, "embed_dim": 8}, (16, 16, 3)),
    ("mlp", {"widths": (8,), "embed_dim": 8}, (15, 2)),
    ("mlp", {"widths": (8,), "embed_dim": 8}, (24,)),
]


@pytest.mark.parametrize("frame_encoder,kwargs,frame_shape", CASES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
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
