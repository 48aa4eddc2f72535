"""benchmarks/jhmdb_ensemble.py: runs vote as one, as one run's views do."""

import types

import numpy as np
import pytest

from benchmarks import jhmdb_ensemble
from jaxact.data import pipeline
from jaxact.evaluation import classification


def fake_run(dist, logp, labels, names=("a", "b", "c"), temperature=1.0):
    exp = types.SimpleNamespace(class_names=list(names),
                                memory=types.SimpleNamespace(temperature=temperature),
                                data=types.SimpleNamespace(flip_permutation=np.arange(3)))
    out = {"memory": {"label": labels, "softmax_logp": logp, "memory_dist": dist},
           "baseline": {"label": labels, "softmax_logp": logp}}
    return exp, [(pipeline.CENTRE_VIEW, out)]


def test_members_vote_together_and_baselines_average():
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 2, 1])
    dists = [rng.uniform(size=(4, 5, 3)) for _ in range(3)]
    logps = [np.log(rng.dirichlet(np.ones(3), size=4)) for _ in range(3)]
    members = [fake_run(d, lp, labels) for d, lp in zip(dists, logps, strict=True)]
    combined = jhmdb_ensemble.ensemble(members, ["r0", "r1", "r2"])
    # The same as one run with three views: 15 frames vote, log-probabilities averaged.
    views = [pipeline.CENTRE_VIEW] * 3
    expected = classification.combine_views(
        [{"label": labels, "softmax_logp": lp, "memory_dist": d}
         for d, lp in zip(dists, logps, strict=True)], views, np.arange(3), 1.0)
    np.testing.assert_array_equal(combined["memory"]["memory_pred"], expected["memory_pred"])
    np.testing.assert_array_equal(combined["memory"]["memory_votes"].sum(-1), [15] * 4)
    np.testing.assert_allclose(combined["baseline"]["softmax_logp"], expected["softmax_logp"],
                               rtol=1e-6)
    # One member alone is that run's own prediction.
    alone = jhmdb_ensemble.ensemble(members[:1], ["r0"])
    own = classification.combine_views([members[0][1][0][1]["memory"]], views[:1],
                                       np.arange(3), 1.0)
    np.testing.assert_array_equal(alone["memory"]["memory_pred"], own["memory_pred"])
    assert set(jhmdb_ensemble.top1s(combined)) == {"memory", "baseline"}


def test_runs_that_cannot_vote_together_are_named():
    labels = np.array([0, 1])
    dist, logp = np.zeros((2, 3, 3)), np.log(np.full((2, 3), 1 / 3))
    ok = fake_run(dist, logp, labels)
    with pytest.raises(ValueError, match="r1: its evaluation clips differ from r0's"):
        jhmdb_ensemble.ensemble([ok, fake_run(dist, logp, labels[::-1])], ["r0", "r1"])
    with pytest.raises(ValueError, match="r1: class names or memory.temperature differ"):
        jhmdb_ensemble.ensemble([ok, fake_run(dist, logp, labels, temperature=0.1)],
                                ["r0", "r1"])


def test_scores_average_each_members_vote_scores():
    rng = np.random.default_rng(1)
    labels = np.array([0, 1, 2, 1, 0])
    dists = [rng.uniform(size=(5, 4, 3)) for _ in range(3)]
    logp = np.log(rng.dirichlet(np.ones(3), size=5))
    members = [fake_run(d, logp, labels, temperature=0.5) for d in dists]
    combined = jhmdb_ensemble.ensemble(members, ["r0", "r1", "r2"], combine="scores")
    # Each member's score: log-softmax of minus its mean frame distance over the temperature.
    def own(d):
        z = -d.mean(1) / 0.5
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    expected = np.mean([own(d) for d in dists], axis=0)
    np.testing.assert_allclose(combined["memory"]["memory_logp"], expected, rtol=1e-5)
    np.testing.assert_array_equal(combined["memory"]["memory_pred"], expected.argmax(-1))
    assert "memory_votes" not in combined["memory"]  # the pooled frame vote decided nothing
    with pytest.raises(ValueError, match="combine='mean'"):
        jhmdb_ensemble.ensemble(members, ["r0", "r1", "r2"], combine="mean")
