"""Temporal channel gate: decisions, straight-through gradients, counted FLOPs, compact path."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxact.models import channel_gate, gumbel
from jaxact.models.channel_gate import DROP, KEEP, REUSE, Gate, GatedTemporalStack


def _one_hot(codes) -> jnp.ndarray:
    return jax.nn.one_hot(jnp.asarray(codes), 3)


def _layer_reference(x, params, kernel_size):
    """numpy: LayerNorm over channels, 'same' conv over T, ReLU."""
    x = np.asarray(x, np.float64)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    norm = (x - mu) / np.sqrt(var + 1e-6) * np.asarray(params["norm"]["scale"]) + np.asarray(
        params["norm"]["bias"])
    kernel, bias = np.asarray(params["kernel"], np.float64), np.asarray(params["bias"])
    t = x.shape[-2]
    lo = (kernel_size - 1) // 2
    out = np.zeros((*x.shape[:-1], kernel.shape[-1]))
    for i in range(t):
        for k in range(kernel_size):
            j = i + k - lo
            if 0 <= j < t:
                out[..., i, :] += norm[..., j, :] @ kernel[k]
    return np.maximum(out + bias, 0.0)


def test_shapes_and_layer_against_numpy():
    stack = GatedTemporalStack(num_layers=2, kernel_size=3)
    x = jax.random.normal(jax.random.key(0), (2, 3, 8, 16))
    variables = stack.init(jax.random.key(1), x)
    y, gates = stack.apply(variables, x)
    chex.assert_shape(y, (2, 3, 8, 16))
    assert len(gates) == 2
    for gate in gates:
        chex.assert_shape(gate.decisions, (2, 3, 16, 3))
        assert gate.flops == 2 * 8 * 3 * 16 * 16
    ungated = GatedTemporalStack(num_layers=2, kernel_size=3, gate=False)
    params = {k: v for k, v in variables["params"].items() if k.startswith("layer_")}
    y_plain, none = ungated.apply({"params": params}, x)
    assert none == []
    expected = _layer_reference(_layer_reference(x, params["layer_0"], 3), params["layer_1"], 3)
    np.testing.assert_allclose(y_plain, expected, rtol=1e-4, atol=1e-5)


def test_forced_decisions_select_channel_by_channel():
    """keep -> X_t, reuse -> X'_{t-1}, drop -> 0, channel by channel (one layer)."""
    c = 6
    stack = GatedTemporalStack(num_layers=1, kernel_size=3)
    x = jax.random.normal(jax.random.key(0), (1, 2, 5, c))
    variables = stack.init(jax.random.key(1), x)
    codes = np.array([[[KEEP, REUSE, DROP, KEEP, DROP, REUSE],
                       [DROP, DROP, KEEP, REUSE, KEEP, KEEP]]])
    y, gates = stack.apply(variables, x, decisions=[_one_hot(codes)])
    computed = _layer_reference(x, variables["params"]["layer_0"], 3)
    for actor in range(2):
        for ch in range(c):
            want = {KEEP: computed[0, actor, :, ch], REUSE: np.asarray(x[0, actor, :, ch]),
                    DROP: np.zeros(5)}[codes[0, actor, ch]]
            np.testing.assert_allclose(y[0, actor, :, ch], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(gates[0].decisions, _one_hot(codes))


def test_reuse_chains_through_layers():
    """A channel reused at every layer is the stack's input channel, untouched."""
    stack = GatedTemporalStack(num_layers=3)
    x = jax.random.normal(jax.random.key(2), (1, 1, 4, 5))
    variables = stack.init(jax.random.key(3), x)
    codes = np.full((1, 1, 5), REUSE)
    y, _ = stack.apply(variables, x, decisions=[_one_hot(codes)] * 3)
    np.testing.assert_array_equal(y, x)


def test_straight_through_passes_gradients_to_the_logits():
    logits = jnp.array([[0.3, 0.1, -0.2], [1.0, -1.0, 0.5]])
    values = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])

    def loss(lg):
        return jnp.sum(gumbel.gumbel_one_hot(lg, jax.random.key(0), 0.7) * values)

    sample = gumbel.gumbel_one_hot(logits, jax.random.key(0), 0.7)
    np.testing.assert_array_equal(jnp.sum(sample, -1), 1.0)  # the forward value is one-hot
    assert set(np.unique(sample).tolist()) <= {0.0, 1.0}
    grad = jax.grad(loss)(logits)
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 1e-3
    # Evaluation: no noise, no gradient.
    assert np.abs(jax.grad(lambda lg: jnp.sum(gumbel.gumbel_one_hot(lg, None) * values))(
        logits)).sum() == 0


def test_stack_gradient_reaches_the_policy_in_training():
    stack = GatedTemporalStack(num_layers=2)
    x = jax.random.normal(jax.random.key(4), (2, 3, 6, 8))
    variables = stack.init(jax.random.key(5), x)

    def loss(params):
        y, gates = stack.apply({"params": params}, x, rng=jax.random.key(6), temperature=1.0)
        return jnp.sum(y**2) + channel_gate.flops_fraction(gates).mean()

    grads = jax.grad(loss)(variables["params"])
    for i in range(2):
        norm = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[f"gate_{i}"]))
        assert norm > 0, f"no gradient reaches gate_{i}"


def test_flops_fraction_equals_a_hand_count():
    # Layer A: 2 actors x 4 channels, 100 FLOPs per actor; layer B: 2 actors x 2 channels, 10.
    a = _one_hot([[[KEEP, KEEP, REUSE, DROP], [KEEP, DROP, DROP, DROP]]])  # [1, 2, 4, 3]
    b = _one_hot([[[KEEP, REUSE], [REUSE, REUSE]]])  # [1, 2, 2, 3]
    gates = [Gate(a, 100.0), Gate(b, 10.0)]
    # reuse_cost 0: A keeps 2/4 and 1/4 of 100 per actor = 75; B keeps 1/2 of 10 = 5;
    # total ungated 2 x 100 + 2 x 10 = 220.
    np.testing.assert_allclose(channel_gate.flops_fraction(gates), [80 / 220], rtol=1e-6)
    # reuse_cost 0.5: A + 0.5 x 1/4 x 100 = 12.5; B + 0.5 x (1/2 + 2/2) x 10 = 7.5.
    np.testing.assert_allclose(channel_gate.flops_fraction(gates, 0.5), [100 / 220], rtol=1e-6)
    np.testing.assert_allclose(channel_gate.decision_fractions([Gate(a, 1.0)]),
                               [[[3 / 8, 1 / 8, 4 / 8]]])
    # Per clip: a second clip that keeps everything counts 1.
    full = Gate(jnp.concatenate([a, _one_hot(np.zeros((1, 2, 4), int))]), 100.0)
    np.testing.assert_allclose(channel_gate.flops_fraction([full]), [75 / 200, 1.0], rtol=1e-6)


def test_compact_path_equals_the_masked_one_when_the_budget_covers_every_kept_channel():
    stack = GatedTemporalStack(num_layers=2, policy="input")
    x = jax.random.normal(jax.random.key(7), (2, 3, 6, 8))
    variables = stack.init(jax.random.key(8), x)
    # Random policy weights, so that actors keep different channels and not all of them.
    params = jax.tree.map(lambda p: 3 * jax.random.normal(jax.random.key(9), p.shape),
                          variables["params"])
    masked, gates = stack.apply({"params": params}, x)
    kept = max(int(jnp.sum(g.decisions[..., KEEP], -1).max()) for g in gates)
    assert 1 < kept < 8, kept
    for budget in (kept, 8):
        compact, _ = stack.apply({"params": params}, x, budget=budget)
        np.testing.assert_allclose(compact, masked, rtol=1e-5, atol=1e-5)
    # Under budget, a kept channel outside it is reused: the output differs from the masked.
    short, _ = stack.apply({"params": params}, x, budget=kept - 1)
    assert np.abs(np.asarray(short) - np.asarray(masked)).max() > 0


def test_compact_layer_computes_exactly_the_picked_channels():
    layer = channel_gate.TemporalLayer(features=8, in_features=5, kernel_size=3)
    x = jax.random.normal(jax.random.key(10), (2, 4, 6, 5))
    variables = layer.init(jax.random.key(11), x)
    full = layer.apply(variables, x)
    channels = jnp.array(np.random.default_rng(0).integers(0, 8, (2, 4, 3)))
    part = layer.apply(variables, x, channels, method="compact")
    np.testing.assert_allclose(part, jnp.take_along_axis(full, channels[:, :, None, :], -1),
                               rtol=1e-5, atol=1e-6)


def test_compact_path_refuses_settings_that_cannot_skip_compute():
    x = jnp.zeros((1, 1, 4, 4))
    for stack, kwargs in ((GatedTemporalStack(policy="both"), {}),
                          (GatedTemporalStack(policy="input"), {"rng": jax.random.key(0)})):
        variables = stack.init(jax.random.key(0), x)
        with pytest.raises(ValueError, match="compact path"):
            stack.apply(variables, x, budget=2, **kwargs)


def test_policy_starts_by_keeping():
    """The initial logit bias keeps every channel at evaluation (argmax)."""
    stack = GatedTemporalStack(num_layers=2)
    x = jax.random.normal(jax.random.key(12), (2, 5, 4, 8))
    variables = stack.init(jax.random.key(13), x)
    _, gates = stack.apply(variables, x)
    fractions = channel_gate.decision_fractions(gates)
    assert fractions.shape == (2, 2, 3) and float(fractions[..., KEEP].min()) > 0.9


def test_no_retrace_across_temperatures():
    stack = GatedTemporalStack(num_layers=2)
    x = jax.random.normal(jax.random.key(14), (1, 2, 4, 8))
    variables = stack.init(jax.random.key(15), x)
    traces = []

    @jax.jit
    def run(params, temperature, rng):
        traces.append(1)
        y, gates = stack.apply({"params": params}, x, rng=rng, temperature=temperature)
        return y, channel_gate.flops_fraction(gates)

    for step, temperature in enumerate((5.0, 2.0, 0.5)):
        run(variables["params"], jnp.float32(temperature), jax.random.key(step))
    assert len(traces) == 1


def test_detections_and_evaluation_count_the_gate_by_hand():
    from jaxact.evaluation import detection
    from jaxact.train.detector import detections_from_outputs

    # 1 clip, 2 actors, 2 layers of 4 channels; actor 0 keeps 3 then 1, actor 1 keeps 0 then 2.
    layer_0 = _one_hot([[[KEEP, KEEP, KEEP, DROP], [REUSE, DROP, DROP, REUSE]]])
    layer_1 = _one_hot([[[KEEP, REUSE, DROP, DROP], [KEEP, KEEP, DROP, DROP]]])
    outputs = {"boxes": jnp.full((1, 2, 4), 0.5), "person_logits": jnp.array([[5.0, -5.0]]),
               "action_logits": jnp.zeros((1, 2, 3)),
               "gates": [Gate(layer_0, 10.0), Gate(layer_1, 30.0)]}
    rows = jax.tree.map(np.asarray, detections_from_outputs(outputs))
    np.testing.assert_allclose(rows["gate_actor_flops"], [[(10 * 3 / 4 + 30 * 1 / 4) / 40,
                                                           (10 * 0 + 30 * 2 / 4) / 40]])
    np.testing.assert_array_equal(rows["gate_kept"], [[[3, 1], [0, 2]]])
    np.testing.assert_allclose(rows["gate_flops"], [(7.5 + 7.5 + 0 + 15) / 80])
    values = {"gate_flops": list(rows["gate_flops"]), "gate_fractions": list(rows["gate_fractions"]),
              "gate_people_flops": [rows["gate_actor_flops"][0, 0]],  # actor 1 scores < 0.5
              "gate_people_kept": [rows["gate_kept"][0, 0]], "gate_clip_kept": [],
              "groups_used": []}
    result = detection.adaptive_results(values)
    assert result["gated_flops_fraction"] == pytest.approx(30 / 80)
    assert result["gated_flops_fraction_people"] == pytest.approx(15 / 40)
    assert result["gate_fractions"][0] == pytest.approx({"keep": 3 / 8, "reuse": 2 / 8,
                                                         "drop": 3 / 8})
    assert result["gate_people_kept_max"] == [3, 1] and result["gate_clip_kept_max"] is None
    assert "groups_used" not in result
