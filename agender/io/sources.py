"""Frame sources: video files, image files, cameras, and http(s)/rtsp streams.

Every source yields :class:`Frame` ``(index, time_s, image)``. :class:`ThreadedReader` runs a
source ahead of the consumer in its own thread through a bounded queue (offline: nothing is
dropped; live: the newest frame wins so latency stays low). The GUI's worker and the CLI's
loop consume the same iterator.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import cv2
import numpy as np

from agender.errors import SourceError, one_line
from agender.io.mailbox import Mailbox

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif"}


@dataclass
class Frame:
    index: int  # frame number in the source (0-based), not the count of analysed frames
    time_s: float  # presentation time in seconds
    image: np.ndarray  # BGR uint8
    name: str = ""  # for image sources: the file this frame came from
    small: tuple[np.ndarray, float] | None = None  # the detector's downscaled copy, when made ahead

    def __post_init__(self) -> None:
        """Convert at the source, once: every later stage (downscale, detect, crop, estimators)
        then gets contiguous BGR uint8 and ``to_bgr8`` is a no-op for it (a decoder's frame
        already is, so this costs nothing there)."""
        from agender.imageops import to_bgr8

        self.image = to_bgr8(self.image)


class Source(Protocol):
    name: str
    fps: float
    frame_count: int | None
    is_live: bool

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


def is_url(spec: str) -> bool:
    return spec.split("://", 1)[0].lower() in ("http", "https", "rtsp", "rtmp", "udp", "tcp") and "://" in spec


def parse_camera(spec: str) -> int | None:
    """``cam:0`` / ``camera:1`` / ``0`` → camera index, else None."""
    s = str(spec).strip().lower()
    for prefix in ("cam:", "camera:", "webcam:"):
        if s.startswith(prefix):
            s = s[len(prefix):]
            break
    else:
        if not s.isdigit():
            return None
    try:
        return int(s)
    except ValueError:
        return None


class VideoSource:
    """A video file or network stream decoded with OpenCV's FFmpeg backend.

    ``every`` keeps one frame in N (``--fps``); ``start_s``/``end_s`` bound the range;
    ``skip_to`` resumes at a frame index by grabbing (not decoding) the frames before it, which
    is exact where container seeking is not. ``rate`` keeps the first frame of every 1/rate
    seconds of video time (decided from the frame index alone, so a resumed run picks the same
    frames). ``check_length`` turns an early end of stream (a truncated or corrupt file) into a
    :class:`SourceError` instead of a quiet short read.
    """

    is_live = False

    def __init__(self, spec: str, *, start_s: float = 0.0, end_s: float | None = None, every: int = 1,
                 skip_to: int = 0, max_frames: int | None = None, open_timeout_s: float = 10.0,
                 rate: float | None = None, check_length: bool = False):
        self.spec = str(spec)
        self.name = Path(self.spec).stem if not is_url(self.spec) else self.spec.rstrip("/").rsplit("/", 1)[-1] or "stream"
        self.local_copy: Path | None = None  # an http(s) file that had to be downloaded first
        self._cleanup = None
        if not is_url(self.spec):
            _check_file(self.spec)
            _refuse_text_art(self.spec)
        elif self.spec.lower().startswith(("http://", "https://")):
            seekable, length, head = _check_http(self.spec, open_timeout_s)
            if not seekable and mp4_index_at_end(head):
                self.local_copy = download_to_temp(self.spec, length, open_timeout_s)
                import shutil
                import weakref

                # removed on close(), or when this source is garbage-collected, or at exit
                self._cleanup = weakref.finalize(self, shutil.rmtree, self.local_copy.parent, True)
        self.open_timeout_s = open_timeout_s
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(open_timeout_s * 1000)]
        self.cap = cv2.VideoCapture(str(self.local_copy or self.spec), cv2.CAP_FFMPEG, params)
        if not self.cap.isOpened():
            self.cap.release()
            if self._cleanup is not None:
                self._cleanup()
            raise SourceError(f"{self.spec}: cannot open as video ({_why_not_video(self.spec, open_timeout_s)})")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS)) or 25.0
        if not (0 < self.fps < 1000):
            self.fps = 25.0
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = n if n > 0 else None
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.start_s, self.end_s = max(0.0, start_s or 0.0), end_s
        self.every = max(1, int(every))
        self.skip_to = max(0, int(skip_to))
        self.max_frames = max_frames
        self.rate = float(rate) if rate and rate > 0 else None
        self.check_length = check_length
        self.frames_read = 0
        self._seek_to: int | None = None

    def seek(self, index: int) -> None:
        """Make the next ``iter()`` start at frame ``index`` by a container seek (fast; what the
        GUI's seek slider and loop need). ``skip_to`` stays the exact way for offline resumes."""
        self._seek_to = max(0, int(index))

    def __iter__(self) -> Iterator[Frame]:
        first = max(self.skip_to, int(round(self.start_s * self.fps)))
        idx, emitted = 0, 0
        if self._seek_to is not None:
            first = idx = self._seek_to
            self._seek_to = None
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, first)
        while idx < first:  # grab() skips decoding-to-BGR: exact and cheap
            if not self.cap.grab():
                self._ended_at(idx)
                return
            idx += 1
        while True:
            t = idx / self.fps
            if self.end_s is not None and t >= self.end_s:
                return
            if self.max_frames is not None and emitted >= self.max_frames:
                return
            if (idx - first) % self.every or not self._in_rate(idx):
                if not self.cap.grab():
                    self._ended_at(idx)
                    return
                idx += 1
                continue
            ok, img = self.cap.read()
            if not ok:
                self._ended_at(idx)
                return
            self.frames_read += 1
            yield Frame(idx, t, img, self.name)
            emitted += 1
            idx += 1

    def _in_rate(self, idx: int) -> bool:
        """True for the first frame of each 1/rate-second slot of video time."""
        if self.rate is None or self.rate >= self.fps or idx == 0:
            return True
        r = self.rate / self.fps
        return int(idx * r + 1e-9) != int((idx - 1) * r + 1e-9)

    def _ended_at(self, idx: int) -> None:
        """Raise when the stream ended well before the container's frame count."""
        n = self.frame_count
        if self.check_length and n and idx < n - max(3, n // 50):
            if is_url(self.spec):
                raise SourceError(f"{self.spec}: stream ended at frame {idx} of {n} "
                                  "(connection dropped, or the server cannot serve byte ranges)")
            raise SourceError(f"{self.spec}: video ends at frame {idx} of {n} (truncated or corrupt)")

    def close(self) -> None:
        self.cap.release()
        if self._cleanup is not None:
            self._cleanup()


class CameraSource:
    """A local camera (``cam:N``). Live: only the newest frame matters."""

    is_live = True
    frame_count = None

    def __init__(self, index: int, *, width: int | None = None, height: int | None = None):
        self.index = index
        self.name = f"cam{index}"
        self.cap = cv2.VideoCapture(index)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"cam:{index}: camera does not exist or is busy")
        if width:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS)) or 30.0
        self._t0 = time.monotonic()

    def __iter__(self) -> Iterator[Frame]:
        idx = 0
        while True:
            ok, img = self.cap.read()
            if not ok:
                raise SourceError(f"cam:{self.index}: camera stopped delivering frames (unplugged?)")
            yield Frame(idx, time.monotonic() - self._t0, img, self.name)
            idx += 1

    def close(self) -> None:
        self.cap.release()


class ImageSource:
    """Still images; each is one frame (``index`` = position in the list, ``name`` = file)."""

    is_live = False
    fps = 0.0

    def __init__(self, paths: list[str | Path], *, name: str = "images", max_pixels: int = 100_000_000,
                 skip_to: int = 0, on_error: Callable[[Path, SourceError], None] | None = None):
        self.paths = [Path(p) for p in paths]
        self.name = name
        self.frame_count = len(self.paths)
        self.max_pixels = max_pixels
        self.skip_to = max(0, int(skip_to))  # resume: first list position to read
        self.on_error = on_error  # given: a bad image is reported and skipped, not raised

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.skip_to, len(self.paths)):
            p = self.paths[i]
            try:
                img = read_image(p, self.max_pixels)
            except SourceError as exc:
                if self.on_error is None:
                    raise
                self.on_error(p, exc)
                continue
            yield Frame(i, 0.0, img, str(p))

    def close(self) -> None:
        pass


def read_image(path: str | Path, max_pixels: int = 100_000_000) -> np.ndarray:
    """Read an image as BGR uint8, with one-line errors for each way it can be bad."""
    p = Path(path)
    _check_file(str(p))
    data = np.fromfile(str(p), dtype=np.uint8)
    if data.size == 0:
        raise SourceError(f"{p}: empty file")
    # Refuse decompression bombs before decoding: read the header size first.
    try:
        import warnings

        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's own bomb warning would print to stderr
            with Image.open(p) as im:
                w, h = im.size
        if w * h > max_pixels:
            raise SourceError(f"{p}: image too large ({w}x{h} > {max_pixels} pixels)")
    except SourceError:
        raise
    except Exception as exc:  # PIL can't read it: let OpenCV decide, unless PIL saw a bomb
        if type(exc).__name__ == "DecompressionBombError":
            import re

            m = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{m.group(1)} pixels > {max_pixels}" if m else f"over {max_pixels} pixels"
            raise SourceError(f"{p}: image too large ({size})") from None
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. OpenCV's own pixel limit
        raise SourceError(f"{p}: not a readable image ({one_line(exc, last=True, limit=120, named=False)})") from None
    if img is None:
        raise SourceError(f"{p}: not a readable image")
    from agender.imageops import to_bgr8

    return to_bgr8(img)


def _check_file(spec: str) -> None:
    p = Path(spec)
    if not p.exists():
        raise SourceError(f"{spec}: no such file")
    if p.is_dir():
        raise SourceError(f"{spec}: is a directory")
    if not os.access(p, os.R_OK):
        raise SourceError(f"{spec}: permission denied")
    if p.stat().st_size == 0:
        raise SourceError(f"{spec}: empty file (0 bytes)")


# FFmpeg "decodes" text files as ANSI art (the tty demuxer takes .txt, .nfo, .asc, ...; bin/xbin/
# adf/idf are binary text-mode art): a README.txt would be analysed as a few frames of rendered
# text, with exit status 0. No user means that.
_TEXT_ART_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
_TEXT_ART_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


def _refuse_text_art(spec: str) -> None:
    """Raise for a file FFmpeg would only read as text art. Files with a video extension are
    not probed (FFmpeg picks the text demuxers by extension); a failed probe is left to OpenCV."""
    if Path(spec).suffix.lower() in VIDEO_EXTS:
        return
    try:
        import av

        with av.open(spec) as c:
            fmt = c.format.name
            codecs = {s.codec_context.name for s in c.streams.video}
    except Exception:  # noqa: BLE001 - not our question to answer: OpenCV's open says what is wrong
        return
    if fmt in _TEXT_ART_FORMATS or codecs & _TEXT_ART_CODECS:
        raise SourceError(f"{spec}: not a decodable video/image (a text file; FFmpeg would only draw it as text art)")


_HEAD_BYTES = 1 << 16
DOWNLOAD_LIMIT_ENV = "AGENDER_DOWNLOAD_LIMIT_MB"
DEFAULT_DOWNLOAD_LIMIT_MB = 2048


def _check_http(url: str, timeout_s: float) -> tuple[bool, int | None, bytes]:
    """Ask the server first, so 404 / refused / silent servers get their own one-line reason
    (FFmpeg would only say "cannot open"). Returns (seekable, length, first bytes): seekable
    when the server answers a byte range (206); otherwise the file's first 64 KiB, enough to
    see where an MP4 keeps its index."""
    import socket
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Range": "bytes=0-0", "User-Agent": "agender"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            if resp.status == 206:
                total = (resp.headers.get("Content-Range") or "").rpartition("/")[2]
                return True, int(total) if total.isdigit() else None, b""
            length = resp.headers.get("Content-Length") or ""
            return False, int(length) if length.isdigit() else None, resp.read(_HEAD_BYTES)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (socket.timeout, TimeoutError):
        raise SourceError(f"{url}: no answer within {timeout_s:g} s (timed out)") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise SourceError(f"{url}: no answer within {timeout_s:g} s (timed out)") from None
        if isinstance(reason, ConnectionRefusedError):
            raise SourceError(f"{url}: connection refused") from None
        raise SourceError(f"{url}: cannot connect ({getattr(reason, 'strerror', None) or reason})") from None
    except OSError as exc:
        raise SourceError(f"{url}: cannot connect ({exc.strerror or exc})") from None


def mp4_index_at_end(head: bytes) -> bool:
    """True for an MP4/MOV whose ``moov`` box (the index) comes after its ``mdat`` (the media):
    FFmpeg must seek to the end to read it, which a server without byte ranges cannot do.
    ``head``: the file's first bytes (top-level box headers are read until moov or mdat)."""
    pos = 0
    while pos + 8 <= len(head):
        size = int.from_bytes(head[pos:pos + 4], "big")
        kind = head[pos + 4:pos + 8]
        if pos == 0 and kind != b"ftyp":
            return False  # not ISO-BMFF
        if kind == b"moov":
            return False
        if kind == b"mdat":
            return True
        if size == 1:  # 64-bit size follows
            if pos + 16 > len(head):
                return False
            size = int.from_bytes(head[pos + 8:pos + 16], "big")
        if size < 8:  # 0 = "to the end of the file", or garbage
            return False
        pos += size
    return False


def download_limit_bytes() -> int:
    env = os.environ.get(DOWNLOAD_LIMIT_ENV)
    try:
        mb = float(env) if env else DEFAULT_DOWNLOAD_LIMIT_MB
    except ValueError:
        raise SourceError(f"{DOWNLOAD_LIMIT_ENV}={env!r} is not a number of megabytes") from None
    return int(mb * 1024 * 1024)


def download_to_temp(url: str, length: int | None, timeout_s: float) -> Path:
    """Download ``url`` into a fresh temporary folder; returns the file (the caller removes the
    folder). Bounded by ``$AGENDER_DOWNLOAD_LIMIT_MB`` (default 2048); written to ``.part`` and
    renamed only when complete, so a partial download is never opened as the video."""
    import shutil
    import socket
    import tempfile
    import urllib.error
    import urllib.parse
    import urllib.request

    import http.client

    limit = download_limit_bytes()
    why = "the server cannot serve byte ranges and this MP4 keeps its index (moov atom) at the end"
    fix = f"download it yourself, raise {DOWNLOAD_LIMIT_ENV}, or re-encode it with ffmpeg -movflags +faststart"
    mb = 1024 * 1024
    if length is not None and length > limit:
        raise SourceError(f"{url}: {why}, so it must be downloaded first, and it is {length / mb:.0f} MB, "
                          f"over the {limit / mb:.0f} MB limit; {fix}")
    log.info("%s: %s: downloading it to a temporary file first%s", url, why,
             f" ({length / mb:.1f} MB)" if length is not None else "")
    folder = Path(tempfile.mkdtemp(prefix="agender-http-"))
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "stream.mp4"
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:120] or "stream.mp4"
    final, part = folder / name, folder / (name + ".part")
    got = 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "agender"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp, open(part, "wb") as out:
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
                if got > limit:
                    raise SourceError(f"{url}: {why}, so it must be downloaded first, and it is over the "
                                      f"{limit / mb:.0f} MB limit; {fix}")
                out.write(chunk)
        if length is not None and got < length:
            raise SourceError(f"{url}: download of the whole file (needed: {why}) stopped after {got} of "
                              f"{length} bytes (connection dropped)")
        os.replace(part, final)
    except SourceError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except (socket.timeout, TimeoutError):
        shutil.rmtree(folder, ignore_errors=True)
        raise SourceError(f"{url}: download (needed: {why}) timed out after {timeout_s:g} s without data") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise SourceError(f"{url}: download (needed: {why}) failed ({reason})") from None
    except BaseException:  # Ctrl-C mid-download: leave nothing behind
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return final


def _why_not_video(spec: str, timeout_s: float = 5.0) -> str:
    """A best guess at why FFmpeg refused ``spec``, via PyAV's probe (clearer errors)."""
    try:
        import av

        with av.open(spec, timeout=timeout_s) as c:
            if not c.streams.video:
                return "no video stream"
            return "unsupported codec"
    except Exception as exc:  # noqa: BLE001 - turning any probe failure into words
        msg = getattr(exc, "strerror", None) or str(exc).split(":")[-1].strip() or type(exc).__name__
        return f"not a decodable video: {msg}" if not is_url(spec) else msg


class SyntheticCamera:
    """A test camera: ``synthetic:WxH@FPS[:FILE]`` delivers frames at a fixed rate, like a webcam.

    Frames come from ``FILE`` (looped, resized to WxH; decoded as they are due, which costs
    about what a webcam's MJPEG decode does) or, without a file, a moving test pattern. It is
    live: frames are due on a fixed clock whether or not anyone keeps up (one that is read too
    late is skipped, as a camera driver overwrites its buffer; :attr:`missed` counts them), so
    the live monitor can be measured at 30 fps on a machine without a camera.
    """

    is_live = True
    frame_count = None

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0, content: str | None = None):
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        if not (self.width > 0 and self.height > 0 and 0 < self.fps <= 1000):
            raise SourceError(f"synthetic:{width}x{height}@{fps}: needs a positive size and 0 < fps <= 1000")
        self.content = content
        self.name = f"synthetic{self.width}x{self.height}@{self.fps:g}"
        self.missed = 0
        self._video = VideoSource(content) if content else None

    def _images(self) -> Iterator[np.ndarray]:
        if self._video is None:
            base = np.zeros((self.height, self.width, 3), np.uint8)
            base[..., 0] = np.linspace(0, 255, self.width, dtype=np.uint8)[None, :]
            k = 0
            while True:
                img = base.copy()
                x = (8 * k) % max(1, self.width - 64)
                img[self.height // 3: self.height // 3 + 64, x: x + 64] = 255
                k += 1
                yield img
        while True:
            n = 0
            for fr in self._video:
                n += 1
                img = fr.image
                if img.shape[1] != self.width or img.shape[0] != self.height:
                    img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_AREA)
                yield img
            if n == 0:
                raise SourceError(f"{self.content}: no frames to play as a synthetic camera")
            self._video.seek(0)

    def __iter__(self) -> Iterator[Frame]:
        images = self._images()
        t0 = time.monotonic()
        tick = 0
        while True:
            due = t0 + tick / self.fps
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                late = int((now - due) * self.fps)  # whole intervals missed: a camera would have overwritten them
                if late:
                    self.missed += late
                    tick += late
            img = next(images)
            yield Frame(tick, tick / self.fps, img, self.name)
            tick += 1

    def close(self) -> None:
        if self._video is not None:
            self._video.close()


def parse_synthetic(spec: str) -> tuple[int, int, float, str | None] | None:
    """``synthetic:1280x720@30[:FILE]`` → (1280, 720, 30.0, FILE or None); ``None`` if not one."""
    import re

    m = re.fullmatch(r"synthetic:(\d+)x(\d+)@([0-9.]+)(?::(.+))?", str(spec))
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), float(m.group(3)), m.group(4)


def open_source(spec: str | int, **kwargs) -> Source:
    """``cam:0`` → camera, URL → stream, image file → one-image source,
    ``synthetic:WxH@FPS[:FILE]`` → a fixed-rate test camera, else a video file."""
    s = str(spec)
    syn = parse_synthetic(s)
    if syn is not None and not Path(s).exists():
        return SyntheticCamera(*syn)
    cam = parse_camera(s)
    if cam is not None and not Path(s).exists():
        return CameraSource(cam)
    if not is_url(s) and Path(s).suffix.lower() in IMAGE_EXTS:
        return ImageSource([s], name=Path(s).stem)
    return VideoSource(s, **kwargs)


def read_frames(path: str | Path, start: int = 0, count: int | None = None) -> list[Frame]:
    """``count`` frames of a video from frame ``start``, decoded into memory (tests, benchmarks)."""
    src = VideoSource(str(path), max_frames=count)
    if start:
        src.seek(start)
    try:
        return list(src)
    finally:
        src.close()


class ThreadedReader:
    """Runs ``source`` in a daemon thread ahead of the consumer.

    ``latest_only=False`` (files): a bounded queue, back-pressure, nothing dropped.
    ``latest_only=True`` (cameras/GUI): a one-slot :class:`~agender.io.mailbox.Mailbox`; a new
    frame replaces an unread one and :attr:`dropped` counts the replaced frames. An exception in the reader is re-raised in
    the consumer.
    """

    _END = object()

    def __init__(self, source: Source, *, maxsize: int = 8, latest_only: bool = False):
        self.source = source
        self.latest_only = latest_only
        self._box = Mailbox(1) if latest_only else None
        self.q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))  # files: back-pressure, nothing dropped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader-{source.name}", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Frames a live source replaced before the consumer took them."""
        return 0 if self._box is None else self._box.dropped

    def _put(self, item) -> None:
        if self._box is not None:
            self._box.put(item)
            return
        while not self._stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _get(self):
        """The next item, or None after 0.1 s."""
        if self._box is not None:
            return self._box.get(timeout=0.1)
        try:
            return self.q.get(timeout=0.1)
        except queue.Empty:
            return None

    def _run(self) -> None:
        try:
            for fr in self.source:
                if self._stop.is_set():
                    break
                self._put(fr)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)
            return
        if self.latest_only:
            # the end marker must not replace the last frame: wait for the consumer to take it
            while not self._stop.is_set() and len(self._box):
                time.sleep(0.005)
        self._put(self._END)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._get()
            if item is None:
                if self._stop.is_set():
                    return
                continue
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.source.close()

    def __enter__(self) -> "ThreadedReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
