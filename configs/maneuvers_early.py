"""Early action prediction: the memory classifier and its baseline on manoeuvres with starting
actions (`maneuvers/cues`: indicator, braking and drift before the onset; `jaxact.data.maneuvers`).

  python launch.py --config=configs/maneuvers_early.py:train=first30 --workdir=/tmp/early
  python -m benchmarks.maneuvers_early      # every training mode over seeds 0-2

`:train=` picks what the models see in training: `full` whole clips (the default experiment's
way), `prefix` random first parts (a fraction drawn from [0.2, 1] per clip, `data.min_fraction`)
or `first30` exactly the first 30 % (`data.train_observation`). Evaluation sweeps the observed
fraction 0.1-1.0 for both methods; `results.json["early_prediction"]["bayes_limit"]` is the
data's ceiling at each fraction (0.43 / 0.68 / 0.82 at 0.2 / 0.3 / 0.4) and
`early_prediction.png` plots the curves against it. Method, model and budget are
`configs/maneuvers_memory.py`'s, except: no mirroring (a mirrored U-turn would signal on the
wrong side), and two inputs from the target's box (the boxes come with the data: an oracle
tracker) that carry the cues: a 16-pixel window zoomed on the target as 3 more channels
(`data.target_crop`: the 2-pixel indicator lamps become 8 pixels) and its box track
(`data.target_track`: braking and drift as numbers). Both were chosen on the validation split
(docs/results_maneuvers.md). `:tiny` / `:smoke` as in maneuvers_memory (smoke:
`maneuvers/tiny`, no cues).
"""

import ml_collections

from configs import common, maneuvers_memory

TRAIN_MODES = {"full": {}, "prefix": {"min_fraction": 0.2}, "first30": {"train_observation": 0.3}}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, train="full", tiny=False, smoke=False)
    if variant.train not in TRAIN_MODES:
        raise ValueError(f"config variant train={variant.train!r}: expected one of "
                         f"{sorted(TRAIN_MODES)}")
    size = ",".join(name for name in ("tiny", "smoke") if variant[name])
    config = maneuvers_memory.get_config(size)
    config.config_name = "maneuvers_early" + (f":{arg}" if arg else "")
    if not variant.smoke:  # smoke runs stay on the seconds-long maneuvers/tiny
        config.data.builder_config = "cues"
    for field, value in TRAIN_MODES[variant.train].items():
        config.data[field] = value
    config.data.flip_prob = 0.0
    config.data.target_crop = 16
    config.data.target_track = True
    config.eval.flip_view = False
    if not variant.smoke:
        config.eval.observation_ratios = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    return config
