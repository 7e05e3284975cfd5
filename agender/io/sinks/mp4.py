"""``--export-mp4`` (and the GUI's Record): an annotated copy of the video.

Frames are written as they come (a live loop can use it), annotated by
:class:`agender.annotate.Annotator`, and encoded with PyAV: H.264 (``libx264``, else
``libopenh264``) where the FFmpeg build has it, else MPEG-4 Part 2 (:data:`CODECS`).

Same frame count and fps as the source: frame ``index`` goes to presentation slot
``index − first index``. When ``source`` (the input file) is given, frames the analysis did not
see (``--fps``, ``--max-frames`` stops, the tail after the last analysed frame) are decoded from
it and drawn with the last faces; without a source a gap repeats the last image. The source's
first audio stream is copied packet for packet (no re-encoding) when the MP4 container takes
its codec; otherwise the video is written without audio and :attr:`Mp4Sink.audio_note` says why.

Atomic: everything goes to ``.<name>.partial.mp4`` beside the target and :meth:`close` renames
it. Not resumable (an MP4 cannot be appended to), so the runner redoes an interrupted input.
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from agender.annotate import Annotator
from agender.io.sinks.base import Sink

if TYPE_CHECKING:
    from agender.faces import Faces
    from agender.io.sources import Frame

log = logging.getLogger(__name__)

CODECS = ("libx264", "libopenh264", "mpeg4")
_OPTIONS = {"libx264": {"crf": "20", "preset": "veryfast"}, "libopenh264": {"b": "4M"}, "mpeg4": {"qscale": "3"}}


def available_codecs() -> list[str]:
    """The encoders of :data:`CODECS` this PyAV/FFmpeg build has, best first."""
    import av

    out = []
    for name in CODECS:
        try:
            av.codec.Codec(name, "w")
            out.append(name)
        except Exception:  # noqa: BLE001 - unknown encoder
            continue
    return out


def fps_fraction(fps: float) -> Fraction:
    """23.976… → 24000/1001, 29.97… → 30000/1001, 25.0 → 25."""
    return Fraction(float(fps)).limit_denominator(1001)


class Mp4Sink(Sink):
    """Annotated video writer. ``fps``: the source's frame rate; ``source``: the input video
    (gap filling and audio), or None (live capture); ``codec``: ``"auto"`` or one of
    :data:`CODECS`; ``annotate=False`` writes the frames as they are."""

    resumable = False

    def __init__(self, path: str | Path, *, fps: float, source: str | Path | None = None, codec: str = "auto",
                 annotator: Annotator | None = None, annotate: bool = True, audio: bool = True,
                 end_index: int | None = None, fill_to_end: bool = True):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.stem}.partial.mp4")
        self.rate = fps_fraction(fps if fps and fps > 0 else 25.0)
        self.source = None if source is None else str(source)
        self.codec_pref = codec
        self.annotator = annotator or Annotator()
        self.annotate = annotate
        self.want_audio = audio
        self.end_index = end_index  # fill up to this frame (exclusive) at close; None: see fill_to_end
        self.fill_to_end = fill_to_end  # with a source and no end_index: fill to the source's last frame
        self._current: np.ndarray | None = None  # the source frame the gap decoder stands on
        self.codec = ""
        self.frames_written = 0
        self.audio_note = ""
        self._out = None
        self._vs = None
        self._first: int | None = None
        self._next: int | None = None  # index of the next slot to fill
        self._last_image: np.ndarray | None = None
        self._last_faces = None
        self._decoder: Iterator[np.ndarray] | None = None
        self._decoded = 0  # source frames consumed by the gap decoder
        self._audio = None  # (input container, in stream, out stream, packet iterator)
        self._pending_audio = None

    # -- the Sink protocol --------------------------------------------------------------------
    def write(self, frame: "Frame", faces: "Faces") -> None:
        idx = int(frame.index)
        if self._out is None:
            self._open(frame.image, idx)
        if idx < self._next:  # a repeated or out-of-order frame: the slot is taken
            return
        self._fill_until(idx)
        self._encode(frame.image, faces)
        self._last_image, self._last_faces = frame.image, faces
        self._skip_source_frame()

    def close(self) -> None:
        if self._out is None:
            raise ValueError(f"{self.path}: no frame was written")
        if self.end_index is not None:
            self._fill_until(self.end_index)
        elif self.fill_to_end and self.source is not None:
            while self._source_frame_at(self._next) is not None:  # the tail after the last analysed frame
                self._encode(self._current, self._last_faces)
        for pkt in self._vs.encode():
            self._out.mux(pkt)
        self._mux_audio(until_s=(self._next - self._first) / self.rate)
        self._close_containers()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        self._close_containers()
        self.partial.unlink(missing_ok=True)

    suspend = abort

    # -- encoding -----------------------------------------------------------------------------
    def _open(self, image: np.ndarray, first_index: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        h, w = image.shape[:2]
        self._size = (w + w % 2, h + h % 2)  # yuv420p needs even sizes
        codecs = available_codecs() if self.codec_pref == "auto" else [self.codec_pref]
        last_err: Exception | None = None
        for name in codecs:
            out = av.open(str(self.partial), mode="w", format="mp4")
            try:
                vs = out.add_stream(name, rate=self.rate)
                vs.width, vs.height = self._size
                vs.pix_fmt = "yuv420p"
                vs.time_base = 1 / self.rate
                vs.options = dict(_OPTIONS.get(name, {}))
                vs.codec_context.open()  # fail here, not at the first frame, if the encoder cannot run
            except Exception as exc:  # noqa: BLE001 - try the next encoder
                last_err = exc
                out.close()
                continue
            self._out, self._vs, self.codec = out, vs, name
            break
        if self._out is None:
            self.partial.unlink(missing_ok=True)
            raise RuntimeError(f"{self.path}: no usable video encoder ({last_err})")
        self._first = self._next = first_index
        if self.want_audio and self.source is not None:
            self._open_audio(first_index)

    def _encode(self, image: np.ndarray, faces) -> None:
        import av

        img = self.annotator.draw(image.copy(), faces) if (self.annotate and faces is not None) else image
        if img.shape[1] != self._size[0] or img.shape[0] != self._size[1]:
            img = _pad_to(img, self._size)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
        vf.pts = self._next - self._first
        vf.time_base = 1 / self.rate
        for pkt in self._vs.encode(vf):
            self._out.mux(pkt)
        self._next += 1
        self.frames_written += 1
        self._mux_audio(until_s=(self._next - self._first) / self.rate + 0.5)

    def _fill_until(self, idx: int) -> None:
        """Fill slots ``_next .. idx-1`` with source frames (or the last image) + the last faces."""
        while self._next < idx:
            img = self._source_frame_at(self._next)
            if img is None:
                img = self._last_image
            if img is None:
                return
            self._encode(img, self._last_faces)

    # -- the source decoder (gap filling) -------------------------------------------------------
    def _source_frames(self) -> Iterator[np.ndarray]:
        if self.source is None:
            return iter(())
        if self._decoder is None:
            self._decoder = _decode_bgr(self.source)
            self._decoded = 0
        return self._decoder

    def _source_frame_at(self, idx: int) -> np.ndarray | None:
        """Source frame ``idx`` (decoding forward; None past the end or without a source)."""
        if self.source is None:
            return None
        it = self._source_frames()
        while self._decoded <= idx:
            img = next(it, None)
            if img is None:
                return None
            self._decoded += 1
            self._current = img
        return self._current if self._decoded == idx + 1 else None

    def _skip_source_frame(self) -> None:
        """Keep the gap decoder in step with frames that came from the pipeline. It starts
        lazily, so a run that sends every frame never decodes the source twice."""
        if self._decoder is not None:
            self._source_frame_at(self._next - 1)

    # -- audio --------------------------------------------------------------------------------
    def _open_audio(self, first_index: int) -> None:
        import av

        try:
            inp = av.open(self.source)
        except Exception as exc:  # noqa: BLE001 - audio is best effort
            self.audio_note = f"audio not copied: {exc}"
            return
        if not inp.streams.audio:
            inp.close()
            self.audio_note = "source has no audio"
            return
        ins = inp.streams.audio[0]
        try:
            outs = self._out.add_stream_from_template(ins)
        except Exception as exc:  # noqa: BLE001
            inp.close()
            self.audio_note = f"audio not copied: {ins.codec_context.name} cannot go into MP4 ({exc})"
            log.warning("%s: %s", self.path, self.audio_note)
            return
        offset_s = first_index / self.rate
        self._audio = (inp, ins, outs, inp.demux(ins), float(offset_s))

    def _mux_audio(self, until_s: float) -> None:
        """Copy audio packets up to ``until_s`` seconds of output time (keeps them interleaved)."""
        if self._audio is None:
            return
        inp, ins, outs, packets, offset_s = self._audio
        tb = ins.time_base
        while True:
            pkt = self._pending_audio or next(packets, None)
            self._pending_audio = None
            if pkt is None:
                return
            if pkt.pts is None or pkt.size == 0:
                continue
            t = float(pkt.pts * tb) - offset_s
            if t < 0:
                continue
            if t >= until_s:
                self._pending_audio = pkt
                return
            shift = int(round(offset_s / tb))
            pkt.pts -= shift
            if pkt.dts is not None:
                pkt.dts -= shift
            pkt.stream = outs
            try:
                self._out.mux(pkt)
            except Exception as exc:  # noqa: BLE001 - drop audio, keep the video
                self.audio_note = f"audio dropped: {exc}"
                log.warning("%s: %s", self.path, self.audio_note)
                self._audio = None
                return

    def _close_containers(self) -> None:
        if self._audio is not None:
            self._audio[0].close()
            self._audio = None
        if self._out is not None:
            self._out.close()
            self._out = None


def _decode_bgr(path: str) -> Iterator[np.ndarray]:
    import av

    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for fr in c.decode(stream):
            yield fr.to_ndarray(format="bgr24")


def _pad_to(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    out = np.zeros((h, w, 3), np.uint8)
    hh, ww = min(h, img.shape[0]), min(w, img.shape[1])
    out[:hh, :ww] = img[:hh, :ww]
    return out
