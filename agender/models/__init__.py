"""Model files: the manifest, the search path, verification and download.

See :mod:`agender.models.store` (find files) and :mod:`agender.models.fetch` (download them).
"""
from agender.models.store import ModelEntry, ModelStore, load_manifest, sha256_file

__all__ = ["ModelEntry", "ModelStore", "load_manifest", "sha256_file"]
