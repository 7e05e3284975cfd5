"""python -m agender.train --out DIR: prep -> train -> export -> parity -> eval.json"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from agender.train.train import Config

log = logging.getLogger("agender.train")


def parity(net, onnx_path: Path, chips: np.ndarray) -> dict:
    """ONNX (float16-stored weights, onnxruntime) vs torch float32 on the same chips."""
    from agender.estimators.agender_net import AgenderEstimator
    from agender.train.train import predict_chips

    est = AgenderEstimator(model_path=onnx_path, device="cpu", variant="fp32", flip=False)
    a0, s0, p0 = predict_chips(net, chips)
    a1, s1, p1 = est.run_chips(np.asarray(chips))
    s1 = s1 / est.meta["std_scale"]
    return {"n": len(chips), "age_max_abs": float(np.abs(a0 - a1).max()), "age_mean_abs": float(np.abs(a0 - a1).mean()),
            "std_max_abs": float(np.abs(s0 - s1).max()), "p_male_max_abs": float(np.abs(p0 - p1).max()),
            "gender_flips": int(((p0 >= 0.5) != (p1 >= 0.5)).sum())}


def export(ckpt: Path, out_dir: Path, cache: Path, name: str = "agender-net-v1.onnx") -> tuple[Path, dict]:
    import torch

    from agender.train.model import AgenderNet, export_onnx
    from agender.train.train import fit_std_scale, load_all

    net = AgenderNet()
    st = torch.load(ckpt, weights_only=False)
    net.load_state_dict(st["net"])
    net.eval()
    d = load_all(cache)
    v, h = np.flatnonzero(d["val"]), np.flatnonzero(d["hold"])
    chips = np.concatenate([d["nd"][v], d["det"][h]])
    ages = np.concatenate([d["age"][v], d["age"][h]])
    k = fit_std_scale(net, chips, ages)
    k_flip = fit_std_scale(net, chips, ages, flip=True)
    path = export_onnx(net, out_dir / name, std_scale=k, extra_meta={
        "epoch": st.get("epoch"), "checkpoint": ckpt.name, "std_scale_flip": f"{k_flip:.6f}"})
    par = parity(net, path, chips[:512])
    info = {"onnx": str(path), "bytes": path.stat().st_size, "std_scale": k, "std_scale_flip": k_flip,
            "epoch": st.get("epoch"), "parity": par}
    log.info("exported %s (%.2f MB, std_scale %.3f): parity %s", path, path.stat().st_size / 1e6, k, par)
    return path, info


def average(parts: list[tuple[Path, float]], out: Path) -> Path:
    """A weighted average of checkpoints' weights (a "model soup": every run starts from the
    same Cydral weights and seed, so their weights stay in one basin), saved as ``out``."""
    import torch

    total = sum(w for _, w in parts)
    states = [(torch.load(path, weights_only=False)["net"], w / total) for path, w in parts]
    first = states[0][0]
    avg = {k: sum(sd[k].float() * w for sd, w in states) if first[k].is_floating_point() else first[k]
           for k in first}
    torch.save({"net": avg, "epoch": "average of " + ", ".join(f"{p}x{w:g}" for p, w in parts)}, out)
    return out


def _part(text: str) -> tuple[Path, float]:
    path, _, weight = text.rpartition(":") if ":" in text else (text, "", "1")
    return Path(path), float(weight)


def speed(onnx_path: Path, batch: int = 8, reps: int = 30) -> float:
    from agender.estimators.agender_net import AgenderEstimator

    est = AgenderEstimator(model_path=onnx_path, device="cpu", threads=2, variant="fp32", flip=False)
    chips = np.random.default_rng(0).integers(0, 255, (batch, 64, 64, 3), dtype=np.uint8)
    for _ in range(3):
        est.run_chips(chips)
    t = time.perf_counter()
    for _ in range(reps):
        est.run_chips(chips)
    return 1000 * (time.perf_counter() - t) / reps / batch


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agender.train", description=__doc__)
    p.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, ONNX, eval.json")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("AGENDER_TRAIN_DATA", "../shared/data/train")))
    p.add_argument("--cache", type=Path, default=None, help="chip cache (default OUT/../chips-cache parent: OUT/..)")
    p.add_argument("--eval", dest="evals", action="append", default=None, type=Path,
                   help="labels.csv scored --no-detect after training (default: DATA/../faces-dev/labels.csv)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--epoch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--race-power", type=float, default=None,
                   help="race balancing inside a decade x gender cell: weight ∝ n^-POWER (default 0.5)")
    p.add_argument("--gender-weight", type=float, default=None, help="weight of the gender loss (default 1)")
    p.add_argument("--lr", type=float, default=None, help="trunk learning rate (default 3e-4)")
    p.add_argument("--init", type=Path, default=None, metavar="CKPT",
                   help="start from this checkpoint's weights (a finished run) instead of Cydral's")
    p.add_argument("--export-only", type=Path, default=None, metavar="CKPT",
                   help="skip training: export and evaluate this checkpoint")
    p.add_argument("--average", nargs="+", type=_part, default=None, metavar="CKPT[:WEIGHT]",
                   help="skip training: export and evaluate the weighted average of these checkpoints")
    p.add_argument("--no-eval", action="store_true")
    return p


def _config(a: argparse.Namespace) -> Config:
    """The training :class:`~agender.train.train.Config`: its defaults, overridden by the options given."""
    from agender.train.train import Config

    cfg = Config(seed=a.seed, threads=a.threads)
    if a.epochs:
        cfg.epochs = a.epochs
    if a.epoch_size:
        cfg.epoch_size = a.epoch_size
    if a.race_power is not None:
        cfg.race_power = a.race_power
    if a.gender_weight is not None:
        cfg.gender_weight = a.gender_weight
    if a.lr is not None:
        cfg.lr = a.lr
    if a.init is not None:
        cfg.init = str(a.init.resolve())
    return cfg


def _checkpoint(a: argparse.Namespace, cfg: Config, cache: Path, out: Path) -> tuple[Path, str]:
    """The checkpoint to export and its tag (``best``: the recipe's result, exported as
    agender-net-v1.onnx): an average of checkpoints, a given one, or a training run's best."""
    from agender.train.train import train

    if a.average:
        return average(a.average, out / "average.pt"), "best"
    if a.export_only:
        return a.export_only, a.export_only.stem
    return train(cfg, cache, out), "best"


def _evaluate(a: argparse.Namespace, onnx_path: Path, res: dict) -> None:
    """Add to ``res`` the exported net's scores: the AAF hold-out through the detector, then
    each ``--eval`` labels file (default faces-dev) with --no-detect."""
    from agender.train.evaluate import aaf_holdout_labels, evaluate_model

    res["aaf_holdout_detector"] = evaluate_model(onnx_path, aaf_holdout_labels(a.data), no_detect=False)
    log.info("AAF hold-out (detector on): %s", res["aaf_holdout_detector"]["summary"])
    evals = a.evals if a.evals is not None else [a.data / ".." / "faces-dev" / "labels.csv"]
    for csv_path in evals:
        if csv_path.is_file():
            r = evaluate_model(onnx_path, csv_path, no_detect=True)
            res[f"{csv_path.parent.name}_no_detect"] = r
            log.info("%s --no-detect: %s", csv_path.parent.name, r["summary"])


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from agender.train import data as D

    cfg = _config(a)  # imports torch (agender.train.train) before any data is prepared
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = (a.cache or out.parent).resolve()
    D.prepare(a.data, cache)
    t0 = time.time()
    ckpt, tag = _checkpoint(a, cfg, cache, out)
    wall = time.time() - t0
    onnx_path, info = export(ckpt, out, cache, name="agender-net-v1.onnx" if tag == "best" else f"agender-net-{tag}.onnx")
    info["ms_per_face_batch8"] = round(speed(onnx_path), 3)
    res = {"config": asdict(cfg), "train_wall_s": round(wall, 1), "export": info}
    hist = out / "history.json"
    if hist.is_file():
        res["history"] = json.loads(hist.read_text())
    if not a.no_eval:
        _evaluate(a, onnx_path, res)
    (out / f"eval-{tag}.json").write_text(json.dumps(res, indent=1, default=float))
    log.info("wrote %s", out / f"eval-{tag}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
