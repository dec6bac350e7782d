"""The package version (one place: the package face, `jaxlm --version`)."""

__version__ = "0.1.0"
