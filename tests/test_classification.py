"""Classification metrics, the merging of test views and the classifier's evaluators, against
hand-counted examples."""

import jax
import numpy as np
import pytest

from jaxact.data import pipeline
from jaxact.evaluation import classification


def test_accuracies_and_confusion_matrix():
    labels = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    assert classification.top1(pred, labels) == pytest.approx(4 / 6)
    np.testing.assert_array_equal(classification.confusion_matrix(pred, labels, 4),
                                  [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    # Class 3 never occurs, so it does not pull the mean down.
    assert classification.mean_class_accuracy(pred, labels, 4) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    assert classification.topk_accuracy(scores, np.array([1, 1]), 1) == 0.0
    assert classification.topk_accuracy(scores, np.array([1, 1]), 2) == 1.0


# Exact two-sided p by hand: 2 * P(X <= min) for X ~ Binomial(discordant, 1/2), capped at 1.
@pytest.mark.parametrize("only_a,only_b,both,neither,p", [
    (0, 5, 3, 1, 2 / 2**5),
    (7, 1, 0, 2, 2 * (1 + 8) / 2**8),
    (2, 1, 10, 0, 1.0),
    (0, 0, 4, 4, 1.0),
])
def test_paired_comparison_counts_discordant_examples(only_a, only_b, both, neither, p):
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    order = np.random.default_rng(0).permutation(len(a))  # pairing is by row, not by position
    out = classification.paired_comparison(np.array(a)[order], np.array(b)[order])
    assert (out["only_a_right"], out["only_b_right"]) == (only_a, only_b)
    assert out["mcnemar_p"] == pytest.approx(p)


def test_paired_comparison_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="same examples"):
        classification.paired_comparison(np.ones(3, bool), np.ones(4, bool))


# ----------------------------------------------------------------------------- views


def _combine(per_view, views, perm):
    return classification.combine_views(per_view, views, perm, temperature=1.0)


@pytest.mark.parametrize("perm", [[0, 2, 1, 4, 3, 5], [1, 2, 3, 4, 5, 0]])
def test_combine_views_maps_mirrored_classes_back(perm):
    """A mirrored view of a clip of class c is a clip of class perm[c]. A model that is exactly
    mirror-equivariant gives the mirrored view the original's outputs with classes permuted;
    combining must undo that, so both views add the same evidence."""
    perm = np.array(perm)
    rng = np.random.default_rng(0)
    n, t, c = 5, 4, 6
    dist = rng.random((n, t, c)).astype(np.float32)
    logp = np.asarray(jax.nn.log_softmax(rng.normal(size=(n, c)), -1))
    label = rng.integers(0, c, n)
    inverse = np.argsort(perm)
    plain = {"label": label, "softmax_logp": logp, "memory_dist": dist}
    mirrored = {"label": perm[label], "softmax_logp": logp[:, inverse],
                "memory_dist": dist[..., inverse]}
    views = (pipeline.View(), pipeline.View(flip=True))
    one = _combine([plain], views[:1], None)
    both = _combine([plain, mirrored], views, perm)
    np.testing.assert_array_equal(both["label"], label)
    np.testing.assert_array_equal(both["memory_pred"], one["memory_pred"])
    np.testing.assert_array_equal(both["memory_votes"], 2 * one["memory_votes"])
    np.testing.assert_allclose(both["memory_logp"], one["memory_logp"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both["softmax_logp"], logp, rtol=1e-5, atol=1e-6)
    # The mirrored view alone, mapped back, is the plain one.
    alone = _combine([mirrored], views[1:], perm)
    np.testing.assert_array_equal(alone["label"], label)
    np.testing.assert_array_equal(alone["memory_pred"], one["memory_pred"])


def test_combine_views_pools_frame_votes_across_views():
    """Frames of all views vote together: 2 frames for class 0 in one view and 3 for class 1 in
    the other give class 1, although class 0 wins the first view."""
    far, near = 5.0, 1.0
    a = np.full((1, 3, 2), far, np.float32)
    a[0, :2, 0] = near
    a[0, 2, 1] = near
    b = np.full((1, 3, 2), far, np.float32)
    b[0, :, 1] = near
    logp = np.log(np.full((1, 2), 0.5, np.float32))
    views = (pipeline.View(0.25), pipeline.View(0.75))
    out = _combine([{"label": np.zeros(1, int), "softmax_logp": logp, "memory_dist": d}
                    for d in (a, b)], views, None)
    np.testing.assert_array_equal(out["memory_votes"], [[2, 4]])
    assert out["memory_pred"][0] == 1
    # Distance to the memory: the median over all 6 frames of each frame's nearest class.
    nearest = [min(f) for f in [*a[0].tolist(), *b[0].tolist()]]
    assert out["memory_nearest"][0] == pytest.approx(np.median(nearest))


# ----------------------------------------------------------------------------- evaluators


NUM_CLASSES, FRAMES = 3, 2
LABELS = np.array([0, 1, 2, 2, 1, 0, 1])  # 7 clips: the last batch of 4 has one padding row
# Frame distances that make the memory classifier predict these classes (clip 3 by a tie of one
# vote each, broken by the smaller mean distance), the baseline predicting `BASE`.
MEMORY = np.array([0, 1, 0, 2, 1, 1, 1])
BASE = np.array([0, 2, 2, 2, 1, 0, 0])


def _fake_outputs(rows, fraction):
    dist = np.full((len(rows), FRAMES, NUM_CLASSES), 5.0, np.float32)
    dist[np.arange(len(rows)), :, MEMORY[rows]] = 1.0
    for i in np.flatnonzero(rows == 3):  # one vote each for classes 0 and 2; 2 is nearer on mean
        dist[i] = [[2.5, 5.0, 4.0], [5.0, 5.0, 1.0]]
    base = np.log(np.full((len(rows), NUM_CLASSES), 0.1, np.float32))
    base[np.arange(len(rows)), BASE[rows]] = np.log(0.8)
    if fraction < 1:  # early prediction: the memory classifier says class 0 for every clip
        dist[...] = 5.0
        dist[..., 0] = 1.0
    return {"memory": {"softmax_logp": base, "memory_dist": dist},
            "baseline": {"softmax_logp": base}}


def _evaluator(calls):
    """A ClassificationEvaluator over 2 batches of 4 (the second padded), centre view only."""
    def loader(split, fraction, view):
        calls.append((split, fraction, view))
        for start in (0, 4):
            rows = np.arange(start, start + 4)
            mask = rows < len(LABELS)
            rows = np.minimum(rows, len(LABELS) - 1)
            yield {"rows": rows, "fraction": fraction, "label": LABELS[rows], "mask": mask}

    def predict_batch(models, batch):
        out = _fake_outputs(batch["rows"], batch["fraction"])
        return {"label": batch["label"], "mask": batch["mask"],
                "models": {name: out[name] for name in models}}

    return classification.ClassificationEvaluator(
        predict_batch=predict_batch, loader=loader, split="test", views=(pipeline.CENTRE_VIEW,),
        flip_permutation=None, temperature=1.0, class_names=("a", "b", "c"))


def test_collect_drops_padding_and_feeds_every_model_each_batch():
    calls = []
    evaluator = _evaluator(calls)
    out = classification.collect(evaluator.loader("test", 1.0, pipeline.CENTRE_VIEW),
                                 evaluator.predict_batch, {"memory": None, "baseline": None})
    assert len(calls) == 1
    for name in ("memory", "baseline"):
        np.testing.assert_array_equal(out[name]["label"], LABELS)  # 7 rows, padding gone
    assert out["memory"]["memory_dist"].shape == (7, FRAMES, NUM_CLASSES)
    assert "memory_dist" not in out["baseline"]


def test_classification_evaluator_counts_by_hand(tmp_path):
    calls = []
    evaluator = _evaluator(calls)
    results, artefacts = evaluator.run({"memory": None, "baseline": None})
    assert len(calls) == 1  # one loader pass for both models
    memory_right = MEMORY == LABELS  # clips 0, 1, 3, 4, 6
    base_right = BASE == LABELS  # clips 0, 2, 3, 4, 5
    assert results["top1"] == pytest.approx(5 / 7)
    # Recall per class: 0: clip 0 of {0, 5}; 1: clips 1, 4, 6; 2: clip 3 of {2, 3}.
    assert results["mean_class_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert results["top5_scores"] == 1.0 and results["num_examples"] == 7
    assert results["baseline_top1"] == pytest.approx(5 / 7)
    assert results["baseline_mean_class_accuracy"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert results["memory_vs_baseline"] == {
        "only_memory_right": int(np.sum(memory_right & ~base_right)),
        "only_baseline_right": int(np.sum(base_right & ~memory_right)),
        "mcnemar_p": pytest.approx(1.0)}
    assert set(artefacts) == {"confusion_matrix.png"}

    early, plots = classification.EarlyPredictionEvaluator(evaluator, (0.5, 1.0)).run(
        {"memory": None, "baseline": None})
    assert [c[1] for c in calls[1:]] == [0.5, 1.0]
    assert early["early_prediction"] == {
        "memory": {"0.5": pytest.approx(2 / 7), "1.0": pytest.approx(5 / 7)},
        "baseline": {"0.5": pytest.approx(5 / 7), "1.0": pytest.approx(5 / 7)}}
    assert set(plots) == {"early_prediction.png"}
    limited, plots = classification.EarlyPredictionEvaluator(
        evaluator, (0.5, 1.0), {"0.5": 0.6, "1.0": 1.0}).run({"memory": None})
    assert limited["early_prediction"]["bayes_limit"] == {"0.5": 0.6, "1.0": 1.0}
    plots["early_prediction.png"](str(tmp_path / "early.png"))
    assert (tmp_path / "early.png").stat().st_size > 0
