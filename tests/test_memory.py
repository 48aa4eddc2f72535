"""Memory bank: ring-buffer writes, sampling, references, voting; the memory settings and
the memory loss."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from configs import maneuvers_memory
from jaxact import losses, settings
from jaxact.models import memory as memlib
from jaxact.train import parallel


def _bank(c=3, k=4, d=2):
    return memlib.create(c, k, d)


def test_create_rejects_bad_capacity():
    with pytest.raises(ValueError, match="memory.capacity"):
        memlib.create(3, 0, 4)


def test_write_ring_order_and_capacity():
    bank = _bank(c=2, k=3, d=1)
    feats = jnp.arange(5.0)[:, None]
    bank = memlib.write(bank, feats, jnp.zeros(5, jnp.int32), jnp.ones(5, bool))
    # 5 rows into capacity 3: only the last three survive, in ring order 3, 4, 2 at slots 0, 1, 2.
    np.testing.assert_array_equal(bank.feats[0, :, 0], [3.0, 4.0, 2.0])
    np.testing.assert_array_equal(bank.valid, [[True] * 3, [False] * 3])
    np.testing.assert_array_equal(bank.ptr, [2, 0])
    np.testing.assert_array_equal(bank.count, [5, 0])
    bank = memlib.write(bank, jnp.array([[10.0]]), jnp.array([0]), jnp.array([True]))
    np.testing.assert_array_equal(bank.feats[0, :, 0], [3.0, 4.0, 10.0])  # overwrote the oldest


def test_write_ignores_masked_nonfinite_and_out_of_range_rows():
    bank = _bank(c=2, k=4, d=2)
    feats = jnp.array([[1.0, 1.0], [jnp.nan, 0.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    labels = jnp.array([1, 1, 1, 5, -1])
    mask = jnp.array([False, True, True, True, True])
    bank = memlib.write(bank, feats, labels, mask)
    np.testing.assert_array_equal(bank.valid.sum(), 1)
    np.testing.assert_array_equal(bank.feats[1, 0], [2.0, 2.0])
    np.testing.assert_array_equal(bank.count, [0, 1])


def test_write_matches_sequential_reference():
    rng = np.random.default_rng(0)
    c, k, d = 3, 5, 2
    bank = _bank(c, k, d)
    expected = [[] for _ in range(c)]
    for _ in range(6):
        n = rng.integers(1, 9)
        feats = rng.normal(size=(n, d)).astype(np.float32)
        labels = rng.integers(0, c, n)
        mask = rng.random(n) < 0.8
        bank = memlib.write(bank, jnp.asarray(feats), jnp.asarray(labels), jnp.asarray(mask))
        for f, lab, m in zip(feats, labels, mask, strict=True):
            if m:
                expected[lab].append(f)
    for cls in range(c):
        kept = expected[cls][-k:]
        stored = np.asarray(bank.feats[cls])[np.asarray(bank.valid[cls])]
        assert len(stored) == len(kept)
        assert sorted(map(tuple, stored)) == sorted(map(tuple, kept))


def test_write_no_retrace():
    write = jax.jit(chex.assert_max_traces(memlib.write, n=1))
    bank = _bank()
    for i in range(3):
        bank = write(bank, jnp.full((4, 2), float(i)), jnp.array([0, 1, 2, 0]), jnp.ones(4, bool))
    assert int(bank.count.sum()) == 12


def test_sample_only_valid_and_deterministic():
    bank = _bank(c=2, k=8, d=1)
    bank = memlib.write(bank, jnp.arange(3.0)[:, None] + 1, jnp.zeros(3, jnp.int32),
                        jnp.ones(3, bool))
    feats, mask = memlib.sample(bank, jax.random.key(0), 5)
    chex.assert_shape(feats, (2, 5, 1))
    assert int(mask[0].sum()) == 3 and int(mask[1].sum()) == 0
    assert sorted(np.asarray(feats[0, :, 0])[np.asarray(mask[0])]) == [1.0, 2.0, 3.0]
    feats2, mask2 = memlib.sample(bank, jax.random.key(0), 5)
    np.testing.assert_array_equal(feats, feats2)
    np.testing.assert_array_equal(mask, mask2)


def test_vote_paper_example():
    """10 frames: 3 nearest to A, 5 to C, 2 to D -> the video is C."""
    classes = ["A", "B", "C", "D"]
    nearest = [0, 0, 0, 2, 2, 2, 2, 2, 3, 3]
    dist = np.full((1, 10, 4), 5.0, np.float32)
    dist[0, np.arange(10), nearest] = 1.0
    pred, votes = memlib.vote(jnp.asarray(dist))
    assert classes[int(pred[0])] == "C"
    np.testing.assert_array_equal(votes[0], [3, 0, 5, 2])


def test_vote_tie_breaks_by_mean_distance():
    dist = np.array([[[1.0, 2.0], [3.0, 0.5]]], np.float32)  # one vote each; class 1 is closer
    pred, _ = memlib.vote(jnp.asarray(dist))
    assert int(pred[0]) == 1


def test_vote_respects_frame_mask():
    dist = np.array([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]], np.float32)
    pred, votes = memlib.vote(jnp.asarray(dist), jnp.array([[True, False, False]]))
    assert int(pred[0]) == 0 and votes[0].tolist() == [1, 0]


def _refs(points, valid=None):
    points = jnp.asarray(points, jnp.float32)
    valid = jnp.ones(points.shape[:2], bool) if valid is None else jnp.asarray(valid)
    d = points.shape[-1]
    return memlib.References(refs=points, valid=valid, variance=jnp.ones(d), inv_cov=jnp.eye(d))


def test_class_distances_nearest_reference_and_missing():
    refs = _refs([[[0.0, 0.0], [10.0, 0.0]], [[0.0, 5.0], [0.0, 6.0]]],
                 valid=[[True, True], [True, False]])
    d = memlib.class_distances(jnp.array([[9.0, 0.0]]), refs, "euclidean")
    np.testing.assert_allclose(d, [[1.0, np.hypot(9.0, 5.0)]], rtol=1e-5)
    refs = _refs(np.zeros((2, 1, 2)), valid=[[True], [False]])
    d = memlib.class_distances(jnp.array([[1.0, 0.0]]), refs, "euclidean")
    assert float(d[0, 1]) == memlib.MISSING_DISTANCE


def test_refresh_references_picks_stored_members():
    bank = _bank(c=2, k=16, d=2)
    rng = np.random.default_rng(1)
    feats = np.concatenate([rng.normal(0, 0.1, (8, 2)), rng.normal(5, 0.1, (8, 2))])
    labels = np.repeat([0, 1], 8)
    bank = memlib.write(bank, jnp.asarray(feats, jnp.float32), jnp.asarray(labels),
                        jnp.ones(16, bool))
    refs = memlib.refresh_references(bank, jax.random.key(0), num_clusters=2, num_iters=5,
                                     rule="nearest_to_centre", sample_size=16)
    for c in range(2):
        stored = {tuple(np.round(v, 5)) for v in np.asarray(bank.feats[c])[:8]}
        for ref, ok in zip(np.asarray(refs.refs[c]), np.asarray(refs.valid[c]), strict=True):
            if ok:
                assert tuple(np.round(ref, 5)) in stored
    assert np.all(np.isfinite(refs.inv_cov)) and refs.variance.shape == (2,)


def _settings(distance="euclidean", loss_on="all", **overrides) -> memlib.MemorySettings:
    """The smoke config's memory settings with a plain loss: temperature 1, no margin."""
    plain = dict(distance=distance, loss_on=loss_on, temperature=1.0, margin=0.0,
                 frame_loss_weight=1.0, video_loss_weight=1.0, minkowski_p=3.0,
                 entropy_temperature=0.1,
                 binarize_threshold=0.0)
    return settings.from_section(memlib.MemorySettings, maneuvers_memory.get_config("smoke").memory,
                                 "memory", **{**plain, **overrides})


def _mean_loss(feats, labels, mask, refs, memory):
    """The batch's memory loss: the weighted mean of the per-video losses (one device)."""
    per_video, weight, _ = losses.memory_loss(feats, labels, mask, refs, memory)
    return parallel.masked_share(per_video, weight, None)


def test_settings_name_bad_fields():
    with pytest.raises(ValueError, match="memory.loss_on"):
        _settings(loss_on="wrong")
    with pytest.raises(ValueError, match="memory.temperature must be > 0"):
        _settings(temperature=0.0)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['memory.tempreature'\]"):
        _settings(tempreature=1.0)
    memory = _settings("minkowski")
    assert memory.metric_kwargs == {"p": 3.0} and not memory.binarized
    assert _settings("hamming").binarized and _settings("hamming").metric_kwargs == {
        "threshold": 0.0}
    assert hash(memory) == hash(_settings("minkowski"))  # a static argument of jitted code
    assert settings.from_section(memlib.MemorySettings, dataclasses.asdict(memory)) == memory
    assert settings.from_section(memlib.MemorySettings, memory) is memory
    with pytest.raises(ValueError, match="memory.distance.*'euclidian'.*euclidean"):
        _settings("euclidian")


@pytest.mark.parametrize("distance", ["euclidean", "sqeuclidean", "cosine", "manhattan",
                                      "hamming", "relative_entropy", "jensen_shannon"])
def test_memory_loss_gradient_moves_features_toward_true_class(distance):
    refs = _refs([[[1.0, -1.0]], [[-1.0, 1.0]]])
    feats = jnp.array([[[0.2, 0.1], [0.1, 0.3]]])  # [B=1, T=2, D=2], label 0
    labels, mask = jnp.array([0]), jnp.array([True])
    memory = _settings(distance)

    def loss(f):
        return _mean_loss(f, labels, mask, refs, memory)

    grad = jax.grad(loss)(feats)
    assert np.all(np.isfinite(grad))
    moved = feats - 0.1 * grad
    soft = memory.binarized  # hard hamming only moves across the threshold
    before = memlib.class_distances(feats[0], refs, distance, soft=soft, **memory.metric_kwargs)
    after = memlib.class_distances(moved[0], refs, distance, soft=soft, **memory.metric_kwargs)
    margin_before = before[:, 1] - before[:, 0]
    margin_after = after[:, 1] - after[:, 0]
    assert float(loss(moved)) < float(loss(feats))
    assert np.all(margin_after >= margin_before - 1e-6)
    assert np.any(margin_after > margin_before)


def test_memory_loss_margin_is_added_to_the_true_class_distance():
    refs = _refs([[[1.0, 0.0]], [[-1.0, 0.0]], [[0.0, 1.0]]])
    feats = jax.random.normal(jax.random.key(0), (2, 3, 2))  # [B=2, T=3, D=2]
    labels, mask = jnp.array([2, 0]), jnp.array([True, True])
    memory = _settings(margin=0.3, temperature=0.5)
    dist = np.asarray(losses.frame_class_distances(feats, refs, memory))  # [B, T, C]
    logits = -(dist + 0.3 * np.eye(3)[np.asarray(labels)][:, None]) / 0.5

    def ce(z, y):  # z [..., C], y [...]
        return -np.take_along_axis(special.log_softmax(z, axis=-1), y[..., None], -1)[..., 0]

    y = np.asarray(labels)
    expected = ce(logits, np.repeat(y[:, None], 3, 1)).mean(1) + ce(logits.mean(1), y)  # [B]
    per_video, weight, pred = losses.memory_loss(feats, labels, mask, refs, memory)
    np.testing.assert_allclose(per_video, expected, rtol=1e-5)
    np.testing.assert_array_equal(weight, [1.0, 1.0])
    no_margin = dataclasses.replace(memory, margin=0.0)
    plain, _, plain_pred = losses.memory_loss(feats, labels, mask, refs, no_margin)
    # The margin shapes the loss only, never the prediction.
    np.testing.assert_array_equal(pred, plain_pred)
    assert np.all(np.asarray(plain) < np.asarray(per_video))


def test_memory_loss_misclassified_only():
    refs = _refs([[[1.0, 0.0]], [[-1.0, 0.0]]])
    feats = jnp.array([[[0.9, 0.0]], [[0.9, 0.0]]])  # both nearest to class 0
    labels, mask = jnp.array([0, 1]), jnp.array([True, True])
    memory = _settings(loss_on="misclassified")
    per_video, weight, pred = losses.memory_loss(feats, labels, mask, refs, memory)
    np.testing.assert_array_equal(pred, [0, 0])
    np.testing.assert_array_equal(weight, [0.0, 1.0])
    grad = jax.grad(lambda f: _mean_loss(f, labels, mask, refs, memory))(feats)
    assert np.all(grad[0] == 0) and np.any(grad[1] != 0)
    assert float(_mean_loss(feats, labels, mask, refs, memory)) == pytest.approx(
        float(per_video[1]))  # the mean over the one trained video
    assert float(per_video[1]) > 0
