"""DecoupledFusionHead: output shapes for every fusion with and without encodings, jit, finite
parameters, actors kept apart, per-actor logits read from the fused map, bfloat16, field checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxact.models.fusion import FUSIONS
from jaxact.models.fusion_head import DecoupledFusionHead

B, N, T, S, C, D, A = 2, 3, 4, 3, 8, 6, 5
SMALL = dict(enc_dim=8, fused_dim=8, hidden_dim=16, reduce_dim=4)


def _inputs(seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    actors = rng.standard_normal((B, N, T, S, S, C)).astype(np.float32)
    query = rng.standard_normal((B, N, D)).astype(np.float32)
    return jnp.asarray(actors, dtype), jnp.asarray(query, dtype)


def _param_count(params) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def test_choices_are_the_fusions():
    assert DecoupledFusionHead.CHOICES == {"fusion": ("sum", "concat", "gram"),
                                           "gate_policy": ("both", "input"),
                                           "spatial": ("mean", "keyframe")}
    assert tuple(FUSIONS) == DecoupledFusionHead.CHOICES["fusion"]


@pytest.mark.parametrize("encodings", [True, False], ids=["hyper", "plain"])
@pytest.mark.parametrize("fusion", ["sum", "concat", "gram"])
def test_shapes_jit_and_finite(fusion, encodings):
    head = DecoupledFusionHead(num_actions=A, fusion=fusion, encodings=encodings, **SMALL)
    actors, query = _inputs()
    variables = jax.jit(head.init)(jax.random.key(0), actors, query)
    params = variables["params"]
    assert set(variables) == {"params"}
    chex.assert_tree_all_finite(params)
    assert set(params) == {"temporal_encoding", "spatial_encoding", "fusion", "hidden", "norm",
                           "logits", "map_logits"}
    enc_keys = {"z", "hyper_hidden", "hyper_kernel", "bias"} if encodings else {"conv"}
    assert set(params["temporal_encoding"]) == set(params["spatial_encoding"]) == enc_keys
    chex.assert_shape([params["hidden"]["kernel"], params["map_logits"]["kernel"]],
                      [(8 + D, 16), (8, A + 1)])

    apply = jax.jit(head.apply)
    out = apply(variables, actors, query)
    assert set(out) == {"action_logits", "map_logits"}
    chex.assert_shape([out["action_logits"], out["map_logits"]], [(B, N, A), (B, N, S, S, A + 1)])
    chex.assert_tree_all_finite(out)

    # Actors stay apart: changing one actor's features moves only its own outputs.
    moved = apply(variables, actors.at[0, 1].add(1.0), query)
    for key in out:
        diff = np.abs(np.asarray(moved[key]) - np.asarray(out[key]))
        diff = diff.reshape(B * N, -1).max(axis=1)
        assert diff[1] > 1e-4 and np.all(np.delete(diff, 1) == 0.0), (key, diff)


def test_without_query():
    head = DecoupledFusionHead(num_actions=A, use_query=False, **SMALL)
    actors, _ = _inputs(1)
    out, variables = jax.jit(head.init_with_output)(jax.random.key(0), actors)
    chex.assert_shape([out["action_logits"], variables["params"]["hidden"]["kernel"]],
                      [(B, N, A), (8, 16)])
    with pytest.raises(ValueError, match="needs query_features"):
        DecoupledFusionHead(num_actions=A, **SMALL).init(jax.random.key(0), actors)


def test_action_logits_read_the_pooled_fused_map():
    # Recompute the per-actor branch in numpy from the fused map (captured as the fusion
    # module's output): mean over S x S, concat query, Dense, LayerNorm, ReLU, Dense.
    head = DecoupledFusionHead(num_actions=A, fusion="gram", **SMALL)
    actors, query = _inputs(2)
    variables = head.init(jax.random.key(3), actors, query)
    out, state = head.apply(variables, actors, query, capture_intermediates=True)
    fused = np.asarray(state["intermediates"]["fusion"]["__call__"][0], np.float64)
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), variables["params"])
    x = np.concatenate([fused.mean(axis=(2, 3)), np.asarray(query, np.float64)], axis=-1)
    h = x @ p["hidden"]["kernel"] + p["hidden"]["bias"]
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6)
    h = np.maximum(h * p["norm"]["scale"] + p["norm"]["bias"], 0.0)
    np.testing.assert_allclose(out["action_logits"], h @ p["logits"]["kernel"] + p["logits"]["bias"],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["map_logits"],
                               fused @ p["map_logits"]["kernel"] + p["map_logits"]["bias"],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fusion", ["sum", "gram"])
def test_bfloat16(fusion):
    head = DecoupledFusionHead(num_actions=A, fusion=fusion, dtype=jnp.bfloat16, **SMALL)
    actors, query = _inputs(4, jnp.bfloat16)
    out, variables = jax.jit(head.init_with_output)(jax.random.key(0), actors, query)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    assert out["action_logits"].dtype == out["map_logits"].dtype == jnp.bfloat16
    chex.assert_shape([out["action_logits"], out["map_logits"]], [(B, N, A), (B, N, S, S, A + 1)])
    chex.assert_tree_all_finite(out)


def test_bad_fusion_raises():
    actors, query = _inputs()
    with pytest.raises(ValueError, match="fusion must be one of"):
        DecoupledFusionHead(num_actions=A, fusion="max").init(jax.random.key(0), actors, query)


def _expected_count(fusion, encodings, c=64, t=4, d=64, a=5, e=64, f=64, hidden=128, ca=16,
                    z=16, zh=64):
    """Parameter count of the default-width head, layer by layer."""
    dense = lambda i, o: i * o + o
    enc = (z + dense(z, zh) + dense(zh, c * e) + e) if encodings else dense(c, e)
    fusion_count = {
        "sum": dense(e, f),
        "concat": dense(2 * e, f),
        "gram": (2 * dense(e, ca) + 9 * (1 + t) * ca * f + f + 9 * f * f + f + 1
                 + 2 * (9 * f * f + f)),
    }[fusion]
    per_actor = dense(f + d, hidden) + 2 * hidden + dense(hidden, a)  # hidden, norm, logits
    return 2 * enc + fusion_count + per_actor + dense(f, a + 1)


@pytest.mark.parametrize("encodings", [True, False], ids=["hyper", "plain"])
@pytest.mark.parametrize("fusion", ["sum", "concat", "gram"])
def test_param_counts_default_widths(fusion, encodings):
    # C = 64, S = 7, T = 4, A = 5, query width 64 (the detector's default fpn_dim); traced only.
    head = DecoupledFusionHead(num_actions=5, fusion=fusion, encodings=encodings)
    actors = jax.ShapeDtypeStruct((1, 2, 4, 7, 7, 64), jnp.float32)
    query = jax.ShapeDtypeStruct((1, 2, 64), jnp.float32)
    shapes = jax.eval_shape(head.init, jax.random.key(0), actors, query)
    assert _param_count(shapes["params"]) == _expected_count(fusion, encodings)


ADAPTIVE = dict(SMALL, temporal_layers=2, gate=True, relation=True, num_groups=3,
                relation_heads=2)


def test_adaptive_layers_shapes_and_parameters():
    head = DecoupledFusionHead(num_actions=A, fusion="gram", **ADAPTIVE)
    actors, query = _inputs()
    scores = jnp.array([[0.9, 0.2, 0.7], [0.6, 0.8, 0.1]])
    variables = head.init(jax.random.key(0), actors, query, actor_scores=scores)
    assert {"temporal_stack", "relation"} <= set(variables["params"])
    out = head.apply(variables, actors, query, actor_scores=scores)
    chex.assert_shape([out["action_logits"], out["map_logits"]], [(B, N, A), (B, N, S, S, A + 1)])
    assert len(out["gates"]) == 2
    for gate in out["gates"]:
        chex.assert_shape(gate.decisions, (B, N, 8, 3))
    # L layers of 2 T K C_e^2 FLOPs per actor.
    assert [g.flops for g in out["gates"]] == [2 * T * 3 * 8 * 8] * 2
    # Evaluation: actors below relation_threshold take no part.
    np.testing.assert_array_equal(out["relation"]["pair_mask"][0],
                                  [[0, 0, 1], [0, 0, 0], [1, 0, 0]])
    # Training samples with the "gumbel" stream, and an explicit actor mask overrides scores.
    mask = jnp.ones((B, N), bool)
    trained = head.apply(variables, actors, query, actor_mask=mask, train=True, temperature=2.0,
                         rngs={"gumbel": jax.random.key(1)})
    assert bool(jnp.all(trained["relation"]["pair_mask"] == ~jnp.eye(N, dtype=bool)))
    chex.assert_tree_all_finite(trained["action_logits"])


def test_temporal_layers_without_gate_and_gate_needs_layers():
    head = DecoupledFusionHead(num_actions=A, fusion="sum", **dict(SMALL, temporal_layers=1))
    actors, query = _inputs()
    variables = head.init(jax.random.key(0), actors, query)
    out = head.apply(variables, actors, query)
    assert "gates" not in out and "temporal_stack" in variables["params"]
    with pytest.raises(ValueError, match="temporal_layers"):
        DecoupledFusionHead(num_actions=A, gate=True, **SMALL).init(jax.random.key(0), actors,
                                                                     query)


def test_padded_queries_change_no_real_actor_through_the_relations():
    """An actor outside the mask may hold any features: real actors' outputs stay the same."""
    head = DecoupledFusionHead(num_actions=A, fusion="sum",
                               **dict(SMALL, relation=True, num_groups=2, relation_heads=2))
    actors, query = _inputs()
    mask = jnp.array([[True, True, False], [True, False, True]])
    variables = head.init(jax.random.key(0), actors, query, actor_mask=mask)
    out = head.apply(variables, actors, query, actor_mask=mask)
    garbage = actors.at[0, 2].set(50.0).at[1, 1].set(-30.0)
    moved = head.apply(variables, garbage, query, actor_mask=mask)
    for b, n in ((0, 0), (0, 1), (1, 0), (1, 2)):
        np.testing.assert_allclose(moved["action_logits"][b, n], out["action_logits"][b, n],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fusion", ["sum", "gram"])
def test_keyframe_spatial_branch_shares_the_parameters(fusion):
    """`spatial="keyframe"` reads the same parameters (a run can be fine-tuned into it) and
    equals the mean head fed a clip whose every frame is the keyframe's, with its temporal
    branch left as it was."""
    actors, query = _inputs(3)
    mean_head = DecoupledFusionHead(num_actions=A, fusion=fusion, **SMALL)
    key_head = DecoupledFusionHead(num_actions=A, fusion=fusion, spatial="keyframe", **SMALL)
    variables = mean_head.init(jax.random.key(0), actors, query)
    chex.assert_trees_all_equal_shapes(variables,
                                       key_head.init(jax.random.key(0), actors, query))
    out = jax.jit(key_head.apply)(variables, actors, query)
    chex.assert_tree_all_finite(out)
    # Frames other than the keyframe moved by a per-frame constant: the temporal branch
    # (mean over the bins) moves, the keyframe's spatial branch does not.
    shift = jnp.arange(T, dtype=jnp.float32).at[T // 2].set(0.0)[None, None, :, None, None, None]
    moved = key_head.apply(variables, actors + shift, query)
    assert not np.allclose(moved["action_logits"], out["action_logits"])
    # With T identical frames the two heads agree.
    still = jnp.broadcast_to(actors[:, :, T // 2:T // 2 + 1], actors.shape)
    chex.assert_trees_all_close(key_head.apply(variables, still, query),
                                mean_head.apply(variables, still, query), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="spatial must be one of"):
        DecoupledFusionHead(num_actions=A, spatial="last", **SMALL).init(
            jax.random.key(0), actors, query)
