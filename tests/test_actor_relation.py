"""Actor-relation grouping: shapes and dtypes, masking of non-real actors, the grouped attention
against flax attention run on each group's actors alone, hand-computed share probabilities,
similarity loss and refinement, straight-through gradients, and no retracing on temperature."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxact.models.actor_relation import (
    ActorRelation,
    cosine_similarity,
    gather_groups,
    groups_used,
    refine_groups,
    scatter_groups,
    share_probability,
    similarity_loss,
)

B, N, D, G, H = 2, 5, 8, 3, 2
MASK = np.array([[True, True, False, True, True], [True, False, True, False, False]])
AUX_SHAPES = {"group_logits": (B, N, G), "group_probs": (B, N, G), "groups": (B, N, G),
              "similarity": (B, N, N), "pair_mask": (B, N, N), "groups_used": (B,)}


def _normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _perturb(params, seed, scale=0.3):
    """Moves every parameter off its initial value (zero biases would hide terms)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: p + scale * rng.standard_normal(p.shape).astype(p.dtype), params)


def _module(**kw):
    return ActorRelation(**{"num_groups": G, "num_heads": H, "group_hidden": 4,
                            "similarity_dim": 6, **kw})


def _setup(module, seed=0):
    codes, mask = jnp.asarray(_normal((B, N, D), seed)), jnp.asarray(MASK)
    params = _perturb(jax.jit(module.init)(jax.random.key(seed), codes, mask)["params"], seed + 1)
    return params, codes, mask


def _one_hot(ids, g=G):
    return jnp.asarray(np.eye(g, dtype=np.float32)[np.asarray(ids)])


# ----------------------------------------------------------------------------- module


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_shapes_and_dtypes(dtype, train):
    module = _module(dtype=dtype)
    params, codes, mask = _setup(module)
    assert set(params) == {"group_hidden", "group_out", "phi", "phi_prime", "attention"}
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    rng = jax.random.key(3) if train else None
    out, aux = jax.jit(lambda p, c: module.apply({"params": p}, c, mask, rng, 0.7))(
        params, codes.astype(dtype))
    chex.assert_shape(out, (B, N, D))
    assert out.dtype == dtype
    assert set(aux) == set(AUX_SHAPES)
    for k, shape in AUX_SHAPES.items():
        chex.assert_shape(aux[k], shape)
    chex.assert_tree_all_finite((out, aux["group_probs"], aux["similarity"]))
    assert aux["groups_used"].dtype == jnp.int32 and aux["pair_mask"].dtype == jnp.bool_
    np.testing.assert_array_equal(aux["groups"].astype(jnp.float32).sum(-1), 1.0)  # one-hot
    np.testing.assert_allclose(aux["group_probs"].sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("refine", [False, True], ids=["plain", "refine"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_padded_actors_change_nothing(refine, train):
    module = _module(refine=refine, tau=-1.0 if refine else 0.5)  # tau -1: every real actor joins
    params, codes, mask = _setup(module, seed=4)
    zeroed = jnp.where(mask[..., None], codes, 0.0)
    garbage = jnp.where(mask[..., None], codes, 10.0 * _normal((B, N, D), 5))
    rng = jax.random.key(6) if train else None
    apply = jax.jit(lambda c: module.apply({"params": params}, c, mask, rng))
    (out_z, aux_z), (out_g, aux_g) = apply(zeroed), apply(garbage)
    real = np.asarray(MASK)
    np.testing.assert_allclose(out_z[real], out_g[real], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(aux_z["groups"][real], aux_g["groups"][real])
    np.testing.assert_array_equal(out_g[~real], 0.0)
    np.testing.assert_array_equal(out_z[~real], 0.0)
    assert np.abs(np.asarray(out_g[real])).max() > 1e-3  # not trivially zero


def _reference(params, codes, mask, groups):
    """Flax attention applied to each group's real actors alone: no masking involved."""
    attend = nn.MultiHeadDotProductAttention(H, qkv_features=D, out_features=D)
    ids = np.asarray(groups).argmax(-1)
    ref = np.zeros((B, N, D), np.float32)
    for b in range(B):
        for g in range(G):
            members = np.flatnonzero(np.asarray(mask[b]) & (ids[b] == g))
            if members.size:
                x = codes[b, members][None]
                ref[b, members] = attend.apply({"params": params["attention"]}, x)[0]
    return ref


def test_attention_within_groups_matches_per_group_reference():
    module = _module(refine=False)
    params, codes, mask = _setup(module, seed=7)
    # Batch 0: {0, 1}, {3} alone, {4} with padded 2. Batch 1: real 0 and 2 together in g2 with
    # padded 4; groups 0 and 1 hold only padded actors (rows with no real key).
    groups = _one_hot([[0, 0, 2, 1, 2], [2, 0, 2, 1, 2]])
    out, aux = jax.jit(lambda p: module.apply({"params": p}, codes, mask, groups=groups))(params)
    np.testing.assert_allclose(out, _reference(params, codes, mask, groups), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(aux["groups"], groups)
    np.testing.assert_array_equal(aux["groups_used"], [3, 1])


def test_refinement_in_the_module():
    # phi = phi' = identity: s_ij = cos(c_i, c_j). cos(0, 2) = 0.8, cos(1, 2) = 0.6, cos(0, 1) = 0;
    # padded actor 3 is a copy of actor 0 (cos 1) and must be ignored.
    module = ActorRelation(num_groups=3, num_heads=2, similarity_dim=4, tau=0.7)
    codes = jnp.asarray([[[1, 0, 0, 0], [0, 1, 0, 0], [0.8, 0.6, 0, 0], [1, 0, 0, 0]]], jnp.float32)
    mask = jnp.asarray([[True, True, True, False]])
    params = jax.jit(module.init)(jax.random.key(0), codes, mask)["params"]
    eye = {"kernel": jnp.eye(4), "bias": jnp.zeros(4)}
    params = {**params, "phi": eye, "phi_prime": eye}
    forced = _one_hot([[0, 1, 2, 1]])
    _, aux = jax.jit(lambda p: module.apply({"params": p}, codes, mask, groups=forced))(params)
    np.testing.assert_allclose(aux["similarity"][0, 0, :3], [1.0, 0.0, 0.8], atol=1e-6)
    # 0 joins 2's group (0.8 >= 0.7), 2 joins 0's *unrefined* group, 1 keeps its own (0.6 < 0.7).
    np.testing.assert_array_equal(aux["groups"], _one_hot([[2, 1, 0, 1]]))
    _, aux = jax.jit(lambda p: module.clone(tau=0.85).apply({"params": p}, codes, mask,
                                                            groups=forced))(params)
    np.testing.assert_array_equal(aux["groups"], forced)


def test_straight_through_gradient_reaches_the_group_mlp():
    module = _module()
    params, codes, mask = _setup(module, seed=8)
    weights = jnp.asarray(_normal((B, N, D), 9))

    def loss(p, rng):
        return jnp.sum(weights * module.apply({"params": p}, codes, mask, rng, 0.5)[0])

    grads, eval_grads = jax.jit(lambda p, rng: (jax.grad(loss)(p, rng), jax.grad(loss)(p, None)))(
        params, jax.random.key(10))
    chex.assert_tree_all_finite(grads)
    for name in ("group_hidden", "group_out"):
        assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads[name])) > 1e-6, name
    # Evaluation (argmax, no noise) passes no gradient to the grouping.
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(eval_grads["group_out"]))


def test_traced_temperature_does_not_retrace():
    module = _module()
    params, codes, mask = _setup(module, seed=11)
    traces = []

    @jax.jit
    def apply(p, rng, temperature):
        traces.append(1)  # runs once per trace
        return module.apply({"params": p}, codes, mask, rng, temperature)[0]

    a = apply(params, jax.random.key(0), 1.0)
    b = apply(params, jax.random.key(1), 0.25)
    assert len(traces) == 1
    chex.assert_tree_all_finite((a, b))


# ----------------------------------------------------------------------------- pure functions


def test_scatter_gather_round_trip():
    x = jnp.asarray(_normal((B, N, D), 12))
    ids = np.random.default_rng(13).integers(0, G, (B, N))
    groups = _one_hot(ids)
    grouped = scatter_groups(x, groups)
    chex.assert_shape(grouped, (B, N, G, D))
    np.testing.assert_array_equal(gather_groups(grouped, groups), x)
    for b, i, g in np.ndindex(B, N, G):
        np.testing.assert_array_equal(grouped[b, i, g], x[b, i] if ids[b, i] == g else 0.0)


def test_share_probability_and_similarity_loss_by_hand():
    q = jnp.asarray([[[0.8, 0.2], [1.0, 0.0], [0.25, 0.75]]])
    p = share_probability(q)
    # p01 = 0.8; p02 = 0.8 * 0.25 + 0.2 * 0.75 = 0.35; p12 = 0.25; p00 = 0.68; p22 = 0.625.
    np.testing.assert_allclose(p[0], [[0.68, 0.8, 0.35], [0.8, 1.0, 0.25], [0.35, 0.25, 0.625]],
                               rtol=1e-6)
    s = jnp.asarray([[[1.0, 0.9, 0.1], [0.7, 1.0, -0.2], [0.3, 0.6, 1.0]]])
    pairs = ~jnp.eye(3, dtype=bool)[None]
    # Each term is (2 p - 1)(s - 0.5): 01: 0.6 * 0.4 = 0.24; 10: 0.6 * 0.2 = 0.12;
    # 02: -0.3 * -0.4 = 0.12; 20: -0.3 * -0.2 = 0.06; 12: -0.5 * -0.7 = 0.35; 21: -0.5 * 0.1 = -0.05.
    np.testing.assert_allclose(similarity_loss(s, p, pairs, 0.5), 0.84 / 6, rtol=1e-6)
    # Actor 2 not real: pairs 01 and 10 only.
    only01 = pairs & jnp.asarray([True, True, False])[:, None] & jnp.asarray([True, True, False])
    np.testing.assert_allclose(similarity_loss(s, p, only01, 0.5), 0.18, rtol=1e-6)
    # No pairs: 0, and a finite gradient.
    none = jnp.zeros_like(pairs)
    assert float(similarity_loss(s, p, none, 0.5)) == 0.0
    chex.assert_tree_all_finite(jax.grad(similarity_loss)(s, p, none, 0.5))


def test_refine_groups_by_hand():
    groups = _one_hot([[0, 1, 2, 1]])  # actor 3 is not real
    pairs = jnp.asarray([[True, True, True, False]])
    pairs = pairs[:, :, None] & pairs[:, None, :] & ~jnp.eye(4, dtype=bool)
    s = jnp.asarray([[[1.0, 0.3, 0.6, 0.99],   # 0: best real other is 2 (0.6 >= 0.5): joins g2
                      [0.2, 1.0, 0.4, 0.90],   # 1: best is 2 at 0.4 < 0.5: keeps g1
                      [0.55, 0.1, 1.0, 0.0],   # 2: joins 0's unrefined g0
                      [0.9, 0.9, 0.9, 1.0]]])  # 3: not real, keeps its own
    np.testing.assert_array_equal(refine_groups(groups, s, pairs, 0.5), _one_hot([[2, 1, 0, 1]]))
    below = s.at[0, 0, 2].set(0.45).at[0, 2, 0].set(0.2)
    np.testing.assert_array_equal(refine_groups(groups, below, pairs, 0.5), groups)
    # The partner's one-hot carries its gradient: d refined[0] / d groups[2] is the identity.
    jac = jax.jacobian(lambda g: refine_groups(g, s, pairs, 0.5)[0, 0])(groups)
    np.testing.assert_array_equal(jac[:, 0, 2], np.eye(G))


def test_groups_used_counts_real_actors_only():
    groups = _one_hot([[0, 0, 2, 1], [1, 1, 1, 0]])
    mask = jnp.asarray([[True, True, True, False], [True, True, False, False]])
    np.testing.assert_array_equal(groups_used(groups, mask), [2, 1])


def test_cosine_similarity_is_safe_at_zero():
    a = jnp.asarray([[[3.0, 4.0], [0.0, 0.0]]])
    s = cosine_similarity(a, a)
    np.testing.assert_allclose(s[0], [[1.0, 0.0], [0.0, 0.0]], atol=1e-6)
    chex.assert_tree_all_finite(jax.grad(lambda x: cosine_similarity(x, x).sum())(a))
