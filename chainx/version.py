"""The package version, in its own module so that any stage can import it without the API."""

__version__ = "0.1.0"
