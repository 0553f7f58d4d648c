"""The paper's figures of the training imbalance, from per-sample and validation losses.

- Figure 1: each sub-model's final loss on every training sample against the sample's
  position in that run's epoch-1 order (scatter and binned means), Spearman's rho with its
  95% interval per panel; beside it, rho of every model (sub-models against their own
  order; merges and the other sub-models against the anchor run's order).
- Figure 3: the anchor run's training samples cut into segments by their epoch-1 position
  in the anchor's order; per segment the mean loss of the anchor, of each other sub-model
  and of each merge.
- Figure 4: validation loss against optimizer step: the single runs (mean and min-max
  band) against the merge of the K runs' checkpoints at the same step, per method.

Each builder returns (data frame behind the figure, matplotlib figure); `save` writes
PNG and SVG (byte-stable: no dates, a fixed SVG hash salt) and the CSV beside them.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"svg.hashsalt": "ordermerge", "figure.dpi": 100, "font.size": 9})
    return plt


def read_samples(path) -> pd.DataFrame:
    """samples.csv -> one row per training sample: id, position (in epoch 1's order)."""
    df = pd.read_csv(path)
    missing = {"id", "epoch", "position"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: not a samples log (no {', '.join(sorted(missing))})")
    first = df[df["epoch"] == 1][["id", "position"]]
    if first.empty:
        raise ValueError(f"{path}: no epoch-1 rows")
    return first.set_index("id")


def with_final_loss(samples: pd.DataFrame, losses: dict[str, float] | None, run: str) -> pd.DataFrame:
    """A run's samples with its loss on each after training (`losses`: its last checkpoint's
    scores on the training split, from the score rule)."""
    if losses is None:
        raise ValueError(f"figure 1: no scored losses of {run} (an argument {run}=.../scores/"
                         f".../{run}/train.csv)")
    loss = pd.Series(losses).reindex(samples.index)
    if loss.isna().any():
        raise ValueError(f"{run}: no loss for {int(loss.isna().sum())} training samples")
    return samples.assign(final_loss=loss.to_numpy())


def binned(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of y in `bins` equal-count bins of x (sorted): (bin centre x, mean y)."""
    order = np.argsort(x, kind="stable")
    parts = np.array_split(order, bins)
    return (np.array([x[p].mean() for p in parts if len(p)]),
            np.array([y[p].mean() for p in parts if len(p)]))


def figure1(samples: dict[str, pd.DataFrame], merged: dict[str, dict[str, float]], anchor: str,
            panels: int = 4, bins: int = 10, controls: dict[str, pd.DataFrame] | None = None,
            resamples: int = 2000, seed: int = 0):
    """`samples`: run name -> with_final_loss(read_samples()); `merged`: merge id -> {id:
    loss on the training sample}; `anchor`: the run whose order positions the merges are
    read against; `controls`: control name -> its samples like a run's (the anchor's order
    trained again; in the rho table, not drawn).
    The rho table: each run against its own positions and the anchor's, each merge against
    the anchor's, each control against its own, and the runs' order effect (stats.order_effect:
    mean rho against own positions, against the other runs', and their difference, with
    bootstrap intervals over the training rows from `seed`).
    Returns (data, rho table, figure)."""
    plt = _plt()
    runs = list(samples)
    if anchor not in samples:
        raise ValueError(f"anchor {anchor!r} is not among the runs {runs}")
    pos = samples[anchor]["position"]
    data, rho = [], []
    for r in runs:
        s = samples[r]
        data.append(pd.DataFrame({"model": r, "id": s.index, "position": s["position"].to_numpy(),
                                  "loss": s["final_loss"].to_numpy()}))
        st = stats.spearman(s["position"], s["final_loss"])
        rho.append({"model": r, "kind": "sft", "positions_of": r, **vars(st)})
        if r != anchor:
            st = stats.spearman(pos, s["final_loss"].reindex(pos.index))
            rho.append({"model": r, "kind": "sft", "positions_of": anchor, **vars(st)})
    if len(runs) >= 2:
        for r in runs:
            if set(samples[r].index) != set(pos.index):
                raise ValueError(f"{r}: its training rows are not {anchor}'s")
        eff = stats.order_effect([samples[r]["position"].reindex(pos.index) for r in runs],
                                 [samples[r]["final_loss"].reindex(pos.index) for r in runs],
                                 resamples=resamples, seed=seed)
        mean = f"mean of {eff.runs} runs"
        rho += [{"model": mean, "kind": "order effect: own", "positions_of": "own",
                 "rho": eff.own, "low": eff.own_ci[0], "high": eff.own_ci[1], "p": math.nan, "n": eff.n},
                {"model": mean, "kind": "order effect: cross", "positions_of": "other runs'",
                 "rho": eff.cross, "low": eff.cross_ci[0], "high": eff.cross_ci[1], "p": math.nan,
                 "n": eff.n},
                {"model": mean, "kind": "order effect: own - cross", "positions_of": "own - other runs'",
                 "rho": eff.diff, "low": eff.diff_ci[0], "high": eff.diff_ci[1], "p": eff.p, "n": eff.n}]
    for name, s in (controls or {}).items():
        data.append(pd.DataFrame({"model": name, "id": s.index, "position": s["position"].to_numpy(),
                                  "loss": s["final_loss"].to_numpy()}))
        rho.append({"model": name, "kind": "control", "positions_of": name,
                    **vars(stats.spearman(s["position"], s["final_loss"]))})
    for name, losses in merged.items():
        loss = pd.Series(losses).reindex(pos.index)
        if loss.isna().any():
            raise ValueError(f"merge {name}: no loss for {int(loss.isna().sum())} training samples")
        data.append(pd.DataFrame({"model": name, "id": pos.index, "position": pos.to_numpy(),
                                  "loss": loss.to_numpy()}))
        rho.append({"model": name, "kind": "merged", "positions_of": anchor,
                    **vars(stats.spearman(pos, loss))})
    shown = runs[:panels]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.0), sharey=True,
                             squeeze=False)
    for ax, r in zip(axes[0], shown):
        s = samples[r]
        x, y = s["position"].to_numpy(float), s["final_loss"].to_numpy(float)
        ax.scatter(x, y, s=4, alpha=0.35, color="tab:blue", linewidths=0)
        bx, by = binned(x, y, bins)
        ax.plot(bx, by, color="tab:red", marker="o", ms=3, label=f"mean of {bins} bins")
        st = stats.spearman(x, y)
        ax.set_title(f"{r}: ρ = {st.rho:.2f} [{st.low:.2f}, {st.high:.2f}]")
        ax.set_xlabel("position in epoch 1's order")
    axes[0][0].set_ylabel("loss after training")
    axes[0][0].legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return pd.concat(data, ignore_index=True), pd.DataFrame(rho), fig


def segments_of(pos: pd.Series, k: int) -> pd.Series:
    """Segment 1..k of each sample by its position (equal-count segments, in order)."""
    order = pos.sort_values(kind="stable").index
    seg = pd.Series(0, index=pos.index)
    for i, part in enumerate(np.array_split(np.arange(len(order)), k), 1):
        seg[order[part]] = i
    return seg


def figure3(positions: pd.Series, losses: dict[str, dict[str, float]], anchor: str,
            kinds: dict[str, str], segments: int = 5):
    """`positions`: the anchor run's epoch-1 position of every training sample; `losses`:
    model -> {id: loss} (sub-models and merges, scored alike); `kinds`: model -> sft|merged.
    Returns (per-segment means, figure)."""
    plt = _plt()
    if anchor not in losses:
        raise ValueError(f"anchor {anchor!r} has no losses")
    seg = segments_of(positions, segments)
    rows = []
    for model, l in losses.items():
        loss = pd.Series(l).reindex(positions.index)
        if loss.isna().any():
            raise ValueError(f"{model}: no loss for {int(loss.isna().sum())} training samples")
        for s in range(1, segments + 1):
            ids = seg.index[seg == s]
            rows.append({"model": model, "kind": "anchor" if model == anchor else kinds[model],
                         "segment": s, "first_position": int(positions[ids].min()),
                         "last_position": int(positions[ids].max()), "n": len(ids),
                         "mean_loss": float(loss[ids].mean())})
    data = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"][1:])
    first_other = True
    for model, part in data.groupby("model", sort=False):
        kind = part["kind"].iloc[0]
        if kind == "anchor":
            ax.plot(part["segment"], part["mean_loss"], color="black", lw=2.2, marker="o",
                    label=f"anchor ({model})")
        elif kind == "sft":
            ax.plot(part["segment"], part["mean_loss"], color="0.6", lw=1, marker=".",
                    label="other sub-models" if first_other else None)
            first_other = False
        else:
            ax.plot(part["segment"], part["mean_loss"], color=next(colors), lw=1.6, marker="s",
                    ms=4, label=model)
    ax.set_xticks(range(1, segments + 1))
    ax.set_xlabel(f"segment of the anchor's epoch-1 order (1 = earliest of {segments})")
    ax.set_ylabel("mean loss on the segment's training samples")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return data, fig


def figure4(single: pd.DataFrame, merged: dict[str, pd.DataFrame]):
    """`single`: curve rows (step, checkpoint, model=runN, validation_loss) of the K runs;
    `merged`: merge id -> its curve rows. Returns (all rows, figure)."""
    plt = _plt()
    g = single.groupby("step")["validation_loss"]
    mean, lo, hi = g.mean(), g.min(), g.max()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    ax.plot(mean.index, mean.to_numpy(), color="black", marker="o", ms=3,
            label=f"single SFT (mean of {single['model'].nunique()})")
    ax.fill_between(mean.index, lo.to_numpy(), hi.to_numpy(), color="0.8", label="single SFT min–max")
    for name, curve in merged.items():
        c = curve.sort_values("step")
        if list(c["step"]) != list(mean.index):
            raise ValueError(f"merge {name}: steps {list(c['step'])} differ from the runs' "
                             f"{list(mean.index)}")
        ax.plot(c["step"], c["validation_loss"], marker="s", ms=3, lw=1.4, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return pd.concat([single, *merged.values()], ignore_index=True), fig


def save(fig, data: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """stem.png, stem.svg and stem.csv, each written to a temporary name and renamed."""
    from ..utils import atomic_file
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext, kw in (("png", {"metadata": {"Software": None}}),
                    ("svg", {"metadata": {"Date": None, "Creator": None}})):
        path = stem.with_suffix(f".{ext}")
        with atomic_file(path, "wb") as fh:
            fig.savefig(fh, format=ext, **kw)
        out.append(path)
    path = stem.with_suffix(".csv")
    with atomic_file(path) as fh:
        data.to_csv(fh, index=False, float_format="%.6f")
    out.append(path)
    _plt().close(fig)
    return out


def control_line(name: str, path: str, anchor_path: str, control: pd.DataFrame,
                 anchor: pd.DataFrame, anchor_name: str) -> str:
    """One sentence on a control against the anchor run: is its training log (samples.csv:
    every step's loss of every row) the anchor's, byte for byte, and how far apart are the
    losses after training (the largest difference, and Spearman's rho between the two)."""
    same_log = Path(path).read_bytes() == Path(anchor_path).read_bytes()
    if not same_log:  # where they part: the first row whose loss when seen differs
        a, c = pd.read_csv(anchor_path), pd.read_csv(path)
        differ = (a["loss_seen"] != c["loss_seen"]) | (a["id"] != c["id"])
        first = a[differ].iloc[0] if differ.any() else None
    loss = control["final_loss"].reindex(anchor.index)
    delta = (loss - anchor["final_loss"]).abs()
    same = int((delta == 0).sum())
    st = stats.spearman(anchor["final_loss"], loss)
    log = ("its training log (samples.csv, every row's loss at every step) is the same bytes "
           f"as {anchor_name}'s" if same_log else
           f"its training log differs from {anchor_name}'s"
           + (f" from epoch {first['epoch']}, optimizer step {first['step'] + 1}, on"
              if first is not None else ""))
    return (f"- **{name}** ({anchor_name}'s order again): {log}; losses after training: "
            f"{same} of {len(delta)} rows equal to {anchor_name}'s, largest difference "
            f"{delta.max():.3g}, ρ between them {st.rho:.4f}.")


def parse_named(args: list[str]) -> list[tuple[str, str]]:
    """NAME=PATH arguments as (name, path); a ValueError names those without '='."""
    named = [a.split("=", 1) for a in args]
    bad = [a for a, x in zip(args, named) if len(x) != 2]
    if bad:
        raise ValueError(f"figure: arguments {bad} are not NAME=PATH")
    return [(n, p) for n, p in named]


def make(figure: str, named: list[tuple[str, str]], stem: Path, anchor: str, cfg: dict) -> list[Path]:
    """Figure `figure` ("1", "3" or "4") from its named inputs (runN=samples.csv, NAME=losses
    under scores/ (Figure 1: every run's and merge's), NAME=curve.csv), saved as
    `stem`.png/.svg/.csv (and for Figure 1 the table of every model's Spearman's rho,
    `stem`_rho.csv/.md); returns the paths written."""
    import re

    from ..scoring import read_losses
    from ..utils import atomic_file
    is_run = re.compile(r"run\d+$").match
    is_control = re.compile(r"control-").match
    samples = {n: read_samples(path) for n, path in named if path.endswith("samples.csv")}
    scores = {n: read_losses(path) for n, path in named if path.endswith(".csv") and "/scores/" in path}
    outs = []
    if figure == "1":
        merged = {n: v for n, v in scores.items() if not is_run(n) and not is_control(n)}
        samples = {n: with_final_loss(s, scores.get(n), n) for n, s in samples.items()}
        controls = {n: samples.pop(n) for n in list(samples) if is_control(n)}
        data, rho, fig = figure1(samples, merged, anchor, panels=cfg.get("panels", 4),
                                 bins=cfg.get("bins", 10), controls=controls)
        rho_stem = stem.with_name(stem.name + "_rho")
        with atomic_file(rho_stem.with_suffix(".csv")) as fh:
            rho.to_csv(fh, index=False, float_format="%.4f")
        md = ["| model | kind | positions of | ρ | 95% CI | p | n |", "|---|---|---|---|---|---|---|"]
        md += [f"| {r.model} | {r.kind} | {r.positions_of} | {r.rho:.3f} | [{r.low:.3f}, {r.high:.3f}] "
               f"| {'' if math.isnan(r.p) else f'{r.p:.2g}'} | {r.n} |" for r in rho.itertuples()]
        paths = dict(named)
        md += [""] + [control_line(n, paths[n], paths[anchor], controls[n], samples[anchor], anchor)
                      for n in controls]
        with atomic_file(rho_stem.with_suffix(".md")) as fh:
            fh.write("\n".join(md).rstrip("\n") + "\n")
        outs += [rho_stem.with_suffix(".csv"), rho_stem.with_suffix(".md")]
    elif figure == "3":
        kinds = {n: "sft" if is_run(n) else "merged" for n in scores}
        data, fig = figure3(samples[anchor]["position"], scores, anchor, kinds,
                            segments=cfg.get("segments", 5))
    else:
        curves = {n: pd.read_csv(path) for n, path in named}
        if "single" not in curves:
            raise ValueError("figure 4: no single=CURVE argument (the sub-models' curve)")
        data, fig = figure4(curves.pop("single"), curves)
    return outs + save(fig, data, stem)
