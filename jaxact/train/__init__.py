"""Experiments by name: `config.experiment` picks one (see `experiment.Experiment`)."""

import importlib

# name -> "module:class"; imported lazily so each launch pulls in only what it runs.
EXPERIMENTS = {
    "memory_classifier": "jaxact.train.classifier:Experiment",
    "action_detector": "jaxact.train.detector:Experiment",
}


def get_experiment(name: str):
    """The experiment class registered as `name`: `get_experiment(name)(config, workdir)`."""
    if name not in EXPERIMENTS:
        raise ValueError(f"config.experiment={name!r}: expected one of {sorted(EXPERIMENTS)}")
    module, cls = EXPERIMENTS[name].split(":")
    return getattr(importlib.import_module(module), cls)
