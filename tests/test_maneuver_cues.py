"""Starting actions (cues) of the manoeuvre renderer and the Bayes limit of early prediction."""

import dataclasses
import hashlib

import numpy as np
import pytest

from jaxact.data import builders, pipeline
from jaxact.data import maneuvers as m

RES = 64
PRESETS = {c.name: c.render for c in builders.Maneuvers.BUILDER_CONFIGS}
CUES = m.ManeuverConfig(cues=True)
STILL = dataclasses.replace(CUES, jitter_px=0.0)  # box centres without camera jitter
PERFECT = dataclasses.replace(  # always signal on the right side, from the first frame
    CUES, indicator_prob=1.0, indicator_wrong_prob=0.0, false_indicator_prob=0.0, drift_prob=1.0,
    cue_lead_min=1.0, cue_lead_max=1.0)
STRAIGHT, TURN_LEFT, TURN_RIGHT, LANE_LEFT, LANE_RIGHT, U_TURN = range(6)


def _digest(clip):
    h = hashlib.sha256()
    h.update(clip["video"].tobytes())
    h.update(clip["boxes"].tobytes())
    h.update(np.array([clip["onset"], clip["length"], clip["label"]], np.int64).tobytes())
    return h.hexdigest()


def _centres(boxes):
    """[T, 4] normalized boxes -> [T, 2] centres in pixels."""
    return np.stack([boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], -1) * RES / 2


def _latents(seed, label, config):
    """The cue latents `render_clip(seed, label, config)` uses, without rendering."""
    return m.clip_latents(seed, label, config)


def _seed_where(label, config, **want):
    return next(s for s in range(1000)
                if all(_latents(s, label, config)[k] == v for k, v in want.items()))


# sha256 of video, boxes and (onset, length, label), computed with the renderer before cues existed.
@pytest.mark.parametrize("preset, seed, label, digest", [
    ("default", 0, 0, "218fa2d658c12aeb2c3b8f4564851bc27e3161d079436627bd8817886a469b7e"),
    ("default", 7, 1, "06fb495b7df0736af50434c7d538d0d97ac8f862ff37ef335f0fcc7773e9764e"),
    ("default", 11, 3, "4e207ed2163f94a03257e2c8c1388befd3a210d8d4977a8c5ecfc8edba19c56a"),
    ("default", 1234567, 5, "bb76bf968870de8e9c339fdf760e0c1a3cfae4c4d8c498d3e5a125d75f2ece87"),
    ("default", builders.example_seed("train", 4), 4,
     "d1dc5c43b17fdcebaabe86ea2fd45719df50296a505a2b11d77c4686b5be3ffc"),
    ("tiny", 3, 2, "43fa7b39bbd7bd18691ad54de188d98fc4189946a7d8b3a8a82c9f92a29c283b"),
    ("tiny", 42, 4, "3b52a40384f217113fca2c62a96c53e6a3e5e4fa705373afd9440bfee7689266"),
    ("small", 5, 0, "a1a00af134d2be957cb0079c5f36250be7a2ae0b9167cff48aeef431ae37d0b0"),
    ("small", 99, 5, "e83e329fa892ab51691fa5998f48073e5a842fdbcb545c05c142c712c4192159"),
    ("small", 8, 1, "f75f757133cad13dd985fc435441b13be011b0975ae5012b8452f05b869ce3e4"),
    ("res96", 1, 2, "35bd50c5824a2e4562e2f55a5501e3dfa23b79fc800de112889cc60935bdcb93"),
])
def test_configs_without_cues_render_as_before(preset, seed, label, digest):
    config = PRESETS.get(preset, m.ManeuverConfig(resolution=96))
    assert not config.cues
    clip = m.render_clip(seed, label, config)
    assert _digest(clip) == digest
    assert not any(clip["cues"][k] for k in ("indicator", "decel", "delay", "drift"))


def test_frames_before_the_cues_are_identical_and_cues_tell_labels_apart():
    seed = 3
    clips = [m.render_clip(seed, label, CUES) for label in range(6)]
    start = clips[0]["cues"]["start"]
    assert start > 0 and all(c["cues"]["start"] == start for c in clips)
    for clip in clips[1:]:
        assert np.array_equal(clip["video"][:start], clips[0]["video"][:start])
        assert np.array_equal(clip["boxes"][:start], clips[0]["boxes"][:start])
    # A turn always brakes: its pre-onset frames differ from the straight clip's.
    onset = clips[0]["onset"]
    assert clips[TURN_LEFT]["onset"] > onset
    assert not np.array_equal(clips[TURN_LEFT]["video"][:onset], clips[0]["video"][:onset])


def test_lane_change_without_cues_drawn_looks_straight_until_onset():
    seed = _seed_where(LANE_LEFT, CUES, indicator=0, drift=0.0)
    assert _latents(seed, STRAIGHT, CUES)["indicator"] == 0  # no false signal either
    straight, lane = m.render_clip(seed, STRAIGHT, CUES), m.render_clip(seed, LANE_LEFT, CUES)
    onset = straight["onset"]
    assert lane["onset"] == onset and lane["cues"]["start"] < onset
    assert np.array_equal(lane["video"][:onset], straight["video"][:onset])
    assert not np.array_equal(lane["video"][onset:], straight["video"][onset:])


def _amber(video):
    """bool [T, R, R]: pixels of a lit indicator lamp (no paint, marker or marking is this)."""
    r, g, b = (video[..., i].astype(int) for i in range(3))
    return (r >= 235) & (g >= 100) & (g <= 190) & (b <= 80)


@pytest.mark.parametrize("label, side", [(TURN_LEFT, -1), (TURN_RIGHT, 1), (LANE_LEFT, -1),
                                         (LANE_RIGHT, 1), (U_TURN, -1)])
def test_indicator_blinks_on_the_manoeuvre_side(label, side):
    clip = m.render_clip(5, label, PERFECT)
    assert clip["cues"]["indicator"] == side and clip["cues"]["start"] == 0
    period = PERFECT.blink_period
    amber = _amber(clip["video"])
    xs = np.arange(RES)
    for t in range(clip["onset"]):
        x1, y1, x2, y2 = np.rint(clip["boxes"][t] * RES).astype(int)
        near = np.zeros((RES, RES), bool)
        near[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1] = True
        lamp = amber[t] & near
        if t % period < period // 2:
            assert lamp.sum() >= 4, t  # two lamps of about 2 x 2 px
            centre = (x1 + x2) / 2
            assert np.all(side * (xs[np.nonzero(lamp)[1]] - centre) > 0), t
        else:
            assert not lamp.any(), t
    assert not _amber(m.render_clip(5, STRAIGHT, PERFECT)["video"]).any()


def test_braking_before_turns():
    seed = 2
    straight, turn = m.render_clip(seed, STRAIGHT, STILL), m.render_clip(seed, TURN_RIGHT, STILL)
    start, onset = turn["cues"]["start"], turn["onset"]
    delay, decel = turn["cues"]["delay"], turn["cues"]["decel"]
    assert delay > 0 and decel == pytest.approx(STILL.decel_fraction, abs=0.1)
    assert onset == straight["onset"] + delay
    speed = -np.diff(_centres(turn["boxes"])[:, 1])  # upward speed, frame t -> t + 1
    cruise = speed[start - 1]
    assert np.allclose(-np.diff(_centres(straight["boxes"])[:, 1])[start:straight["onset"] - 1],
                       cruise, atol=1e-3)
    braking = speed[start:onset - 1]
    assert np.all(np.diff(braking) < 0)  # slows down all the way to the onset point
    assert braking[-1] < (1.0 - 0.8 * decel) * cruise
    assert np.ptp(_centres(turn["boxes"])[:onset, 0]) < 1e-3  # straight on until the onset


def _brake_red(video):
    """bool [T, R, R]: pixels of a lit brake lamp (red paint is darker: value <= 0.78)."""
    r, g, b = (video[..., i].astype(int) for i in range(3))
    return (r >= 225) & (g <= 80) & (b <= 100)


@pytest.mark.parametrize("label", [TURN_LEFT, TURN_RIGHT, U_TURN])
def test_brake_lights_while_braking(label):
    config = dataclasses.replace(STILL, brake_lights=True)
    seed = _seed_where(label, config, indicator=0)  # no indicator painting over a lamp
    clip = m.render_clip(seed, label, config)
    start, onset = clip["cues"]["start"], clip["onset"]
    assert clip["cues"]["delay"] > 0
    red = _brake_red(clip["video"])
    rear = np.zeros_like(red)  # the lower half of the box: the target heads up until the onset
    for t in range(onset):
        x1, y1, x2, y2 = np.rint(clip["boxes"][t] * RES).astype(int)
        rear[t, (y1 + y2) // 2:y2 + 1, max(x1 - 1, 0):x2 + 1] = True
    lit = (red & rear).sum(axis=(1, 2))
    assert np.all(lit[:start] == 0) and np.all(lit[start:onset] >= 4)  # two lamps of ~2 x 2 px
    assert not red[onset:].any()
    # The lamps are all that change: without them the clip is the `cues` clip, pixel for pixel.
    plain = m.render_clip(seed, label, STILL)
    assert np.array_equal(plain["boxes"], clip["boxes"])
    assert np.array_equal(plain["video"][:start], clip["video"][:start])
    assert not _brake_red(plain["video"]).any()


@pytest.mark.parametrize("label", [STRAIGHT, LANE_LEFT, LANE_RIGHT])
def test_no_brake_lights_without_braking(label):
    config = dataclasses.replace(CUES, brake_lights=True)
    clip = m.render_clip(3, label, config)
    assert clip["cues"]["delay"] == 0
    assert np.array_equal(clip["video"], m.render_clip(3, label, CUES)["video"])


@pytest.mark.parametrize("label, side", [(LANE_LEFT, -1), (LANE_RIGHT, 1)])
def test_drift_before_lane_change(label, side):
    config = dataclasses.replace(STILL, drift_prob=1.0)
    clip = m.render_clip(4, label, config)
    start, onset = clip["cues"]["start"], clip["onset"]
    x = _centres(clip["boxes"])[:, 0]
    drift = side * config.drift_px
    assert clip["cues"]["drift"] == drift
    assert np.ptp(x[:start + 1]) < 1e-3
    assert np.all(side * np.diff(x[start:onset]) > 0)  # drifts toward the new lane
    assert x[onset - 1] - x[start] == pytest.approx(drift, abs=1e-3)
    # Far short of the manoeuvre's guaranteed departure, which the lane change still reaches.
    assert abs(drift) <= m._DISP_PX / 2
    assert side * (x[-1] - x[start]) > 6.0


@pytest.mark.parametrize("seed", range(4))
def test_manoeuvres_complete_in_short_clips_with_cues(seed):
    config = dataclasses.replace(PRESETS["tiny"], cues=True, jitter_px=0.0, decel_fraction=0.5,
                                 cue_lead_min=1.0, cue_lead_max=1.0)
    for label, sign in ((TURN_LEFT, -1), (TURN_RIGHT, 1), (U_TURN, -1)):
        clip = m.render_clip(seed, label, config)
        centre, last = _centres(clip["boxes"]), clip["boxes"][-1]
        assert clip["onset"] < clip["length"]
        assert sign * (centre[-1, 0] - centre[clip["onset"] - 1, 0]) > 4
        if label != U_TURN:
            assert last[2] - last[0] > last[3] - last[1]  # heading turned by 90 degrees


def test_invalid_cue_config():
    for bad in ({"indicator_prob": 1.5}, {"cue_lead_min": 0.0}, {"cue_lead_min": 0.8,
                "cue_lead_max": 0.5}, {"decel_fraction": 0.6}, {"drift_px": m._DISP_PX},
                {"blink_period": 1}):
        with pytest.raises(ValueError):
            m.ManeuverConfig(cues=True, **bad)
    with pytest.raises(ValueError, match="brake_lights needs cues"):
        m.ManeuverConfig(brake_lights=True)


# --------------------------------------------------------------------------------------------
# Bayes limit.

RATIOS = tuple(np.round(np.arange(0.1, 1.01, 0.1), 1))


def test_bayes_limit_without_cues_is_chance_before_the_onset():
    limit = m.bayes_limit(m.ManeuverConfig(), (0.2, 1.0))
    assert limit[0.2] == pytest.approx(1 / 6, abs=0.01)
    assert limit[1.0] == 1.0


def test_bayes_limit_with_cues_rises_from_chance_to_one():
    limit = m.bayes_limit(CUES, RATIOS)
    assert limit[0.1] < 0.25 and limit[0.2] > 0.3 and limit[1.0] > 0.99
    values = [limit[r] for r in RATIOS]
    assert np.all(np.diff(values) > -0.01)  # non-decreasing up to MC noise
    later = m.bayes_limit(CUES, RATIOS, reveal_frames=m._DISP_FRAMES)
    assert all(later[r] <= limit[r] + 0.01 for r in RATIOS)


def test_bayes_limit_with_perfect_cues():
    # Sides are always told apart; braking marks turns and U-turns, drift lane changes. Only
    # turn_left and u_turn (both braking, both signalling left) stay confused: 5/6.
    limit = m.bayes_limit(PERFECT, (0.1, 0.2))
    assert limit[0.1] == pytest.approx(5 / 6, abs=0.012)
    assert limit[0.2] == pytest.approx(5 / 6, abs=0.012)


def test_bayes_limit_matches_the_cue_model_once_every_cue_is_seen():
    config = dataclasses.replace(CUES, cue_lead_min=1.0, cue_lead_max=1.0)
    p, w, q, d = (config.indicator_prob, config.indicator_wrong_prob, config.false_indicator_prob,
                  config.drift_prob)
    right = p * (1 - w)
    # Sum over observations of the largest P(observation | label): braking (turns, U-turn):
    # left / right signal / none; not braking: drift either side (a lane change for sure), else
    # left / right signal / none among straight and the lane changes.
    braking = 2 * right + (1 - p)
    steady = 2 * d + 2 * max(q / 2, (1 - d) * right) + max(1 - q, (1 - d) * (1 - p))
    limit = m.bayes_limit(config, (0.2,), num_samples=60000)
    assert limit[0.2] == pytest.approx((braking + steady) / 6, abs=0.01)


def test_observation_summary_mirrors_under_a_flip():
    labels = np.arange(600) % 6
    rng = np.random.default_rng(0)
    lat = m._draw_latents(rng, rng, labels, CUES)
    mirror = dict(lat, indicator=-lat["indicator"], drift=-lat["drift"])
    observed = np.full(600, 40)
    seen = m.observed_cues(lat, labels, observed, 1)
    flipped = m.observed_cues(mirror, m.FLIP_PERMUTATION[labels], observed, 1)
    assert np.array_equal(flipped[:, :3], seen[:, :3] * [-1, 1, -1])
    revealed = seen[:, 3] >= 0
    assert revealed.any() and not revealed.all()
    assert np.array_equal(flipped[revealed, 3], m.FLIP_PERMUTATION[seen[revealed, 3]])
    assert np.all(flipped[~revealed, 3] == -1)


def test_cues_builder_config():
    preset = builders.Maneuvers.preset("cues")
    default = builders.Maneuvers.preset("default")
    assert preset.render == dataclasses.replace(default.render, cues=True)
    assert (preset.num_train, preset.num_validation, preset.num_test) == (
        default.num_train, default.num_validation, default.num_test)
    assert builders.Maneuvers.frame_shape("cues") == (RES, RES, 3)
    builders._check_split_sizes("maneuvers", preset)
    index = 1
    clip = m.render_clip(builders.example_seed("train", index), index % 6, preset.render)
    assert clip["cues"]["decel"] > 0  # turn_left brakes
    assert clip["video"].shape == (clip["length"], RES, RES, 3)
    lamps = builders.Maneuvers.preset("cues_brake_lights")
    assert lamps.render == dataclasses.replace(preset.render, brake_lights=True)
    assert (lamps.num_train, lamps.num_validation, lamps.num_test) == (
        preset.num_train, preset.num_validation, preset.num_test)


def test_clip_latents_are_the_rendered_clips():
    for seed, label in ((3, TURN_LEFT), (8, LANE_RIGHT), (5, STRAIGHT)):
        clip, lat = m.render_clip(seed, label, CUES), m.clip_latents(seed, label, CUES)
        assert (lat["onset"], lat["length"]) == (clip["onset"], clip["length"])
        assert all(lat[k] == v for k, v in clip["cues"].items())


def test_bayes_decisions_score_the_limit():
    # The table's decisions, scored on fresh draws, reach the limit up to MC noise; a summary
    # that shows the label is decided as that label.
    decisions = m.bayes_decisions(CUES, 0.3, num_samples=60000)
    lat, labels = m._sampled_latents(CUES, 30000, seed=1)
    observed = m.observed_frames(0.3, lat["length"])
    summary = m.observed_cues(lat, labels, observed)
    correct = decisions[m.summary_index(summary)] == labels
    assert correct.mean() == pytest.approx(m.bayes_limit(CUES, (0.3,), 60000)[0.3], abs=0.015)
    revealed = summary[:, 3] >= 0
    assert revealed.any() and correct[revealed].all()
    assert m.summary_index(summary).max() < np.prod(m._SUMMARY_DIMS)


def test_observed_frames_are_the_pipelines():
    for length in (32, 57, 96):
        for ratio in (0.1, 0.2, 0.3, 0.7, 1.0):
            last = pipeline.first_fraction_indices(length, 200, ratio).max()
            assert m.observed_frames(ratio, length) == last + 1
