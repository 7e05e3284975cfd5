"""Static int8 (QDQ) quantization of Cydral's age net, built on the user's machine, checked
there against the float net, and cached.

Why static and not dynamic: ``quantize_dynamic`` measures each activation's range over the
whole batch tensor at run time, so a face's age depends on which other faces share its batch
(measured: up to 0.08 in a class probability between batch 8 and one-by-one). That breaks
"same face, same answer", on which ``agender analyze`` resumes rely. Static ranges are fixed
in the model: the result of a face does not depend on its batch (tested bit-exact).

Why ``reduce_range`` (7-bit weights): onnxruntime's x86 u8s8 kernels for CPUs *without*
AVX-512 VNNI / AVX-VNNI (AVX2-only machines) multiply with ``VPMADDUBSW``, which adds two
u8×s8 products into a saturating int16. With full 8-bit weights those sums overflow: under
an emulated Haswell (``qemu-x86_64 -cpu Haswell``, no VNNI) the /1 recipe aged 51 faces-dev
faces 7.3 years away from the float net on average (max 43), while on a VNNI CPU it was 0.5.
With 7-bit weights a pair sum stays within int16 on every kernel: 0.68 mean, 3.2 max, the
same on both CPUs, at the same speed (0.24 vs 0.27 ms a face on a VNNI CPU). U8U8 also avoids
the overflow but runs 2x slower.

Why a check on every machine anyway: the kernels onnxruntime picks depend on the CPU and on
its version, so a model that is right where it was built proves nothing elsewhere. Before a
cached model is used for the first time on a CPU (key: :func:`cpu_key`), it is run beside the
float net on :data:`CHECK_SIZE` seeded synthetic chips (not the calibration ones), and used
only when the ages agree within :data:`AGREEMENT`; otherwise the estimator logs one line and
runs the float net. The verdict is cached next to the model, per CPU key. The model's own
bytes are checked against the sha256 written when it was built, on every load: a damaged
file is rebuilt, never trusted for its metadata.

Why the calibration images are synthetic: a static model needs activation ranges, and there
are no face images a user is guaranteed to have (none of agender's dependencies ships any),
and we ship no data derived from face sets. So the ranges are calibrated on 128 images drawn
from a fixed seed: a third uniform noise, a third smooth multi-scale noise, a third
"dead leaves" (occluding discs with power-law radii: the classic data-free model of natural
image statistics, sharp edges at every scale). The mix was chosen over each kind alone on
fp32 agreement on 338 news-video face chips (not the evaluation set).

Graph changes before quantizing:

* dlib's ``affine`` layers (a per-channel Mul then Add after each Conv) are folded into the
  Conv weights and bias (exact in real arithmetic). Left alone, the quantizer gives their
  ``[1, C, 1, 1]`` constants per-axis scales that onnxruntime rejects at run time.
* the final Gemm and Softmax stay float: quantizing the probabilities to 8 bits rounds every
  class to multiples of 1/255 and the expected age with it.

Files under ``cache_dir()/quantized/`` (all written atomically):
``<sha256 of age-v1.onnx>-cydral-int8-2.onnx`` (metadata: source sha256, quantizer version),
``… .sha256`` (the model's own digest) and ``… .check-<cpu key>.json`` (one verdict per CPU).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import platform
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from agender.errors import ModelError
from agender.io.sinks.base import atomic_write_bytes

log = logging.getLogger(__name__)

QUANTIZER_VERSION = "cydral-int8/2"  # /2: reduce_range (7-bit weights), see the module doc
CALIBRATION_SEED = 20240611
CALIBRATION_SIZE = 128
CHECK_SEED = 20261202  # the agreement check's chips: same generator, another seed
CHECK_SIZE = 48


@dataclass(frozen=True)
class Agreement:
    """How far the int8 ages may stray from the float net's on the check chips (years).

    Measured with the /2 recipe: mean 1.43, p90 3.40 on a VNNI CPU and under emulated
    Haswell alike; the /1 recipe on AVX2-only x86: mean 5.6, p90 15.7 (and 7.3 on faces).
    Synthetic chips are harder than faces (faces: 0.68 mean), hence the looser numbers.
    """

    mean: float = 2.5
    p90: float = 6.0
    # P(male), for nets that have it (agender's own): measured 0.013 mean, 0.031 p90 on the
    # check chips (both CPUs' kernels see the same 7-bit weights); a flipped gender needs ~0.5
    p_male_mean: float = 0.05
    p_male_p90: float = 0.10

    def holds(self, stats: dict) -> bool:
        """Every bound whose figure ``stats`` has (a gender-only net has no ages)."""
        ok = "mean" in stats or "p_male_mean" in stats
        if "mean" in stats:
            ok = ok and stats["mean"] <= self.mean and stats["p90"] <= self.p90
        if "p_male_mean" in stats:
            ok = ok and stats["p_male_mean"] <= self.p_male_mean and stats["p_male_p90"] <= self.p_male_p90
        return bool(ok)


AGREEMENT = Agreement()


class Int8Rejected(ModelError):
    """The int8 model does not agree with the float net on this machine."""


# -- graph surgery -------------------------------------------------------------------------------
def fold_fp16_initializers(model) -> None:
    """Replace ``Cast(float16 initializer) -> float`` with a float32 initializer, in place.

    agender's own net stores its weights as float16 (half the file) and casts them at load;
    the quantizer and :func:`fold_affine` need the weights as plain float initializers.
    """
    from onnx import TensorProto, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    drop = []
    for n in g.node:
        to = next((a.i for a in n.attribute if a.name == "to"), None)
        if n.op_type == "Cast" and to == TensorProto.FLOAT and n.input[0] in inits:
            arr = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            g.initializer.append(numpy_helper.from_array(arr, n.output[0]))
            drop.append(n)
    for n in drop:
        g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)


def fold_affine(model) -> None:
    """Fold every Conv → Mul(const) → Add(const) chain into the Conv, in place (float64 math)."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop: set[int] = set()
    rename: dict[str, str] = {}
    for conv in [n for n in g.node if n.op_type == "Conv" and len(n.input) == 3]:
        nxt = consumers.get(conv.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Mul" or nxt[0].input[1] not in inits:
            continue
        mul = nxt[0]
        nxt = consumers.get(mul.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Add" or nxt[0].input[1] not in inits:
            continue
        add = nxt[0]
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
        s = numpy_helper.to_array(inits[mul.input[1]]).astype(np.float64).reshape(-1)
        o = numpy_helper.to_array(inits[add.input[1]]).astype(np.float64).reshape(-1)
        if s.size != w.shape[0] or o.size != w.shape[0]:
            continue
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array((w * s[:, None, None, None]).astype(np.float32), conv.input[1]))
        inits[conv.input[2]].CopyFrom(numpy_helper.from_array((b * s + o).astype(np.float32), conv.input[2]))
        rename[add.output[0]] = conv.output[0]
        drop |= {id(mul), id(add)}
    keep = [n for n in g.node if id(n) not in drop]
    for n in keep:
        for k, name in enumerate(n.input):
            if name in rename:
                n.input[k] = rename[name]
    for out in g.output:
        if out.name in rename:  # never the case for age-v1, but keep the graph valid
            raise ModelError("age net ends in an affine layer: cannot fold it")
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)


# -- data-free calibration -----------------------------------------------------------------------
def calibration_chips(n: int = CALIBRATION_SIZE, size: int = 64, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """``n`` synthetic uint8 RGB chips (no face data): noise, smooth noise, dead leaves."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        kind = i % 3
        if kind == 0:  # uniform noise: every filter sees its full response
            out[i] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        elif kind == 1:  # smooth multi-scale noise, random brightness and contrast
            img = np.zeros((size, size, 3), np.float32)
            for k, amp in ((2, 1.0), (4, 0.6), (8, 0.35), (16, 0.2), (size, 0.08)):
                grid = rng.standard_normal((k, k, 3)).astype(np.float32)
                img += amp * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
            img = (img - img.mean()) / (img.std() + 1e-6)
            out[i] = np.clip(rng.uniform(40, 210) + rng.uniform(20, 70) * img, 0, 255).astype(np.uint8)
        else:  # dead leaves: occluding discs, radius density ~ r^-3
            img = np.empty((size, size, 3), np.uint8)
            img[:] = rng.integers(0, 256, 3).astype(np.uint8)
            for _ in range(int(rng.integers(60, 200))):
                r = int(min(size, 1.5 / (rng.random() ** 0.5 + 1e-3)))
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                centre = (int(rng.integers(-8, size + 8)), int(rng.integers(-8, size + 8)))
                cv2.circle(img, centre, max(1, r), colour, -1, cv2.LINE_AA)
            sigma = rng.uniform(0, 1.2)
            out[i] = cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0.3 else img
    return out


# -- build and cache -------------------------------------------------------------------------------
def quantize_age_net(
    source: Path, calibration: np.ndarray, source_sha256: str, *, reduce_range: bool = True,
    model=None, keep_float: tuple[str, ...] = ("Gemm", "Softmax", "Sigmoid"),
) -> bytes:
    """Serialized int8 QDQ model of ``source`` calibrated on ``calibration`` (the net's float input).

    ``reduce_range=False`` is the /1 recipe, kept only so tests can show what it does on
    AVX2-only CPUs; models built with it are never cached under this quantizer's name.
    ``model``: the float ``onnx.ModelProto`` to quantize instead of loading ``source`` (a net
    stored with int8 weights, folded to float first); ``keep_float``: op types left float.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(source)) if model is None else model
    fold_fp16_initializers(model)
    fold_affine(model)
    input_name = model.graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{input_name: calibration[i:i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="agender-q8-") as tmp, _quiet_quantizer():
        folded, pre, out = (Path(tmp) / f for f in ("folded.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, str(folded))
        quant_pre_process(str(folded), str(pre), skip_symbolic_shape=True)
        tail = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in keep_float]
        quantize_static(
            str(pre), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=tail,
            reduce_range=reduce_range,
        )
        q = onnx.load(str(out))
    import onnxruntime

    onnx.helper.set_model_props(q, {
        "agender.quantizer": QUANTIZER_VERSION, "source_sha256": source_sha256, "source_file": source.name,
        "onnxruntime": onnxruntime.__version__,
    })
    return q.SerializeToString()


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime.quantization logs through the root logger (progress, and one "Increased
    scale" line per all-zero weight channel): hide that from the user for the one build."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def int8_cache_path(source_sha256: str) -> Path:
    from agender.models.store import cache_dir

    return cache_dir() / "quantized" / f"{source_sha256}-{QUANTIZER_VERSION.replace('/', '-')}.onnx"


def cache_is_current(path: Path, source_sha256: str) -> bool:
    """True when ``path`` is a complete model written by this quantizer from this source."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception:  # truncated, foreign or damaged: rebuild it
        return False
    props = {p.key: p.value for p in model.metadata_props}
    return props.get("agender.quantizer") == QUANTIZER_VERSION and props.get("source_sha256") == source_sha256


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cpu_signature() -> dict:
    """What decides which int8 kernels onnxruntime runs: ISA, CPU features, its version.

    Features come from numpy's run-time CPUID probe, which sees the CPU the process really
    runs on (an emulated one too), unlike ``/proc/cpuinfo`` under user-mode emulation.
    """
    import onnxruntime

    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as feats
    return {
        "machine": platform.machine(),
        "features": sorted(k for k, v in feats.items() if v),
        "onnxruntime": onnxruntime.__version__,
    }


def cpu_key() -> str:
    """Short stable key of :func:`cpu_signature` (names the per-CPU verdict file)."""
    return _digest(json.dumps(cpu_signature(), sort_keys=True).encode())[:16]


def check_chips(means: np.ndarray, scale: float, rgb: bool = True) -> np.ndarray:
    """The agreement check's float NCHW input: :data:`CHECK_SIZE` seeded synthetic chips."""
    chips = calibration_chips(CHECK_SIZE, seed=CHECK_SEED)
    return _normalise(chips, means, scale, rgb)


def _normalise(chips: np.ndarray, means, scale: float, rgb: bool) -> np.ndarray:
    if not rgb:
        chips = chips[..., ::-1]
    x = (chips.astype(np.float32) - np.asarray(means, np.float32)) * np.float32(scale)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def agreement(int8_path: Path, fp32_path: Path, x: np.ndarray, age_weights: np.ndarray) -> dict:
    """|int8 age - float age| in years over ``x`` (mean, p90, max, n), on this CPU; for a net
    with a second output (agender's P(male)) also |Δp_male| (``p_male_mean``, ``p_male_p90``)."""
    fp, q = run_both(str(fp32_path), int8_path, x, fp32_level="extended")
    w = np.asarray(age_weights, np.float64)
    pairs = [("", np.abs(q[0] @ w - fp[0] @ w))]
    if len(fp) > 1:
        pairs.append(("p_male_", np.abs(q[1].reshape(-1) - fp[1].reshape(-1))))
    return difference_stats(pairs, len(x))


def run_both(fp32_model: str | bytes, int8_path: Path, x: np.ndarray, fp32_level: str = "all"):
    """Every output of the float model and of the int8 one on ``x`` (float64), one thread each,
    at the optimisation levels the estimators run them with (int8: "all")."""
    import onnxruntime as ort

    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}
    outs = []
    for model, level in ((fp32_model, levels[fp32_level]), (str(int8_path), levels["all"])):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        so.graph_optimization_level = level
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        outs.append([np.asarray(o, np.float64) for o in sess.run(None, {sess.get_inputs()[0].name: x})])
    return outs[0], outs[1]


def difference_stats(pairs, n: int) -> dict:
    """``{"n", "<prefix>mean", "<prefix>p90", "<prefix>max"}`` of each (prefix, |differences|)
    pair; inf where a model gave a non-finite output."""
    stats: dict = {"n": int(n)}
    for prefix, v in pairs:
        if not np.isfinite(v).all():
            stats.update({f"{prefix}mean": float("inf"), f"{prefix}p90": float("inf"), f"{prefix}max": float("inf")})
            continue
        stats.update({f"{prefix}mean": round(float(v.mean()), 4), f"{prefix}p90": round(float(np.percentile(v, 90)), 4),
                      f"{prefix}max": round(float(v.max()), 4)})
    return stats


def check_path(model: Path) -> Path:
    return model.with_name(f"{model.stem}.check-{cpu_key()}.json")


def cached_int8_age_net(
    source: Path, means: np.ndarray, scale: float, rgb: bool = True, age_weights: np.ndarray | None = None
) -> Path:
    """Path of the int8 age net for ``source``, quantized (once) and checked on this CPU.

    ``means``/``scale`` are the net's input normalisation (calibration and check chips go
    through the same arithmetic as real chips); ``age_weights`` the years per class (the
    check compares expected ages). Raises :class:`Int8Rejected` when the model disagrees with
    the float net here, anything else on other failures; the estimator falls back to float.
    """
    from agender.models.store import sha256_file

    sha = sha256_file(source)

    def build() -> bytes:
        return quantize_age_net(Path(source), _normalise(calibration_chips(), means, scale, rgb), sha)

    check = None if age_weights is None else \
        (lambda out: agreement(out, Path(source), check_chips(means, scale, rgb), age_weights))
    return cached_int8(Path(source), sha, build, check)


def cached_int8(source: Path, sha: str, build, check=None, agree: Agreement = AGREEMENT) -> Path:
    """The cache and per-CPU check every int8 net here goes through (see the module docstring).

    ``build()`` returns the serialized int8 model (run only when no verified copy for ``sha``
    is cached); ``check(path)`` returns the agreement stats of that model against the float
    net on this CPU (:func:`agreement`-shaped: ``mean``/``p90`` in years and/or
    ``p_male_mean``/``p_male_p90``), judged by ``agree``. ``check=None``: no check (build only).
    """
    out = int8_cache_path(sha)
    digest_file = out.with_suffix(".sha256")
    digest = _verified_digest(out, digest_file, sha)
    if digest is None:
        data = build()
        atomic_write_bytes(out, data)
        digest = _digest(data)
        atomic_write_bytes(digest_file, (digest + "\n").encode())
    if check is None:
        return out
    verdict = _verdict(out, digest)
    if verdict is None:
        stats = check(out)
        verdict = {
            "model_sha256": digest, "cpu": cpu_signature(), "stats": stats,
            "bound": {k: v for k, v in asdict(agree).items() if k in stats}, "passed": agree.holds(stats),
        }
        atomic_write_bytes(check_path(out), json.dumps(verdict, indent=1).encode())
    if not verdict["passed"]:
        s = verdict["stats"]
        parts = []
        if "mean" in s:
            parts.append(f"mean |Δage| {s['mean']:.2f} y, p90 {s['p90']:.2f} y (bound {agree.mean}/{agree.p90})")
        if "p_male_mean" in s:
            parts.append(f"mean |Δp_male| {s['p_male_mean']:.3f}, p90 {s['p_male_p90']:.3f} "
                         f"(bound {agree.p_male_mean}/{agree.p_male_p90})")
        raise Int8Rejected(
            f"int8 {Path(source).name} disagrees with the float net on this CPU ({platform.machine()}, "
            f"onnxruntime {verdict['cpu']['onnxruntime']}): {', '.join(parts)} on {s['n']} check chips"
        )
    return out


def _verified_digest(model: Path, digest_file: Path, source_sha256: str) -> str | None:
    """The cached model's sha256 when its bytes match the digest written at build, else None."""
    if not model.is_file():
        return None
    try:
        want = digest_file.read_text().strip()
        data = model.read_bytes()
    except OSError:
        want, data = "", b""
    if want and _digest(data) == want and cache_is_current(model, source_sha256):
        return want
    log.warning("int8: cached %s is damaged or unverifiable (sha256 mismatch), rebuilding it", model)
    return None


def _verdict(model: Path, digest: str) -> dict | None:
    """This CPU's cached agreement verdict for exactly these model bytes, if any."""
    try:
        verdict = json.loads(check_path(model).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(verdict, dict) or verdict.get("model_sha256") != digest or "passed" not in verdict:
        return None
    return verdict


def int8_or_float(source: Path, means: np.ndarray, scale: float, rgb: bool, age_weights: np.ndarray,
                  label: str, what: str = "the age net", logger: logging.Logger = log) -> Path | None:
    """The checked int8 model for ``source`` (:func:`cached_int8_age_net`), or None after one
    warning naming ``label`` when it disagrees here or cannot be built: the caller then runs the
    float net, so speed never costs a user right answers. Logged through the caller's ``logger``."""
    from agender.errors import one_line

    try:
        return cached_int8_age_net(source, means, scale, rgb, age_weights)
    except Int8Rejected as exc:
        logger.warning("%s: %s; using fp32", label, exc)
    except Exception as exc:  # onnxruntime.quantization missing/changed, cache not writable, ...
        logger.warning("%s: cannot quantize %s (%s), using fp32", label, what, one_line(exc, limit=160))
    return None
