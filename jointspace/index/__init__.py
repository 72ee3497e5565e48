"""Collections of embedded items on a vector store, searchable by any modality and by mixes."""
from .collection import Collection, Hit
from .filters import UnknownFilterError
from .ingest import IngestReport, build_collection, index_source
from .query import Term
from .store import STORES, VectorStore, open_store

__all__ = ["Collection", "Hit", "IngestReport", "STORES", "Term", "UnknownFilterError",
           "VectorStore", "build_collection", "index_source", "open_store"]
