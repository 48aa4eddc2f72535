"""The classifiers' losses against numpy references, and how a step turns per-video losses and
metrics into global means (`parallel.masked_share`, `global_metrics`), on one device and split
over several (`jax.vmap` with an axis name stands in for pmap's devices)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from configs import maneuvers_memory
from jaxact import losses, settings
from jaxact.models import memory as memlib
from jaxact.train import parallel

B, T, C, K, D = 6, 5, 4, 3, 3


def _memory(**overrides) -> memlib.MemorySettings:
    return settings.from_section(memlib.MemorySettings, maneuvers_memory.get_config().memory,
                                 "memory", **overrides)


def _problem(seed=0):
    """Features `[B, T, D]`, labels, a mask with two padding rows, and references of which class
    3 has none and class 1 only one."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(B, T, D)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1, 0])
    mask = np.array([True, True, True, True, False, False])
    refs = rng.normal(size=(C, K, D)).astype(np.float32)
    valid = np.ones((C, K), bool)
    valid[3] = False
    valid[1, 1:] = False
    references = memlib.References(refs=jnp.asarray(refs), valid=jnp.asarray(valid),
                                   variance=jnp.ones(D), inv_cov=jnp.eye(D))
    return feats, labels, mask, references


def _numpy_loss(feats, labels, mask, refs, valid, m: memlib.MemorySettings):
    """The memory loss as it was defined before losses returned per-video values: the weighted
    mean over the batch of frame and video cross-entropies of `-(distance + margin) / T`.
    Written out with numpy and scipy only."""
    diff = feats[:, :, None, None, :] - refs[None, None]  # [B, T, C, K, D]
    sq = np.sum(diff.astype(np.float64) ** 2, axis=-1)
    dist = {"sqeuclidean": sq, "euclidean": np.sqrt(sq)}[m.distance]
    dist = np.where(valid[None, None], dist, memlib.MISSING_DISTANCE).min(axis=-1)  # [B, T, C]
    # Majority vote of the frames; ties go to the smaller mean distance.
    votes = np.stack([np.bincount(row, minlength=C) for row in dist.argmin(-1)])
    mean_dist = dist.mean(axis=1)
    pred = np.array([min(np.flatnonzero(v == v.max()), key=lambda c, i=i: mean_dist[i, c])
                     for i, v in enumerate(votes)])
    logits = -(dist + m.margin * np.eye(C)[labels][:, None]) / m.temperature
    frame_ce = -special.log_softmax(logits, -1)[np.arange(B)[:, None], np.arange(T), labels[:, None]]
    video_ce = -special.log_softmax(logits.mean(axis=1), -1)[np.arange(B), labels]
    per_video = m.frame_loss_weight * frame_ce.mean(axis=1) + m.video_loss_weight * video_ce
    weight = mask.astype(np.float64)
    if m.loss_on == "misclassified":
        weight = weight * (pred != labels)
    return np.sum(per_video * weight) / max(weight.sum(), 1.0), pred, weight


@pytest.mark.parametrize("overrides", [
    dict(distance="euclidean", temperature=1.0),
    dict(distance="sqeuclidean", temperature=0.1, margin=0.2, frame_loss_weight=0.3,
         video_loss_weight=2.0),
    dict(distance="euclidean", temperature=0.5, loss_on="misclassified"),
])
def test_masked_share_of_memory_loss_is_the_numpy_batch_mean(overrides):
    feats, labels, mask, references = _problem()
    m = _memory(**overrides)
    expected, pred, weight = _numpy_loss(feats, labels, mask, np.asarray(references.refs),
                                         np.asarray(references.valid), m)
    per_video, got_weight, got_pred = losses.memory_loss(
        jnp.asarray(feats), jnp.asarray(labels), jnp.asarray(mask), references, m)
    np.testing.assert_array_equal(got_pred, pred)
    np.testing.assert_array_equal(got_weight, weight)
    if m.loss_on == "misclassified":
        assert 0 < weight.sum() < mask.sum()  # the case is not vacuous
    loss = parallel.masked_share(per_video, got_weight, None)
    np.testing.assert_allclose(float(loss), expected, rtol=2e-5)

    # Split over 2 devices, each device's share sums to the same batch mean.
    def share(f, y, k):
        values, w, _ = losses.memory_loss(f, y, k, references, m)
        return parallel.masked_share(values, w, "devices")

    shards = [x.reshape(2, B // 2, *x.shape[1:]) for x in (feats, labels, mask)]
    shares = jax.vmap(share, axis_name="devices")(*map(jnp.asarray, shards))
    np.testing.assert_allclose(float(jnp.sum(shares)), expected, rtol=2e-5)


def test_masked_share_of_nothing_is_zero():
    assert float(parallel.masked_share(jnp.array([3.0]), jnp.zeros(1), None)) == 0.0
    assert float(parallel.masked_share(jnp.array([2.0, 4.0]), jnp.array([1.0, 0.0]), None)) == 2.0


def test_softmax_loss_by_hand():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(B, T, C)).astype(np.float32)
    labels = rng.integers(0, C, B)
    per_video, correct = losses.softmax_loss(jnp.asarray(logits), jnp.asarray(labels), 0.5)
    logp = special.log_softmax(logits.astype(np.float64), -1)
    last = -logp[np.arange(B), -1, labels]
    frames = -logp[np.arange(B)[:, None], np.arange(T), labels[:, None]].mean(axis=1)
    np.testing.assert_allclose(per_video, last + 0.5 * frames, rtol=1e-5)
    np.testing.assert_array_equal(correct, logits[:, -1].argmax(-1) == labels)


def test_global_metrics_pairs_are_means_and_values_are_sums():
    metrics = {"accuracy": (jnp.array(3.0), jnp.array(4.0)), "none": (jnp.array(0.0),
               jnp.array(0.0)), "loss": jnp.array(0.5)}
    out = parallel.global_metrics(metrics, None)
    assert set(out) == set(metrics)
    assert float(out["accuracy"]) == 0.75 and float(out["none"]) == 0.0  # sum / max(count, 1)
    assert float(out["loss"]) == 0.5

    # Two devices: sums and counts are summed before dividing; other values (a device's share
    # of a global mean) are summed.
    per_device = {"accuracy": (jnp.array([3.0, 1.0]), jnp.array([4.0, 0.0])),
                  "small": (jnp.array([0.5, 0.0]), jnp.array([0.5, 0.0])),
                  "loss": jnp.array([0.25, 0.5])}
    out = jax.vmap(lambda m: parallel.global_metrics(m, "devices"), axis_name="devices")(
        per_device)
    np.testing.assert_allclose(out["accuracy"], [1.0, 1.0])  # (3 + 1) / (4 + 0), not 3/4 + 1/1
    np.testing.assert_allclose(out["small"], [0.5, 0.5])  # 0.5 / max(0.5, 1)
    np.testing.assert_allclose(out["loss"], [0.75, 0.75])
    np.testing.assert_allclose(
        jax.vmap(lambda c: parallel.global_count(c, "devices"), axis_name="devices")(
            jnp.array([0.0, 0.0])), [1.0, 1.0])


def test_memory_settings_are_static_arguments():
    """The settings are hashable constants of a trace: equal settings reuse a compilation."""
    traces = []
    references = _problem()[3]

    def trace(feats, m):
        traces.append(m)
        return losses.frame_class_distances(feats, references, m)

    distances = jax.jit(trace, static_argnums=1)
    m = _memory()
    feats = jnp.asarray(_problem()[0])
    distances(feats, m)
    distances(feats, dataclasses.replace(m))
    assert len(traces) == 1
    distances(feats, dataclasses.replace(m, distance="euclidean"))
    assert len(traces) == 2
