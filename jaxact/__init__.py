"""jaxact: video action understanding in JAX/Flax."""

__version__ = "0.1.0"
