"""benchmarks/map_ceiling.py: the Bayes priority decode by hand (its box IoU is
`tracking.iou_matrix`, tested with the tracker)."""

import numpy as np

from benchmarks import map_ceiling


def test_priority_decode_is_the_most_probable_label_image_class():
    ranks = np.array([4, 0, 3, 1, 2])  # sit, raise_hand, stand, write, turn (0 = highest)
    # raise_hand 0.4 outranks everything: 0.4; write 0.9 * 0.6 = 0.54; sit 0.95 * 0.6 * 0.1 * ...
    probs = np.array([[0.95, 0.4, 0.1, 0.9, 0.0],
                      [0.9, 0.0, 0.0, 0.0, 0.0],
                      [0.2, 0.7, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(map_ceiling.priority_decode(probs, ranks), [3, 0, 1])
    # Row 0 by hand: raise 0.4, write 0.6 * 0.9 = 0.54, turn 0, stand 0.6 * 0.1 * 1 * 0.1,
    # sit 0.95 * 0.6 * 0.1 * 1 * 0.9: write wins although sit is the likeliest action.
