"""keenvision: fast, faithful, tested implementations of published vision methods."""

__version__ = "0.1.0"
