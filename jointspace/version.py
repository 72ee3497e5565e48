"""The package version, in one place (the root package and model cards read it)."""
__version__ = "0.1.0"
