"""Fine-tune :class:`AgenderNet` on the cached chips (see :mod:`agender.train.data`).

Sampling: every epoch draws ``epoch_size`` chips with replacement, weighted so that each
decade x gender cell is equally likely, and within a cell race groups (UTK's five labels; AAF
counts as its own group) are balanced softly (weight ∝ n_race^-0.5; ``--race-power`` 1 balances them fully). Validation (checkpoint
choice, age_std calibration) uses training data only: a seeded 5 % of UTK and the AAF hold-out
(detector chips). faces-dev is never read here.

Loss: DLDL soft-label cross entropy (Gaussian around the true age, sigma growing with age)
+ 0.1 x L1 of the expected age (mean loss) + BCE on gender.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from agender.estimators.agender_net import MEANS, SCALE
from agender.train import data as D
from agender.train.model import AGES, AgenderNet

log = logging.getLogger(__name__)


@dataclass
class Config:
    seed: int = 0
    epochs: int = 12
    epoch_size: int = 20000
    batch: int = 64
    lr: float = 3e-4          # trunk
    head_lr: float = 1e-3     # age and gender heads
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    l1_weight: float = 0.1
    gender_weight: float = 1.0
    threads: int = 2
    val_fraction: float = 0.05
    race_power: float = 0.5   # within a decade x gender cell, a race group's weight ∝ n_race^-race_power
    init: str = ""            # start from this checkpoint's weights instead of Cydral's (e.g. a finished run)


def decade(age: np.ndarray) -> np.ndarray:
    return np.minimum(age // 10, 7).astype(int)


def utk_val_mask(files) -> np.ndarray:
    keys = np.array([int(hashlib.sha1(f"val:{f}".encode()).hexdigest()[:8], 16) for f in files])
    return keys < 0.05 * 2**32


def load_all(cache: Path):
    u, a = D.load(cache, "utk"), D.load(cache, "aaf")
    val = np.concatenate([utk_val_mask(u["files"]), np.zeros(len(a["age"]), bool)])
    hold = np.concatenate([np.zeros(len(u["age"]), bool), a["holdout"]])
    nd = np.concatenate([np.asarray(u["nd"]), np.asarray(a["nd"])])
    det = np.concatenate([np.asarray(u["det"]), np.asarray(a["det"])])
    has_det = np.concatenate([np.zeros(len(u["age"]), bool), a["has_det"]])
    age = np.concatenate([u["age"], a["age"]]).astype(np.float32)
    male = np.concatenate([u["male"], a["male"]])
    race = np.concatenate([u["race"], np.array(["aaf"] * len(a["age"]))])
    return dict(nd=nd, det=det, has_det=has_det, age=age, male=male, race=race, val=val, hold=hold)


def sample_weights(age, male, race, race_power: float = 0.5) -> np.ndarray:
    cell = decade(age) * 2 + male.astype(int)
    w = np.zeros(len(age))
    for c in np.unique(cell):
        m = cell == c
        rs, cnt = np.unique(race[m], return_counts=True)
        rw = {r: k ** -race_power for r, k in zip(rs, cnt)}
        wc = np.array([rw[r] for r in race[m]])
        w[m] = wc / wc.sum()  # each cell sums to 1
    return w / w.sum()


# -- augmentation (video conditions) ------------------------------------------------------------
def augment(chip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = chip
    side = chip.shape[0]  # 64 for the shipped net; the same recipe scales to other chip sizes
    k = side / 64.0
    if rng.random() < 0.5:
        x = x[:, ::-1]
    if rng.random() < 0.7:  # small pose / shift / scale
        ang = rng.uniform(-10, 10)
        sc = rng.uniform(0.92, 1.08)
        M = cv2.getRotationMatrix2D((side / 2, side / 2), ang, sc)
        M[:, 2] += rng.uniform(-2.5, 2.5, 2) * k
        x = cv2.warpAffine(np.ascontiguousarray(x), M, (side, side), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.3:  # low resolution
        s = int(rng.integers(14, 48) * k)
        x = cv2.resize(np.ascontiguousarray(x), (s, s), interpolation=cv2.INTER_AREA)
        x = cv2.resize(x, (side, side), interpolation=cv2.INTER_LINEAR if rng.random() < 0.5 else cv2.INTER_CUBIC)
    if rng.random() < 0.2:  # defocus / motion-ish blur
        x = cv2.GaussianBlur(np.ascontiguousarray(x), (0, 0), rng.uniform(0.4, 1.3) * k)
    x = np.ascontiguousarray(x).astype(np.float32)
    if rng.random() < 0.6:  # brightness / contrast / colour cast
        x = x * rng.uniform(0.65, 1.35) + rng.uniform(-30, 30) + rng.uniform(-8, 8, 3)
    if rng.random() < 0.05:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    if rng.random() < 0.15:
        x = x + rng.normal(0, rng.uniform(2, 8), x.shape)
    x = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.35:  # JPEG (encode as BGR like a camera/codec would)
        ok, buf = cv2.imencode(".jpg", x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        x = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return x


def to_tensor(chips: np.ndarray) -> torch.Tensor:
    x = chips.astype(np.float32)
    x -= np.asarray(MEANS, np.float32)
    x *= np.float32(SCALE)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


_AGES_T = torch.tensor(AGES, dtype=torch.float32)


def soft_labels(age: torch.Tensor, grid: torch.Tensor = _AGES_T) -> torch.Tensor:
    sigma = (1.0 + 0.06 * age).clamp(min=1.0)[:, None]
    d = grid[None, :] - age[:, None]
    t = torch.exp(-0.5 * (d / sigma) ** 2)
    return t / t.sum(1, keepdim=True)


def dldl_loss(logits: torch.Tensor, age: torch.Tensor, l1_weight: float, grid: torch.Tensor = _AGES_T):
    """(DLDL soft-label cross entropy + ``l1_weight`` × L1 of the expected age, that L1): the age
    loss of the age net and of the gender net's age head (whose ``grid`` is 0..100)."""
    logp = F.log_softmax(logits, 1)
    ce = -(soft_labels(age, grid) * logp).sum(1).mean()
    l1 = (torch.softmax(logits, 1) @ grid - age).abs().mean()
    return ce + l1_weight * l1, l1


def loss_fn(la, lg, age, male, cfg: Config):
    age_loss, l1 = dldl_loss(la, age, cfg.l1_weight)
    bce = F.binary_cross_entropy_with_logits(lg, male.float())
    return age_loss + cfg.gender_weight * bce, l1.item(), bce.item()


@torch.no_grad()
def predict_chips(net, chips: np.ndarray, batch: int = 256, flip: bool = False):
    """(age, raw std, p_male) per chip; ``flip``: averaged with the mirrored chip, as the
    estimator does at inference (:class:`~agender.estimators.agender_net.AgenderEstimator`)."""
    net.eval()
    ages, stds, pms = [], [], []
    for s in range(0, len(chips), batch):
        c = np.asarray(chips[s:s + batch])
        la, lg = net(to_tensor(c))
        p = F.softmax(la, 1)
        if flip:
            la2, lg2 = net(to_tensor(np.ascontiguousarray(c[:, :, ::-1])))
            p = 0.5 * (p + F.softmax(la2, 1))
            lg = torch.logit(0.5 * (torch.sigmoid(lg) + torch.sigmoid(lg2)), eps=1e-7)
        m = (p * _AGES_T).sum(1)
        v = (p * (_AGES_T[None] - m[:, None]) ** 2).sum(1)
        ages.append(m), stds.append(v.clamp(min=0).sqrt()), pms.append(torch.sigmoid(lg))
    return torch.cat(ages).numpy(), torch.cat(stds).numpy(), torch.cat(pms).numpy()


def val_figures(net, chips, age, male) -> dict:
    a, s, p = predict_chips(net, chips)
    err = np.abs(a - age)
    dec = decade(age)
    per = {int(d): float(err[dec == d].mean()) for d in np.unique(dec)}
    return {"mae": float(err.mean()), "gender": float(((p >= 0.5) == male).mean()),
            "mae_balanced": float(np.mean(list(per.values()))), "mae_by_decade": per,
            "coverage_raw": float((err <= s).mean())}


def fit_std_scale(net, chips, age, flip: bool = False) -> float:
    """The factor k for which |err| <= k * std on 68 % of the validation chips (±1 sigma)."""
    a, s, _ = predict_chips(net, chips, flip=flip)
    r = np.abs(a - age) / np.maximum(s, 1e-3)
    return float(np.quantile(r, 0.68))


def train(cfg: Config, cache: Path, out: Path) -> Path:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    d = load_all(cache)
    tr = ~(d["val"] | d["hold"])
    w = sample_weights(d["age"][tr], d["male"][tr], d["race"][tr], cfg.race_power)
    tr_idx = np.flatnonzero(tr)
    vidx = np.flatnonzero(d["val"])
    hidx = np.flatnonzero(d["hold"])
    log.info("train %d, val(utk) %d, hold-out(aaf) %d", len(tr_idx), len(vidx), len(hidx))
    net = AgenderNet()
    if cfg.init:  # warm start (a resumed run's last.pt still wins below)
        net.load_state_dict(torch.load(cfg.init, weights_only=False)["net"])
    opt = _optimizer(net, cfg)
    steps_per_epoch = cfg.epoch_size // cfg.batch
    total = steps_per_epoch * cfg.epochs
    base = [g["lr"] for g in opt.param_groups]
    ck = out / "last.pt"
    start, history, best = 0, [], math.inf
    if ck.is_file():
        rng, start, history, best = _resume(ck, net, opt)
    for epoch in range(start, cfg.epochs):
        net.train()
        t0 = time.time()
        draw = tr_idx[rng.choice(len(tr_idx), size=steps_per_epoch * cfg.batch, p=w)]
        sums = np.zeros(3)
        for b in range(steps_per_epoch):
            _set_lr(opt, base, epoch * steps_per_epoch + b, total, cfg)
            sums += _train_step(net, opt, d, draw[b * cfg.batch:(b + 1) * cfg.batch], rng, cfg)
            if b % 50 == 0:
                log.info("epoch %d step %d/%d loss %.3f l1 %.2f bce %.3f (%.0f ms/step)", epoch + 1, b,
                         steps_per_epoch, *(sums / (b + 1)), 1000 * (time.time() - t0) / (b + 1))
        train_s = time.time() - t0
        history.append(_epoch_record(net, d, vidx, hidx, epoch, train_s, sums[0] / steps_per_epoch))
        best = _save_epoch(out, ck, net, opt, rng, history, best, cfg)
    return out / "best.pt"


def _optimizer(net: AgenderNet, cfg: Config) -> torch.optim.Optimizer:
    """AdamW with two rates: the new heads and the gender tower (``head_lr``) move faster than
    the pretrained trunk (``lr``)."""
    heads = [p for n, p in net.named_parameters() if n.startswith(("age.", "gender.", "g."))]
    trunk = [p for n, p in net.named_parameters() if not n.startswith(("age.", "gender.", "g."))]
    return torch.optim.AdamW([{"params": trunk, "lr": cfg.lr}, {"params": heads, "lr": cfg.head_lr}],
                             weight_decay=cfg.weight_decay)


def _resume(ck: Path, net: AgenderNet, opt: torch.optim.Optimizer) -> tuple[np.random.Generator, int, list, float]:
    """Load ``last.pt`` into ``net`` and ``opt`` and restore both random generators, so a
    resumed run continues as if never stopped; returns (rng, epochs done, history, best score)."""
    st = torch.load(ck, weights_only=False)
    net.load_state_dict(st["net"]), opt.load_state_dict(st["opt"])
    rng = st["rng"]
    torch.set_rng_state(st["torch_rng"])
    log.info("resumed after epoch %d", st["epoch"])
    return rng, st["epoch"], st["history"], st["best"]


def _set_lr(opt: torch.optim.Optimizer, base: list[float], step: int, total: int, cfg: Config) -> None:
    """Each param group's rate at ``step``: a linear warm-up over ``warmup_steps``, times a
    cosine decay from its base rate to 0 over the ``total`` steps of the run."""
    f = min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / total))
    for g, lr in zip(opt.param_groups, base):
        g["lr"] = lr * f


def _train_step(net: AgenderNet, opt: torch.optim.Optimizer, d: dict, idx: np.ndarray, rng: np.random.Generator,
                cfg: Config) -> tuple[float, float, float]:
    """One optimiser step on the chips ``idx`` (augmented; where a detector chip exists, it
    replaces the aligned one half the time); returns (loss, age L1, gender BCE)."""
    use_det = d["has_det"][idx] & (rng.random(len(idx)) < 0.5)
    chips = np.stack([augment(d["det"][i] if u else d["nd"][i], rng) for i, u in zip(idx, use_det)])
    la, lg = net(to_tensor(chips))
    loss, l1, bce = loss_fn(la, lg, torch.from_numpy(d["age"][idx]), torch.from_numpy(d["male"][idx]), cfg)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item(), l1, bce


def _epoch_record(net: AgenderNet, d: dict, vidx: np.ndarray, hidx: np.ndarray, epoch: int, train_s: float,
                  loss: float) -> dict:
    """The epoch's history entry: its validation figures on the UTK split and the AAF hold-out,
    and the score the best checkpoint is chosen by (balanced age MAE + hold-out MAE + gender
    errors weighted x10)."""
    v = val_figures(net, d["nd"][vidx], d["age"][vidx], d["male"][vidx])
    h = val_figures(net, d["det"][hidx], d["age"][hidx], d["male"][hidx])
    score = v["mae_balanced"] + h["mae"] + 10 * ((1 - v["gender"]) + (1 - h["gender"]))
    rec = {"epoch": epoch + 1, "train_s": round(train_s, 1), "loss": loss,
           "val_utk": v, "holdout_aaf": h, "score": score}
    log.info("epoch %d done in %.0f s: utk val MAE %.2f (balanced %.2f) gender %.3f | aaf hold-out MAE %.2f "
             "gender %.3f | score %.3f", epoch + 1, train_s, v["mae"], v["mae_balanced"], v["gender"],
             h["mae"], h["gender"], score)
    return rec


def _save_epoch(out: Path, ck: Path, net: AgenderNet, opt: torch.optim.Optimizer, rng: np.random.Generator,
                history: list[dict], best: float, cfg: Config) -> float:
    """After the epoch ``history[-1]``: ``best.pt`` when it scored best so far, the resumable
    ``ck`` (``last.pt``), ``epochNN.pt`` and ``history.json``; returns the best score."""
    score, n = history[-1]["score"], history[-1]["epoch"]
    if score < best:
        best = score
        torch.save({"net": net.state_dict(), "epoch": n, "score": score}, out / "best.pt")
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "rng": rng, "torch_rng": torch.get_rng_state(),
                "epoch": n, "history": history, "best": best, "config": asdict(cfg)}, ck)
    torch.save({"net": net.state_dict(), "epoch": n}, out / f"epoch{n:02d}.pt")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return best
