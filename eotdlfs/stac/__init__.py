"""STAC (Q1+) datasets: reading a catalog folder, the official client's wire format, search.

A STAC version is self-contained: its catalog, collection and item documents are
files of the version with relative hrefs, beside its asset files.
"""

from .local import read_local_catalog
from .official import documents_to_feature_collection, feature_collection_to_documents
from .rules import MAX_CATALOG_BYTES, MAX_DOCUMENT_BYTES, MAX_ITEMS, StacError
from .tree import CatalogFiles
from .walk import StoredSource

__all__ = [
    "CatalogFiles", "MAX_CATALOG_BYTES", "MAX_DOCUMENT_BYTES", "MAX_ITEMS", "StacError", "StoredSource",
    "documents_to_feature_collection", "feature_collection_to_documents", "read_local_catalog",
]
