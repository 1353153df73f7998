"""The release of this package (setup.cfg reads it)."""
__version__ = "0.3.0"
