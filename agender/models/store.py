"""Find model files through one search path, checked against the committed manifest.

Search order (first hit wins):
1. directories passed explicitly (``--models DIR`` / ``Analyzer(models=...)``),
2. ``AGENDER_MODELS`` (an ``os.pathsep``-separated list),
3. the user cache (``platformdirs.user_cache_dir("agender")/models``), where ``fetch`` writes,
4. in a source checkout only: the model-card folders (``face_net/``, ``age_gender_ssrnet/``,
   ``age_gender_net/``); an installed wheel has none.

A model's ``file`` is a relative path (``yunet/face_detection_yunet.onnx``) looked up in each
directory; in the model-card folders the bare file name is accepted too, so a user can drop a
downloaded file next to the model card.

The manifest itself (names, files, URLs, sha256) is package data, so an installed wheel has it:
``agender/models/manifests/<folder>.toml``, one per model-card folder.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI (a dependency there, see pyproject)
    import tomli as tomllib

from agender.errors import ModelError

REPO_ROOT = Path(__file__).resolve().parents[2]
# One manifest per model-card folder; they ship inside the package (see pyproject package-data).
MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"
MODEL_FOLDERS = ("face_net", "age_gender_ssrnet", "age_gender_net")


@dataclass(frozen=True)
class ModelEntry:
    """One file of the manifest."""

    name: str  # the CLI name: `--detector`/`--estimator` and `agender models fetch NAME` (several files may share one)
    file: str  # relative path inside a models directory
    url: str
    sha256: str  # "" = upstream publishes none
    license: str = ""
    input: str = ""
    folder: str = ""  # model-card folder whose manifest lists it (manifests/<folder>.toml)
    size: int = 0
    aliases: tuple[str, ...] = ()  # older names still accepted (e.g. "opencv-dnn" for "dnn")

    def matches(self, name: str) -> bool:
        """``name`` is this entry's name, an alias, their family (``ssrnet`` for ``ssrnet:wiki``)
        or its file."""
        name = name.strip().lower()
        names = (self.name, *self.aliases)
        return name in names or name in (n.split(":")[0] for n in names) or name == self.file

    @property
    def basename(self) -> str:
        return Path(self.file).name


def user_models_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("agender")) / "models"


def cache_dir() -> Path:
    """Where derived files (SSR-Net → ONNX conversions) are cached; never in the repo."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("AGENDER_CACHE") or user_cache_dir("agender"))


@lru_cache(maxsize=4)
def _manifest_cached(root: str) -> tuple[ModelEntry, ...]:
    entries: list[ModelEntry] = []
    for folder in MODEL_FOLDERS:
        path = Path(root) / f"{folder}.toml"
        if not path.is_file():
            raise ModelError(f"model manifest {path} is missing: a broken agender install (reinstall it)")
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        for m in data.get("model", []):
            entries.append(
                ModelEntry(
                    name=m["name"], file=m["file"], url=m.get("url", ""), sha256=m.get("sha256", ""),
                    license=m.get("license", ""), input=m.get("input", ""), folder=folder,
                    size=int(m.get("size", 0)), aliases=tuple(m.get("aliases", ())),
                )
            )
    return tuple(entries)


def load_manifest(root: Path = MANIFEST_DIR) -> list[ModelEntry]:
    """Every file of the manifest (``root``: the folder of ``<folder>.toml`` files)."""
    return list(_manifest_cached(str(root)))


def card_folders() -> list[Path]:
    """The model-card folders of a source checkout (an installed wheel has none)."""
    return [REPO_ROOT / f for f in MODEL_FOLDERS if (REPO_ROOT / f).is_dir()]


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def hash_file(path: Path | str) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path | str) -> str:
    """sha256 of a file; memoised by (path, size, mtime) so repeated resolves stay cheap."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = hash_file(p)
    return _HASH_CACHE[key]


class ModelStore:
    """Resolves manifest files to paths on disk, verifying their sha256."""

    def __init__(self, dirs: Sequence[str | Path] | str | Path | None = None, *, verify: bool = True):
        if isinstance(dirs, (str, Path)):
            dirs = [dirs]
        self.explicit = [Path(d).expanduser() for d in (dirs or [])]
        self.verify = verify
        self.manifest = load_manifest()
        self.resolved: dict[str, Path] = {}  # what this store handed out (sidecars list them with sha256)

    def search_path_labeled(self) -> list[tuple[Path, str]]:
        """(directory, where it comes from) in search order."""
        env = [Path(p).expanduser() for p in os.environ.get("AGENDER_MODELS", "").split(os.pathsep) if p]
        return [*((d, "--models") for d in self.explicit), *((d, "AGENDER_MODELS") for d in env),
                (user_models_dir(), "user models dir, fetch default"),
                *((d, "repository") for d in card_folders())]

    def search_path(self) -> list[Path]:
        return [d for d, _ in self.search_path_labeled()]

    def entries(self, name: str | None = None) -> list[ModelEntry]:
        """All files, or those of one model: its name (``ssrnet:morph``), an alias
        (``ssrnet:morph2``), a family (``ssrnet``) or a manifest file path."""
        if name is None:
            return list(self.manifest)
        return [e for e in self.manifest if e.matches(name)]

    def fetchable_names(self) -> set[str]:
        """Model names `agender models fetch` knows (without aliases)."""
        return {e.name for e in self.manifest} | {e.name.split(":")[0] for e in self.manifest}

    def entry_for_file(self, file: str) -> ModelEntry | None:
        for e in self.manifest:
            if e.file == file or e.basename == file:
                return e
        return None

    def find(self, file: str) -> Path | None:
        """First existing candidate for a manifest-relative path, unverified."""
        for d in self.search_path():
            for cand in (d / file, d / Path(file).name) if d.parent == REPO_ROOT and d.name in MODEL_FOLDERS else (d / file,):
                if cand.is_file():
                    return cand
        return None

    def resolve(self, file: str) -> Path:
        """Path of ``file`` on the search path, checked against its manifest sha256.

        Raises :class:`ModelError` with one line naming the file, the problem and the fix.
        """
        entry = self.entry_for_file(file)
        path = self.find(file)
        fetch_hint = f"run `agender models fetch {entry.name.split(':')[0]}`" if entry else "pass --models DIR"
        if path is None:
            where = os.pathsep.join(str(d) for d in self.search_path())
            raise ModelError(f"model file {file} not found (searched {where}); {fetch_hint}", missing=True)
        if path.stat().st_size == 0:
            raise ModelError(f"model file {path} is empty; {fetch_hint}")
        if self.verify and entry is not None and entry.sha256:
            got = sha256_file(path)
            if got != entry.sha256:
                raise ModelError(
                    f"model file {path} is corrupt: sha256 {got[:12]}… != expected {entry.sha256[:12]}…; {fetch_hint}"
                )
        self.resolved[file] = path
        return path

    def sha256(self, path: Path) -> str:
        return sha256_file(path)

