"""Train agender's gender net (:mod:`agender.estimators.gender_net`) from ``../shared/data/train``.

    python -m agender.train.gender_net --out runs/gender        # chips, fine-tune, export, check

Recipe (seed 0; ~13 minutes of training on 2 CPU cores after ~1 minute of chip cutting):

1. **Chips**: 150-px dlib face chips (5-point template, 0.25 padding) of every training image —
   UTKFace with the whole image as the face box (its images are already face crops: the
   ``--no-detect`` geometry), All-Age-Faces with the largest YuNet face (what the pipeline
   feeds the net) — cached as ``OUT/../c150/{utk,aaf}.npy``.
2. **Net**: dlib's CC0 face-descriptor ResNet (``dlib_face_recognition_resnet_model_v1.dat``,
   converted to ONNX by :mod:`agender.reid_onnx`, to PyTorch by ``onnx2torch``) + dropout 0.2 +
   Linear(128 → 1).
3. **Fine-tune** for gender only (BCE): AdamW, the head alone for the first 300 steps, then
   all of it at 1e-4 (head 1e-3), cosine, batch 32, 8 × 12,000 chips drawn balanced by decade ×
   gender (races softly, ∝ n^-0.5, as :func:`agender.train.train.sample_weights`), the same
   video-condition augmentation as the age net. Validation never touches faces-dev: the same
   seeded UTK 5 % and AAF 10 % hold-outs as the age net choose the epoch.
4. **Export** ``OUT/agender-gender-v1.onnx`` (convolution weights stored int8 per output
   channel), and check it against the PyTorch net on hold-out chips (|ΔP(male)| < 0.02).

PyTorch and onnx2torch come with the ``[train]`` extra; the exported file needs neither.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

VERSION = "agender-gender-v1"
LICENSE = ("weights trained on UTKFace + All-Age-Faces: non-commercial research use only; "
           "seeded from dlib's CC0 face-descriptor ResNet (Davis King, dlib-models)")


def prepare_chips(train_root: Path, cache: Path, models=None) -> None:
    """The 150-px chips of step 1 (skipped when cached)."""
    import cv2
    import dlib

    from agender.analyzer import Analyzer
    from agender.io.sources import read_image
    from agender.reid import model_paths
    from agender.train import data as D

    cache.mkdir(parents=True, exist_ok=True)
    sp = dlib.shape_predictor(str(model_paths()[1]))
    detector = None
    for src in ("utk", "aaf"):
        out = cache / f"{src}.npy"
        if out.exists():
            continue
        rows = D.read_csv(train_root, src)
        X = np.zeros((len(rows), 150, 150, 3), np.uint8)
        for i, r in enumerate(rows):
            img = read_image(train_root / src / r["file"])
            h, w = img.shape[:2]
            box = (0.0, 0.0, float(w), float(h))
            if src == "aaf":
                if detector is None:
                    detector = Analyzer(detector="yunet", estimator="none", device="cpu", models=models)
                faces = detector.detect(img)
                if len(faces):
                    area = (faces.xyxy[:, 2] - faces.xyxy[:, 0]) * (faces.xyxy[:, 3] - faces.xyxy[:, 1])
                    box = tuple(float(v) for v in faces.xyxy[int(np.argmax(area))])
            rgb = np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            x1, y1, x2, y2 = box
            rect = dlib.rectangle(int(max(0, x1)), int(max(0, y1)), int(min(w - 1, x2)), int(min(h - 1, y2)))
            X[i] = dlib.get_face_chip(rgb, sp(rgb, rect), size=150, padding=0.25)
        np.save(out, X)


def build_net():
    """dlib's descriptor net in PyTorch + the gender head (logit)."""
    import onnx2torch
    import torch.nn as nn
    import torch.nn.functional as F

    from agender.reid import _dlib_models, model_paths
    from agender.reid_onnx import cached_descriptor_onnx

    body_path = cached_descriptor_onnx(model_paths()[0], dlib_net=_dlib_models()[0])

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = onnx2torch.convert(str(body_path))
            self.head = nn.Linear(128, 1)

        def forward(self, x):  # (N, 150, 150, 3) float RGB 0..255
            return self.head(F.dropout(self.body(x), 0.2, self.training)).squeeze(1)

    return Net()


def load_data(train_root: Path, chips: Path) -> dict:
    from agender.train import data as D
    from agender.train.train import utk_val_mask

    parts = {s: D.read_csv(train_root, s) for s in ("utk", "aaf")}
    utk, aaf = parts["utk"], parts["aaf"]
    X = np.concatenate([np.load(chips / "utk.npy", mmap_mode="r"), np.load(chips / "aaf.npy", mmap_mode="r")])
    age = np.array([float(r["age"]) for r in utk + aaf], np.float32)
    male = np.array([r["gender"] == "male" for r in utk + aaf])
    race = np.array([r.get("race", "") or "" for r in utk] + ["aaf"] * len(aaf))
    val = np.concatenate([utk_val_mask([r["file"] for r in utk]), np.zeros(len(aaf), bool)])
    hold = np.concatenate([np.zeros(len(utk), bool), D.aaf_holdout([r["file"] for r in aaf])])
    return dict(X=X, age=age, male=male, race=race, val=val, hold=hold)


def predict(net, chips, batch: int = 64) -> np.ndarray:
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(chips), batch):
            out.append(torch.sigmoid(net(torch.from_numpy(np.asarray(chips[i:i + batch], np.float32)))))
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def train(d: dict, out: Path, *, epochs: int = 8, epoch_size: int = 12000, batch: int = 32, lr: float = 1e-4,
          head_lr: float = 1e-3, warm: int = 300, seed: int = 0, threads: int = 2, log=print) -> dict:
    """Step 3; writes ``OUT/epochNN.pt`` and ``OUT/best.pt``; returns the best epoch's record."""
    import torch
    import torch.nn.functional as F

    from agender.train.train import augment, sample_weights

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    net = build_net()
    tr = np.flatnonzero(~d["val"] & ~d["hold"])
    vi, hi = np.flatnonzero(d["val"]), np.flatnonzero(d["hold"])
    w = sample_weights(d["age"][tr], d["male"][tr], d["race"][tr], 0.5)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW([{"params": net.body.parameters(), "lr": lr}, {"params": net.head.parameters(), "lr": head_lr}],
                            weight_decay=1e-4)
    spe = epoch_size // batch
    total, step, best, t0 = spe * epochs, 0, None, time.time()
    for ep in range(1, epochs + 1):
        net.train()
        for _ in range(spe):
            f = 0.5 * (1 + np.cos(np.pi * step / total))
            opt.param_groups[0]["lr"] = 0.0 if step < warm else lr * f
            opt.param_groups[1]["lr"] = head_lr * f
            idx = rng.choice(tr, batch, p=w)
            x = torch.from_numpy(np.stack([augment(np.asarray(d["X"][i]), rng) for i in idx]).astype(np.float32))
            loss = F.binary_cross_entropy_with_logits(net(x), torch.from_numpy(d["male"][idx].astype(np.float32)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        pv, ph = predict(net, d["X"][vi]), predict(net, d["X"][hi])
        rec = {"epoch": ep, "val_gender": float(((pv >= 0.5) == d["male"][vi]).mean()),
               "hold_gender": float(((ph >= 0.5) == d["male"][hi]).mean()), "wall_s": round(time.time() - t0, 1)}
        rec["score"] = 0.5 * (rec["val_gender"] + rec["hold_gender"])
        log(json.dumps(rec))
        torch.save({"net": net.state_dict(), "record": rec}, out / f"epoch{ep:02d}.pt")
        if best is None or rec["score"] > best["score"]:
            best = rec
            torch.save({"net": net.state_dict(), "record": rec}, out / "best.pt")
    return best


def export_onnx(state: dict, path: Path, extra_meta: dict | None = None) -> Path:
    """Step 4: the net + sigmoid as ONNX, its weights (≥ 1024 values) stored int8 per output
    channel behind ``DequantizeLinear`` (see :func:`agender.estimators.gender_net.float_model`)."""
    import onnx
    import torch
    from onnx import helper, numpy_helper

    net = build_net()
    net.load_state_dict(state)
    net.eval()

    class WithSigmoid(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):
            return torch.sigmoid(self.n(x)).unsqueeze(1)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".float.onnx")
    torch.onnx.export(WithSigmoid(net), (torch.zeros(2, 150, 150, 3),), str(tmp), input_names=["chips"],
                      output_names=["p_male"], dynamic_axes={"chips": {0: "N"}, "p_male": {0: "N"}},
                      opset_version=17, dynamo=False)
    m = onnx.load(str(tmp))
    tmp.unlink()
    g = m.graph
    keep, dq = [], []
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.ndim == 4 and a.size >= 1024:  # conv weights: int8 per output channel
            s = np.maximum(np.abs(a).reshape(a.shape[0], -1).max(axis=1), 1e-12) / 127.0
            q = np.clip(np.round(a / s[:, None, None, None]), -127, 127).astype(np.int8)
            keep += [numpy_helper.from_array(q, t.name + "_q"), numpy_helper.from_array(s.astype(np.float32), t.name + "_s"),
                     numpy_helper.from_array(np.zeros(a.shape[0], np.int8), t.name + "_z")]
            dq.append(helper.make_node("DequantizeLinear", [t.name + "_q", t.name + "_s", t.name + "_z"], [t.name], axis=0))
        else:
            keep.append(t)
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = dq + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.name = VERSION
    meta = {"agender.kind": "gender150", "agender.version": VERSION, "agender.license": LICENSE,
            "agender.chip": "150 px dlib face chip, 5-point template, padding 0.25, RGB 0..255",
            **{f"agender.{k}": str(v) for k, v in (extra_meta or {}).items()}}
    for k, v in meta.items():
        m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def parity(state: dict, path: Path, chips: np.ndarray) -> float:
    """max |ΔP(male)| between the exported file (through the estimator's loader) and PyTorch."""
    from agender.estimators.gender_net import GenderNet

    net = build_net()
    net.load_state_dict(state)
    want = predict(net, chips)
    got = GenderNet(path, device="cpu", int8=False).run_chips(np.asarray(chips))
    return float(np.abs(got - want).max())


# -- step 5: the age head on the frozen gender trunk ------------------------------------------------
AGE_BINS = 101  # ages 0..100
AGE_WEIGHTS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)  # the age net's share, chosen on the hold-outs


def trunk_features(path: Path, chips, batch: int = 64, threads: int = 2) -> np.ndarray:
    """The 128-d descriptor (the gender head's input) of each chip, through the exported file."""
    import onnx
    import onnxruntime as ort

    from agender.estimators.gender_net import float_model

    m = float_model(path)
    feat = _feature_name(m)
    m.graph.output.append(onnx.helper.make_tensor_value_info(feat, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = [sess.run([feat], {"chips": np.ascontiguousarray(chips[i:i + batch], np.float32)})[0].reshape(-1, 128)
           for i in range(0, len(chips), batch)]
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def _feature_name(model) -> str:
    """The descriptor's tensor: the input of the gender head's Gemm (the first Gemm: the age
    head's two come after it, appended by :func:`add_age_head`)."""
    return next(n for n in model.graph.node if n.op_type == "Gemm").input[0]


def train_age_head(F: np.ndarray, d: dict, *, epochs: int = 20, steps: int = 200, batch: int = 256,
                   seed: int = 0, log=print) -> dict:
    """An MLP (128 → 256 → 101 ages) on the frozen descriptors, DLDL like the age net (Gaussian soft
    labels σ = 1 + 0.06·age, + 0.1 × L1 of the expected age), decade × gender balanced draws.
    Returns numpy weights with the input standardisation folded into the first layer."""
    import torch
    import torch.nn as nn

    from agender.train.train import dldl_loss, sample_weights

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tr = np.flatnonzero(~d["val"] & ~d["hold"])
    w = sample_weights(d["age"][tr], d["male"][tr], d["race"][tr], 0.5)
    mu, sd = F[tr].mean(0), F[tr].std(0) + 1e-6
    X = torch.tensor((F - mu) / sd, dtype=torch.float32)
    ages = torch.arange(0, AGE_BINS, dtype=torch.float32)
    net = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, AGE_BINS))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-3)
    for ep in range(1, epochs + 1):
        net.train()
        for _ in range(steps):
            idx = rng.choice(tr, batch, p=w)
            loss, _ = dldl_loss(net(X[idx]), torch.tensor(d["age"][idx]), 0.1, grid=ages)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if ep % 5 == 0:
            log(json.dumps({"age_head_epoch": ep, "loss": round(float(loss), 4)}))
    w1, b1 = net[0].weight.detach().numpy().astype(np.float64), net[0].bias.detach().numpy().astype(np.float64)
    w1f = w1 / sd[None, :]
    return {"w1": w1f.astype(np.float32), "b1": (b1 - w1f @ mu).astype(np.float32),
            "w2": net[3].weight.detach().numpy().astype(np.float32), "b2": net[3].bias.detach().numpy().astype(np.float32)}


def head_probs(head: dict, F: np.ndarray) -> np.ndarray:
    """The head's age distribution in numpy (what the ONNX nodes compute)."""
    h = np.maximum(F.astype(np.float64) @ head["w1"].T.astype(np.float64) + head["b1"], 0.0)
    z = h @ head["w2"].T.astype(np.float64) + head["b2"]
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def age_net_distributions(files, no_detect: bool, models=None) -> np.ndarray:
    """The shipped int8 age net's age distributions on ``files``, as the default estimator runs it
    beside the gender net (no mirror pass; whole image with ``no_detect``, else the largest YuNet
    face)."""
    from agender.analyzer import Analyzer
    from agender.eval import _largest
    from agender.faces import Faces
    from agender.io.sources import read_image

    an = Analyzer(detector="none" if no_detect else "yunet", estimator="agender:int8", device="cpu", models=models)
    est = an.estimator
    est.flip = False  # beside the gender net's age head the age net runs without its mirror pass
    out = np.full((len(files), len(est.meta["ages"])), np.nan)
    for i, f in enumerate(files):
        img = read_image(f)
        h, w = img.shape[:2]
        det = Faces(xyxy=[[0, 0, w, h]], det_conf=[np.nan]) if no_detect else _largest(an.detect(img))
        if not len(det):
            continue
        crops, lms = an.crops(img, det)
        chips, ok = est.chips_batch(crops, lms)
        if ok[0]:
            out[i] = est.distributions(chips[:1])[0]
    return out


def choose_age_weight(d: dict, F: np.ndarray, head: dict, files, models=None, log=print) -> dict:
    """The age net's share ``w`` of the mixture (from :data:`AGE_WEIGHTS`) with the lowest mean
    MAE over the two hold-outs, and the factor that makes ±1 spread hold 68 % of them."""
    import onnx

    from agender.estimators import gender_net as G
    from agender.estimators.agender_net import packaged_model as age_model

    vi, hi = np.flatnonzero(d["val"]), np.flatnonzero(d["hold"])
    p_net = np.concatenate([age_net_distributions([files[i] for i in vi], True, models),
                            age_net_distributions([files[i] for i in hi], False, models)])
    meta = {p.key: p.value for p in onnx.load(str(age_model()), load_external_data=False).metadata_props}
    net_ages = np.asarray(json.loads(meta["agender.ages"]), np.float64)
    idx = np.r_[vi, hi]
    ok = np.isfinite(p_net).all(1)
    p_head = head_probs(head, F[idx])
    truth = d["age"][idx].astype(np.float64)
    nv = len(vi)
    best = None
    for w in AGE_WEIGHTS:
        mean, _ = G.mixture(np.nan_to_num(p_net), net_ages, p_head, w)
        err = np.abs(mean - truth)
        score = 0.5 * (err[:nv][ok[:nv]].mean() + err[nv:][ok[nv:]].mean())
        log(json.dumps({"age_weight": w, "val_mae": round(float(err[:nv][ok[:nv]].mean()), 3),
                        "hold_mae": round(float(err[nv:][ok[nv:]].mean()), 3)}))
        if best is None or score < best["score"]:
            best = {"age_weight": w, "score": round(float(score), 4)}
    mean, spread = G.mixture(np.nan_to_num(p_net), net_ages, p_head, best["age_weight"])
    r = (np.abs(mean - truth) / np.maximum(spread, 1e-3))[ok]
    best["std_scale"] = round(float(np.quantile(r, 0.68)), 4)
    return best


def add_age_head(path: Path, head: dict, meta: dict) -> None:
    """Append the age head to the exported gender net (second output ``age_probs``), in place."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    feat = _feature_name(m)
    names = {k: f"age_head_{k}" for k in head}
    g.initializer.extend([numpy_helper.from_array(v, names[k]) for k, v in head.items()])
    g.node.extend([
        helper.make_node("Gemm", [feat, names["w1"], names["b1"]], ["age_head_h"], transB=1),
        helper.make_node("Relu", ["age_head_h"], ["age_head_r"]),
        helper.make_node("Gemm", ["age_head_r", names["w2"], names["b2"]], ["age_head_z"], transB=1),
        helper.make_node("Softmax", ["age_head_z"], ["age_probs"], axis=1),
    ])
    g.output.append(helper.make_tensor_value_info("age_probs", onnx.TensorProto.FLOAT, ["N", AGE_BINS]))
    for k, v in {"agender.age_ages": json.dumps(list(range(AGE_BINS))), **meta}.items():
        m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=str(v)))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def age_parity(head: dict, path: Path, chips: np.ndarray, F: np.ndarray) -> float:
    """max |Δ expected age| (years) between the file's ``age_probs`` and :func:`head_probs`."""
    from agender.estimators.gender_net import GenderNet

    got = GenderNet(path, device="cpu", int8=False).run_chips_all(np.asarray(chips))[1]
    ages = np.arange(AGE_BINS, dtype=np.float64)
    return float(np.abs(got @ ages - head_probs(head, F) @ ages).max())


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description="train agender's gender net (see the module docstring)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    ap.add_argument("--chips", type=Path, default=None, help="chip cache (default OUT/../c150)")
    ap.add_argument("--models", default=None, help="model folder for the YuNet detector (default: search path)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--epoch-size", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--export-only", type=Path, default=None, metavar="CKPT")
    args = ap.parse_args(argv)
    chips = args.chips or args.out.parent / "c150"
    t0 = time.time()
    prepare_chips(args.data, chips, args.models)
    d = load_data(args.data, chips)
    print(f"chips ready ({time.time() - t0:.0f} s): {len(d['X'])}", flush=True)
    if args.export_only is None:
        best = train(d, args.out, epochs=args.epochs, epoch_size=args.epoch_size, seed=args.seed, threads=args.threads,
                     log=lambda s: print(s, flush=True))
        ckpt = args.out / "best.pt"
    else:
        ckpt, best = args.export_only, torch.load(args.export_only, weights_only=False).get("record", {})
    state = torch.load(ckpt, weights_only=False)["net"]
    path = export_onnx(state, args.out / "agender-gender-v1.onnx", {"trained": json.dumps(best)})
    hi = np.flatnonzero(d["hold"])[:64]
    dmax = parity(state, path, d["X"][hi])
    # step 5: the age head on the frozen trunk, and the mixture weight with the age net
    t1 = time.time()
    F = trunk_features(path, d["X"], threads=args.threads)
    head = train_age_head(F, d, seed=args.seed, log=lambda s: print(s, flush=True))
    from agender.train import data as D

    files = [args.data / s / r["file"] for s in ("utk", "aaf") for r in D.read_csv(args.data, s)]
    mix = choose_age_weight(d, F, head, files, args.models, log=lambda s: print(s, flush=True))
    add_age_head(path, head, {"agender.age_weight": mix["age_weight"], "agender.age_std_scale": mix["std_scale"],
                              "agender.age_head": json.dumps({"seed": args.seed, **mix, "wall_s": round(time.time() - t1)})})
    amax = age_parity(head, path, d["X"][hi], F[hi])
    print(json.dumps({"onnx": str(path), "best": best, "parity_max_abs_dp": dmax, "age_head": mix,
                      "parity_max_abs_dage": round(amax, 4), "wall_s": round(time.time() - t0)}))
    if dmax > 0.02:
        print(f"error: {path}: ONNX and PyTorch disagree (max |ΔP(male)| {dmax:.4f} > 0.02)", file=sys.stderr)
        return 1
    if amax > 0.5:
        print(f"error: {path}: the age head's ONNX and numpy ages disagree (max {amax:.3f} y > 0.5)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
