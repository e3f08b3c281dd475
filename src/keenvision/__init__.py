"""keenvision: fast, faithful, tested implementations of published vision methods."""

__version__ = "0.1.0"


def load(name: str):
    """A shipped model by its registry name (``keen models`` lists them), through its system's loader:
    ``keenvision.load("farsee-camvid")`` is ``keenvision.farsee.load_farsee("farsee-camvid")``."""
    from .core.registry import load as load_shipped

    return load_shipped(name)
