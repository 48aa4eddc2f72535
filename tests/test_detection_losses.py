"""Set criterion: Hungarian matching against scipy, invariances, padding, perfect predictions."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from jaxact import detection_losses as dl
from jaxact.ops import boxes as box_ops

B, N, P, A = 4, 7, 5, 3
NUM_PEOPLE = (3, 5, 0, 1)  # clip 2 has nobody


def _targets(seed=0, num_people=NUM_PEOPLE, p=P):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0.0, 0.7, size=(B, p, 2))
    wh = rng.uniform(0.05, 0.3, size=(B, p, 2))
    mask = np.arange(p)[None] < np.array(num_people)[:, None]
    boxes = np.where(mask[..., None], np.concatenate([xy, xy + wh], -1), 0.0)
    actions = np.where(mask[..., None], rng.integers(0, 2, size=(B, p, A)), 0)
    return {"boxes": jnp.asarray(boxes, jnp.float32), "actions": jnp.asarray(actions, jnp.float32),
            "person_mask": jnp.asarray(mask)}


def _outputs(seed=1, aux=1):
    rng = np.random.default_rng(seed)

    def stage():
        return {"boxes": jnp.asarray(1 / (1 + np.exp(-rng.normal(size=(B, N, 4)))), jnp.float32),
                "person_logits": jnp.asarray(rng.normal(size=(B, N)), jnp.float32)}

    out = stage()
    out["action_logits"] = jnp.asarray(rng.normal(size=(B, N, A)), jnp.float32)
    out["aux_outputs"] = [stage() for _ in range(aux)]
    return out


_criterion = jax.jit(dl.set_criterion, static_argnums=2)
W = dl.LossWeights()  # one static argument, so most tests share one compilation


@pytest.mark.parametrize("cost_type", ["prob", "focal"])
def test_matching_equals_scipy(cost_type):
    w = dl.LossWeights(cost_type=cost_type, focal_alpha=0.25, focal_gamma=2.0)
    for seed in range(3):
        outputs, targets = _outputs(seed), _targets(seed + 10)
        cost = np.asarray(dl.matching_cost(outputs, targets, w), np.float64)
        m = jax.jit(dl.match, static_argnums=2)(outputs, targets, w)
        chex.assert_shape([m.pred_to_gt, m.gt_to_pred, m.pred_matched, m.gt_matched],
                          [(B, N), (B, P), (B, N), (B, P)])
        for i in range(B):
            mask = np.asarray(targets["person_mask"][i])
            # Every real person is matched once, no padding row is.
            np.testing.assert_array_equal(np.asarray(m.gt_matched[i]), mask)
            rows = np.flatnonzero(np.asarray(m.pred_matched[i]))
            cols = np.asarray(m.pred_to_gt[i])[rows]
            np.testing.assert_array_equal(np.asarray(m.gt_to_pred[i])[cols], rows)
            sub = cost[i][:, mask]
            ref_rows, ref_cols = scipy_lsa(sub)
            np.testing.assert_allclose(cost[i][rows, cols].sum(), sub[ref_rows, ref_cols].sum(),
                                       rtol=1e-5, atol=1e-5)


def test_matching_cost_by_hand():
    outputs = {"boxes": jnp.array([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2]]]),
               "person_logits": jnp.array([[0.0, 2.0]])}
    targets = {"boxes": jnp.array([[[0.4, 0.4, 0.6, 0.6]]]), "person_mask": jnp.array([[True]])}
    w = dl.LossWeights(cost_person=1.0, cost_l1=1.0, cost_giou=1.0)
    cost = dl.matching_cost(outputs, targets, w)
    # Query 0 is the box itself (L1 0, GIoU 1); query 1 is disjoint: L1 0.6, IoU 0, enclosing
    # box 0.5 x 0.5 holding a union of 0.08.
    p1 = 1 / (1 + np.exp(-2.0))
    expected = [[-0.5 + 0.0 - 1.0], [-p1 + 0.6 - (0.0 - (0.25 - 0.08) / 0.25)]]
    np.testing.assert_allclose(cost[0], expected, rtol=1e-5)
    m = dl.match(outputs, targets, w)
    np.testing.assert_array_equal(m.pred_to_gt, [[0, -1]])


def test_perfect_predictions():
    targets = _targets(3)
    rng = np.random.default_rng(4)
    slots = np.stack([rng.permutation(N)[:P] for _ in range(B)])  # query of each person
    boxes = np.asarray(_outputs(5)["boxes"]).copy()
    person = np.full((B, N), -12.0, np.float32)
    actions = np.zeros((B, N, A), np.float32)
    gt_cxcywh = np.asarray(box_ops.xyxy_to_cxcywh(targets["boxes"]))
    mask = np.asarray(targets["person_mask"])
    for i in range(B):
        for j in np.flatnonzero(mask[i]):
            boxes[i, slots[i, j]] = gt_cxcywh[i, j]
            person[i, slots[i, j]] = 12.0
            actions[i, slots[i, j]] = 24.0 * (np.asarray(targets["actions"][i, j]) - 0.5)
    outputs = {"boxes": jnp.asarray(boxes), "person_logits": jnp.asarray(person),
               "action_logits": jnp.asarray(actions), "aux_outputs": []}
    m = dl.match(outputs, targets)
    for i in range(B):
        for j in np.flatnonzero(mask[i]):
            assert int(m.gt_to_pred[i, j]) == slots[i, j]
    loss, metrics = _criterion(outputs, targets, W)
    assert float(metrics["l1"]) < 1e-6 and float(metrics["giou"]) < 1e-5
    assert float(metrics["action"]) < 1e-4 and float(metrics["person"]) < 1e-3
    assert float(loss) < 3e-3
    iou_sum, iou_count = metrics["matched_iou"]  # summed IoU of the matched pairs, their count
    assert float(iou_count) == sum(NUM_PEOPLE)
    np.testing.assert_allclose(iou_sum / iou_count, 1.0, atol=1e-5)
    np.testing.assert_allclose(metrics["num_people"], sum(NUM_PEOPLE))


def test_query_permutation_does_not_change_loss():
    outputs, targets = _outputs(6), _targets(7)
    perm = np.random.default_rng(8).permutation(N)
    permuted = jax.tree.map(lambda x: x[:, perm], outputs)
    (l0, m0), (l1, m1) = _criterion(outputs, targets, W), _criterion(permuted, targets, W)
    np.testing.assert_allclose(l0, l1, rtol=1e-5)
    chex.assert_trees_all_close(m0, m1, rtol=1e-5, atol=1e-6)


def test_padding_rows_do_not_affect_loss():
    outputs, targets = _outputs(9), _targets(10)
    base = _criterion(outputs, targets, W)
    # Extra padding rows full of garbage, and the real rows moved behind some of them.
    rng = np.random.default_rng(11)
    extra = 3
    padded = {
        "boxes": jnp.concatenate([jnp.asarray(rng.uniform(size=(B, extra, 4)), jnp.float32),
                                  targets["boxes"]], axis=1),
        "actions": jnp.concatenate([jnp.ones((B, extra, A)), targets["actions"]], axis=1),
        "person_mask": jnp.concatenate([jnp.zeros((B, extra), bool), targets["person_mask"]], 1),
    }
    garbage = {k: v.at[~np.asarray(targets["person_mask"])].set(7.0) if k != "person_mask" else v
               for k, v in targets.items()}
    for other in (padded, garbage):
        chex.assert_trees_all_close(_criterion(outputs, other, W), base, rtol=1e-5, atol=1e-6)


def test_terms_by_hand_with_plain_bce():
    outputs, targets = _outputs(12, aux=0), _targets(13)
    w = dl.LossWeights(person=1.0, l1=0.0, giou=0.0, action=0.0)
    loss, metrics = _criterion(outputs, targets, w)
    m = dl.match(outputs, targets, w)
    bce = optax.sigmoid_binary_cross_entropy(outputs["person_logits"],
                                             m.pred_matched.astype(jnp.float32))
    np.testing.assert_allclose(loss, bce.sum() / sum(NUM_PEOPLE), rtol=1e-5)
    # Focal modulation only lowers the per-query terms.
    focal = dl.LossWeights(person=1.0, l1=0.0, giou=0.0, action=0.0, focal_gamma=2.0,
                           focal_alpha=0.25)
    assert float(_criterion(outputs, targets, focal)[0]) < float(loss)


def test_aux_outputs_get_their_own_set_loss():
    outputs, targets = _outputs(14), _targets(15)
    loss, metrics = _criterion(outputs, targets, W)
    # An intermediate stage's loss is the set loss of its own predictions, without actions.
    stage = dict(outputs["aux_outputs"][0], action_logits=outputs["action_logits"], aux_outputs=[])
    stage_loss, stage_metrics = _criterion(stage, targets, W)
    expected_aux = stage_loss - W.action * stage_metrics["action"]
    np.testing.assert_allclose(metrics["aux"], expected_aux, rtol=1e-5)
    main = dict(outputs, aux_outputs=[])
    np.testing.assert_allclose(loss, _criterion(main, targets, W)[0] + W.aux * expected_aux,
                               rtol=1e-5)


def test_no_people_and_gradients_finite():
    outputs, targets = _outputs(16), _targets(17, num_people=(0, 0, 0, 0))
    # Degenerate predictions too: zero-width boxes.
    outputs["boxes"] = outputs["boxes"].at[:, 0, 2].set(0.0)
    loss, metrics = _criterion(outputs, targets, W)
    for k in ("l1", "giou", "action"):
        assert float(metrics[k]) == 0.0
    assert float(metrics["num_people"]) == 0.0  # the count itself; only the divisor is >= 1
    grad_fn = jax.jit(jax.grad(lambda o, t: dl.set_criterion(o, t, W)[0]))
    for tgt in (targets, _targets(18)):
        grads = grad_fn(outputs, tgt)
        chex.assert_tree_all_finite(grads)
    assert np.abs(np.asarray(grads["boxes"])).max() > 0
    assert np.abs(np.asarray(grads["action_logits"])).max() > 0


def test_no_retrace():
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(o, t):
        return dl.set_criterion(o, t, W)

    for seed in range(3):
        loss, _ = step(_outputs(seed), _targets(seed))
        assert np.isfinite(float(loss))


def test_weights_from_mappings():
    cfg = ml_collections.ConfigDict({"person": 1.0, "l1": 3.0})
    assert dl.as_weights(cfg) == dl.LossWeights(person=1.0, l1=3.0)
    assert dl.as_weights({"aux": 0.0}).aux == 0.0
    assert dl.as_weights(None) == dl.LossWeights()
    assert dl.as_weights(W) is W
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['loss.gio'\]"):
        dl.as_weights({"gio": 1.0})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['model.gio'\]"):
        dl.as_weights({"gio": 1.0}, prefix="model")
    with pytest.raises(ValueError, match="loss.cost_type='l2'.*prob"):
        dl.matching_cost(_outputs(), _targets(), {"cost_type": "l2"})
    with pytest.raises(ValueError, match="cost_type='l2'"):
        dl.LossWeights(cost_type="l2")


def test_shares_of_a_split_batch_add_up_to_the_whole_batch():
    """With `normalizer` the number of people in the whole batch, the losses of the batch's
    parts (devices) add up to the loss of the whole batch, term by term; the matched-IoU pairs
    add up too. Without it, each part is divided by its own count."""
    outputs, targets = _outputs(19), _targets(20)
    loss, metrics = _criterion(outputs, targets, W)
    total = float(jnp.sum(targets["person_mask"]))
    parts = [jax.tree.map(lambda x, rows=rows: x[rows], (outputs, targets))
             for rows in (slice(0, B // 2), slice(B // 2, B))]
    shares = [_criterion(o, t, W, jnp.float32(total)) for o, t in parts]
    np.testing.assert_allclose(sum(float(s[0]) for s in shares), loss, rtol=1e-5)
    for key in ("person", "l1", "giou", "action", "aux"):
        np.testing.assert_allclose(sum(float(s[1][key]) for s in shares), metrics[key], rtol=1e-5,
                                   err_msg=key)
    for i in range(2):
        np.testing.assert_allclose(sum(float(s[1]["matched_iou"][i]) for s in shares),
                                   metrics["matched_iou"][i], rtol=1e-5)
    assert sum(float(s[1]["num_people"]) for s in shares) == total
    # Default normaliser: the part's own people (clips 0 and 1 hold 8 of the batch's 9).
    own_loss, _ = _criterion(*parts[0], W)
    np.testing.assert_allclose(own_loss, float(shares[0][0]) * total / sum(NUM_PEOPLE[:2]),
                               rtol=1e-5)


# ----------------------------------------------------------------------------- l1_coords, maps


def test_l1_on_corners_by_hand():
    pred = jnp.array([[0.5, 0.5, 0.2, 0.4]])  # cxcywh -> corners (0.4, 0.3, 0.6, 0.7)
    gt = jnp.array([[0.4, 0.2, 0.7, 0.7]])
    np.testing.assert_allclose(dl.l1_distance(pred, gt, "xyxy"), [0.0 + 0.1 + 0.1 + 0.0],
                               atol=1e-6)
    # (cx, cy, w, h) of gt: (0.55, 0.45, 0.3, 0.5)
    np.testing.assert_allclose(dl.l1_distance(pred, gt, "cxcywh"), [0.05 + 0.05 + 0.1 + 0.1],
                               atol=1e-6)
    outputs, targets = _outputs(20), _targets(21)
    corners = dl.LossWeights(l1_coords="xyxy")
    cost = np.asarray(dl.matching_cost(outputs, targets, corners))
    base = np.asarray(dl.matching_cost(outputs, targets, W))
    pred_xyxy = np.asarray(box_ops.cxcywh_to_xyxy(outputs["boxes"]))
    gt_cxcywh = np.asarray(box_ops.xyxy_to_cxcywh(targets["boxes"]))
    l1_xyxy = np.abs(pred_xyxy[:, :, None] - np.asarray(targets["boxes"])[:, None]).sum(-1)
    l1_cxcywh = np.abs(np.asarray(outputs["boxes"])[:, :, None] - gt_cxcywh[:, None]).sum(-1)
    mask = np.asarray(targets["person_mask"])[:, None, :]
    np.testing.assert_allclose(np.where(mask, cost - base, 0.0),
                               np.where(mask, W.cost_l1 * (l1_xyxy - l1_cxcywh), 0.0), atol=1e-5)
    with pytest.raises(ValueError, match="loss.l1_coords='xywh'"):
        dl.as_weights({"l1_coords": "xywh"})


def test_map_targets_by_hand():
    """A 4 x 4 keyframe, person 0 on its left half, person 1 nowhere visible; a query whose box
    is the whole frame with 2 x 2 bins: the left bins are person 0, the right ones are not."""
    owner = -np.ones((1, 4, 4), np.int32)
    owner[0, :, :2] = 0
    actions = jnp.array([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])  # [B=1, P=2, A=3]
    boxes = jnp.array([[[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]]])  # cxcywh, 2 queries
    target = np.asarray(dl.map_targets(jnp.asarray(owner), boxes, jnp.array([[0, 1]]), actions, 2))
    assert target.shape == (1, 2, 2, 2, 4)
    left, right = target[0, 0, :, 0], target[0, 0, :, 1]  # [y, channel]
    np.testing.assert_allclose(left, [[0.0, 1.0, 0.0, 1.0]] * 2, atol=1e-6)
    np.testing.assert_allclose(right, [[1.0, 0.0, 0.0, 0.0]] * 2, atol=1e-6)
    np.testing.assert_allclose(target[0, 1], np.broadcast_to([1.0, 0.0, 0.0, 0.0], (2, 2, 4)),
                               atol=1e-6)  # person 1 has no visible pixel: all "no behaviour"


def _map_case(seed=30, s=3):
    outputs, targets = _outputs(seed), _targets(seed + 1)
    rng = np.random.default_rng(seed + 2)
    outputs["map_logits"] = jnp.asarray(rng.normal(size=(B, N, s, s, A + 1)), jnp.float32)
    owner = rng.integers(-1, P, size=(B, 16, 16))
    owner = np.where(owner < np.array(NUM_PEOPLE)[:, None, None], owner, -1)  # real people only
    targets["owner"] = jnp.asarray(owner, jnp.int32)
    return outputs, targets


def test_map_term_is_the_matched_mean_bce_and_padding_changes_nothing():
    outputs, targets = _map_case()
    loss, metrics = _criterion(outputs, targets, W)
    m = dl.match(outputs, targets, W)
    target = dl.map_targets(targets["owner"], outputs["boxes"], jnp.maximum(m.pred_to_gt, 0),
                            targets["actions"], 3)
    bce = np.asarray(optax.sigmoid_binary_cross_entropy(outputs["map_logits"], target))
    expected = (bce.mean(axis=(2, 3, 4)) * np.asarray(m.pred_matched)).sum() / sum(NUM_PEOPLE)
    np.testing.assert_allclose(metrics["map"], expected, rtol=1e-5)
    without = dict(outputs)
    del without["map_logits"]
    np.testing.assert_allclose(loss - _criterion(without, targets, W)[0], W.map * expected,
                               rtol=1e-4)
    off = dl.LossWeights(map=0.0)
    assert "map" not in _criterion(outputs, targets, off)[1]
    # Padded people rows (never in `owner`) with garbage, placed first: the same loss.
    extra = 2
    padded = {
        "boxes": jnp.concatenate([jnp.full((B, extra, 4), 0.3), targets["boxes"]], axis=1),
        "actions": jnp.concatenate([jnp.ones((B, extra, A)), targets["actions"]], axis=1),
        "person_mask": jnp.concatenate([jnp.zeros((B, extra), bool), targets["person_mask"]], 1),
        "owner": jnp.where(targets["owner"] >= 0, targets["owner"] + extra, -1),
    }
    chex.assert_trees_all_close(_criterion(outputs, padded, W), (loss, metrics), rtol=1e-5,
                                atol=1e-6)


def test_priority_one_hot_matches_the_label_image_rule():
    """The map's per-person label is the top-priority present action, as in
    `behaviour_labels.person_labels` (numpy), zeros for a person with none."""
    from jaxact.data import behaviour_labels

    names = ("sit", "raise_hand", "stand", "write", "turn_to_neighbour")
    actions = np.random.default_rng(40).integers(0, 2, size=(3, 6, 5)).astype(np.float32)
    actions[0, 0] = 0.0
    ranks = behaviour_labels.priority_ranks(names)
    got = np.asarray(dl.priority_one_hot(jnp.asarray(actions), ranks))
    expected = behaviour_labels.person_labels(actions, names)  # 0 none, else 1 + class
    np.testing.assert_array_equal(got.sum(-1), expected > 0)
    np.testing.assert_array_equal(np.where(expected > 0, got.argmax(-1) + 1, 0), expected)


def test_adaptive_terms_are_the_counted_flops_and_the_similarity_reward():
    from jaxact.models import actor_relation, channel_gate

    b, n, c = B, 3, 4
    decisions = jax.nn.one_hot(jnp.array(np.random.default_rng(0).integers(0, 3, (b, n, c))), 3)
    gates = [channel_gate.Gate(decisions, 10.0), channel_gate.Gate(decisions[..., ::-1], 30.0)]
    probs = jax.nn.softmax(jnp.array(np.random.default_rng(1).standard_normal((b, n, 2))), -1)
    similarity = jnp.array(np.random.default_rng(2).uniform(-1, 1, (b, n, n)), jnp.float32)
    pairs = actor_relation.pair_mask(jnp.array([[True, True, False], [True, True, True],
                                                [False, False, False], [True, False, True]]))
    relation = {"group_probs": probs, "similarity": similarity, "pair_mask": pairs,
                "groups_used": jnp.array([1, 2, 0, 3]), "tau": jnp.float32(0.3)}
    w = dl.as_weights({"reuse_cost": 0.5})
    terms, metrics = dl.adaptive_terms({"gates": gates, "relation": relation}, w)
    np.testing.assert_allclose(terms["flops"], channel_gate.flops_fraction(gates, 0.5))
    # A budget: only the fraction above the target costs; the logged fraction is unchanged.
    fraction = np.asarray(channel_gate.flops_fraction(gates, 0.5))
    target = float(np.median(fraction))
    budget, logged = dl.adaptive_terms({"gates": gates}, dl.as_weights(
        {"reuse_cost": 0.5, "flops_target": target}))
    np.testing.assert_allclose(budget["flops"], np.maximum(fraction - target, 0.0), atol=1e-7)
    assert float(logged["gate_flops"][0]) == pytest.approx(float(fraction.sum()), rel=1e-6)
    with pytest.raises(ValueError, match="flops_target"):
        dl.as_weights({"flops_target": 1.0})
    share = actor_relation.share_probability(probs)
    for i in range(b):
        want = actor_relation.similarity_loss(similarity[i:i + 1], share[i:i + 1],
                                              pairs[i:i + 1], 0.3)
        np.testing.assert_allclose(terms["relation"][i], want, rtol=1e-6)
    keep_sum, keep_count = metrics["gate_keep_0"]
    assert float(keep_sum / keep_count) == pytest.approx(float(decisions[..., 0].mean()))
    assert float(metrics["groups_used"][0] / metrics["groups_used"][1]) == 1.5
    assert float(terms["relation"][2]) == 0.0  # no pairs, no reward
    assert dl.adaptive_terms({}, w) == ({}, {})

    # set_criterion adds w_flops * L_flops and subtracts w_relation * L_sim, per clip over clips.
    outputs, targets = _outputs(), _targets()
    base, _ = dl.set_criterion(outputs, targets, w)
    total, found = dl.set_criterion({**outputs, "gates": gates, "relation": relation}, targets, w)
    want = base + w.flops * terms["flops"].mean() - w.relation * terms["relation"].mean()
    np.testing.assert_allclose(total, want, rtol=1e-5)
    np.testing.assert_allclose(found["flops"], terms["flops"].mean(), rtol=1e-6)
