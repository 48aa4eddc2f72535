"""Early action prediction: the memory classifier and its baseline on manoeuvres with starting
actions (`maneuvers/cues_brake_lights`: indicator, braking with brake lamps, and drift before the
onset; `jaxact.data.maneuvers`).

  python launch.py --config=configs/maneuvers_early.py:train=first30 --workdir=/tmp/early
  python -m benchmarks.maneuvers_early      # every training mode over seeds 0-2

`:train=` picks what the models see in training: `full` whole clips (the default experiment's
way), `prefix` random first parts (a fraction drawn from [0.2, 1] per clip, `data.min_fraction`)
or `first30` exactly the first 30 % (`data.train_observation`). `:brake_lights=False` takes
`maneuvers/cues`, the same clips without brake lamps (braking shows only as lost speed, not
from its first frame as the limit counts it; the benchmarks up to 2026-12-07 12:20). Evaluation
sweeps the observed fraction 0.1-1.0 for both methods;
`results.json["early_prediction"]["bayes_limit"]` is the data's ceiling at each fraction (0.43
/ 0.68 / 0.83 at 0.2 / 0.3 / 0.4; both data versions: the same latent draws) and
`early_prediction.png` plots the curves against it. Method, model and budget are
`configs/maneuvers_memory.py`'s, except: no mirroring (a mirrored U-turn would signal on the
wrong side); two inputs from the target's box (the boxes come with the data: an oracle tracker)
that carry the cues: the 16-pixel window around the target instead of the frame
(`data.target_crop`, `data.target_only`: the indicator lamps, the car's look) and its box track
(`data.target_track`: braking and drift as numbers); 2,400 steps (450 pre-training), which
the small input makes cheaper than 800 steps on whole frames; and 6,000 training clips (the
stored 1,200 plus 4,800 rendered at start-up, `data.extra_train_clips`). All were chosen on
the validation split (docs/results_maneuvers.md). `:tiny` / `:smoke` as in maneuvers_memory (smoke:
`maneuvers/tiny`, no cues).

Expected (test, centre view, mean of seeds 0-2, 2026-12-07; 3.3-4.6 min of training a run, both
methods, on 2 CPU cores): `train=prefix` memory 0.40 / 0.65 / 0.78 top-1 at 0.2 / 0.3 / 0.4 observed
(baseline 0.42 / 0.65 / 0.80), whole clips 1.00; with `:brake_lights=False` memory 0.29 /
0.51 / 0.69.
"""

import ml_collections

from configs import common, maneuvers_memory

TRAIN_MODES = {"full": {}, "prefix": {"min_fraction": 0.2}, "first30": {"train_observation": 0.3}}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, train="full", brake_lights=True, tiny=False, smoke=False)
    if variant.train not in TRAIN_MODES:
        raise ValueError(f"config variant train={variant.train!r}: expected one of "
                         f"{sorted(TRAIN_MODES)}")
    size = ",".join(name for name in ("tiny", "smoke") if variant[name])
    config = maneuvers_memory.get_config(size)
    config.config_name = "maneuvers_early" + (f":{arg}" if arg else "")
    if not variant.smoke:  # smoke runs stay on the seconds-long maneuvers/tiny
        config.data.builder_config = "cues_brake_lights" if variant.brake_lights else "cues"
    for field, value in TRAIN_MODES[variant.train].items():
        config.data[field] = value
    config.data.flip_prob = 0.0
    config.data.target_crop = 16
    config.data.target_track = True
    # The target's 16-pixel window is the whole video (no frame: 16x less to encode), which buys
    # 3x the steps in less time than frames + zoom took for 800; chosen on the validation split.
    config.data.target_only = True
    config.model.frame_encoder_kwargs.patch_size = 2  # the 16-px window: 8 x 8 patches
    if not (variant.tiny or variant.smoke):
        config.train.num_steps = 2400
        config.memory.aux_steps = 450  # the default's share of the budget (150 of 800)
        # 2,400 steps overfit 1,200 clips (4,800 steps score lower); 6,000 clips score 4.6
        # validation points higher. Rendered into memory at start-up (~35 s, ~4.7 GB).
        config.data.extra_train_clips = 4800
    config.eval.flip_view = False
    if not variant.smoke:
        config.eval.observation_ratios = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    return config
