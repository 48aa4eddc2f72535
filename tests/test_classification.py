"""Classification metrics against hand-counted examples."""

import numpy as np
import pytest

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
