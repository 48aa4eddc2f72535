"""Experiments by name: `config.experiment` picks one; each offers train / eval / predict."""

EXPERIMENTS = {
    "memory_classifier": "jaxact.train.classifier",
    "action_detector": "jaxact.train.detector",
}


def get_experiment(name: str):
    """The module implementing `name` (imported lazily so each launch pulls in only what it runs)."""
    import importlib

    if name not in EXPERIMENTS:
        raise ValueError(f"config.experiment={name!r}: expected one of {sorted(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])
