"""eotdlfs: the EOTDL repository of datasets and models as a filesystem."""

__version__ = "0.1.0"
