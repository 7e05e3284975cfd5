"""Turn what the user typed (files, folders, globs, URLs, ``cam:N``) into analysis jobs.

One job per video, stream or camera (each gets ``OUTDIR/<name>.csv``), and one job for all
still images together (``OUTDIR/images.csv``). A spec that matches nothing becomes a job that
carries its error, so the batch reports it in order and carries on.
"""
from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from agender.io.sources import IMAGE_EXTS, VIDEO_EXTS, is_url, parse_camera

IMAGES_NAME = "images"


@dataclass
class InputItem:
    """One analysis job. ``kind``: video | stream | camera | images | error."""

    spec: str  # what the user gave (or the file a folder/glob expanded to)
    kind: str
    name: str = ""  # output base name: OUTDIR/<name>.csv
    paths: list[Path] = field(default_factory=list)  # the images of an ``images`` job
    sources: list[str] = field(default_factory=list)  # the specs an ``images`` job gathered from
    error: str = ""  # set for kind == "error"

    @property
    def is_live(self) -> bool:
        """Cameras and live streams: no resume, Ctrl-C ends the input normally."""
        return self.kind == "camera" or (self.kind == "stream" and not self.spec.lower().startswith(("http://", "https://")))


def _safe_name(text: str) -> str:
    name = re.sub(r"[^\w.\-]+", "_", text).strip("._") or "input"
    return name[:120]


def _url_name(url: str) -> str:
    u = urlparse(url)
    last = Path(u.path).stem if u.path.strip("/") else ""
    return _safe_name(last or u.hostname or "stream")


def _has_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def _media_files(root: Path) -> list[Path]:
    """Images and videos under ``root``, recursively, hidden files skipped, sorted."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS:
            out.append(p)
    return out


def expand_inputs(specs: list[str]) -> list[InputItem]:
    """Jobs for ``specs`` in the order given; all still images merge into one ``images`` job
    placed where the first image appeared."""
    items: list[InputItem] = []
    images: InputItem | None = None
    seen: set[str] = set()

    def add_file(p: Path, spec: str) -> None:
        nonlocal images
        key = str(p.resolve()) if p.exists() else str(p)
        if key in seen:
            return
        seen.add(key)
        if p.suffix.lower() in IMAGE_EXTS:
            if images is None:
                images = InputItem(spec=spec, kind="images", name=IMAGES_NAME)
                items.append(images)
            images.paths.append(p)
            if user_spec not in images.sources:
                images.sources.append(user_spec)
        else:  # anything else is tried as a video; opening it says what is wrong
            items.append(InputItem(spec=str(p), kind="video", name=_safe_name(p.stem)))

    for spec in specs:
        spec = user_spec = str(spec)
        cam = parse_camera(spec)
        if cam is not None and not Path(spec).exists():
            items.append(InputItem(spec=f"cam:{cam}", kind="camera", name=f"cam{cam}"))
        elif is_url(spec):
            items.append(InputItem(spec=spec, kind="stream", name=_url_name(spec)))
        elif Path(spec).is_dir():
            files = _media_files(Path(spec))
            if not files:
                items.append(InputItem(spec=spec, kind="error", error=f"{spec}: no images or videos in this folder"))
            for p in files:
                add_file(p, str(p))
        elif Path(spec).exists() or Path(spec).is_symlink():
            add_file(Path(spec), spec)
        elif _has_glob(spec):
            hits = [Path(h) for h in sorted(glob.glob(spec, recursive=True))]
            files = [h for h in hits if h.is_file()]
            for d in (h for h in hits if h.is_dir()):
                files += _media_files(d)
            if not files:
                items.append(InputItem(spec=spec, kind="error", error=f"{spec}: no files match"))
            for p in files:
                add_file(p, str(p))
        else:
            items.append(InputItem(spec=spec, kind="error", error=f"{spec}: no such file or directory"))
    _dedupe_names(items)
    return items


def _dedupe_names(items: list[InputItem]) -> None:
    """Two videos called ``clip.mp4`` in different folders must not share ``clip.csv``:
    the later ones get their parent folder's name in front (and a counter if still taken)."""
    taken: set[str] = {IMAGES_NAME} if any(i.kind == "images" for i in items) else set()
    for it in items:
        if it.kind in ("error", "images"):
            continue
        name = it.name
        if name in taken and it.kind == "video":
            name = _safe_name(f"{Path(it.spec).parent.name}_{it.name}")
        base, k = name, 2
        while name in taken:
            name = f"{base}-{k}"
            k += 1
        it.name = name
        taken.add(name)
