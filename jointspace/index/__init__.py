"""Collections of embedded items, searchable by text, image or both."""
from .collection import Collection, Hit, build_collection

__all__ = ["Collection", "Hit", "build_collection"]
