"""The report's figures, drawn with matplotlib (Agg) into PNG bytes.

matplotlib is imported inside `_plt()` only, so importing verify.report (and the pytest plugin)
never needs it. Series differ by line style, marker and hatching as well as colour, so every
figure reads in grayscale.
"""

from __future__ import annotations

import io
import math

import numpy as np

MATPLOTLIB_MISSING = "report needs matplotlib: pip install 'gpt2-verify[report]'"

# colour-blind-safe palette (Okabe & Ito 2008) whose entries also differ in lightness
COLORS = ("#000000", "#E69F00", "#0072B2", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#999999")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "x", "P", "*")
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")


class MatplotlibMissing(ImportError):
    pass


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise MatplotlibMissing(MATPLOTLIB_MISSING) from None
    matplotlib.use("Agg")  # headless; set here, never at import of the package
    import matplotlib.pyplot as plt

    return plt


def require_matplotlib() -> None:
    """Raise MatplotlibMissing (with the install hint) when matplotlib cannot be imported."""
    _plt()


def style(i: int) -> dict:
    return {
        "color": COLORS[i % len(COLORS)],
        "linestyle": LINESTYLES[i % len(LINESTYLES)],
        "marker": MARKERS[i % len(MARKERS)],
    }


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # no Software/date metadata: the same figure gives the same bytes
    fig.savefig(buf, format="png", dpi=96, metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def _grid(n: int, ncols: int = 3, size=(4.2, 3.0)):
    plt = _plt()
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    flat = list(axes.reshape(-1))
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


# ---- init state -------------------------------------------------------------------------------


def init_histograms(stats: list) -> bytes:
    """One panel per random tensor: the streamed histogram (log counts) and the expected counts."""
    fig, axes = _grid(len(stats))
    for ax, t in zip(axes, stats):
        h = t.hist
        centres = 0.5 * (h.edges[1:] + h.edges[:-1])
        ax.stairs(h.counts, h.edges, color=COLORS[0], linewidth=1.2, label="observed")
        ax.plot(
            centres, t.expected_counts(), color=COLORS[5], linestyle="--", linewidth=1.2, label="expected"
        )
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5)
        unit = " / expected std" if t.standardized else ""
        ax.set_xlabel(f"value{unit}")
        ax.set_ylabel("count per bin")
        extra = f"; {h.under:,} under, {h.over:,} over" if h.under or h.over else ""
        ax.set_title(f"{t.name} ({h.total:,} values{extra})", fontsize=9)
        ax.legend(fontsize=7, loc="lower center")
    fig.tight_layout()
    return _png(fig)


def init_qq(stats: list) -> bytes:
    """One panel per random tensor: histogram quantiles against the expected law's."""
    fig, axes = _grid(len(stats))
    for ax, t in zip(axes, stats):
        n = t.hist.total
        q = np.linspace(0.005, 0.995, 199)
        if n >= 100_000:
            q = np.concatenate([[1e-4, 1e-3], q, [1 - 1e-3, 1 - 1e-4]])
        obs = t.hist.quantiles(q)
        exp = t.unit_ppf(q)
        ok = np.isfinite(obs) & np.isfinite(exp)
        ax.plot(
            exp[ok], obs[ok], linestyle="none", marker="o", markersize=2.5, color=COLORS[2], label="observed"
        )
        lim = float(np.nanmax(np.abs(exp[ok]))) if ok.any() else 1.0
        ax.plot([-lim, lim], [-lim, lim], color=COLORS[0], linestyle="--", linewidth=1, label="y = x")
        ax.set_xlabel("expected quantile")
        ax.set_ylabel("observed quantile")
        ax.set_title(f"{t.name} QQ ({n:,} values)", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)


def init_layers(stats: list) -> bytes:
    """Per per-layer random tensor: std by layer against the expected std (top) and mean by layer
    with the +-6.1 standard-error band of the expected law (bottom)."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    n = len(stats)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 5.6), squeeze=False)
    for j, t in enumerate(stats):
        layers = sorted(k for k in t.layers if k is not None)
        ms = [t.layers[k] for k in layers]
        std = [m.std for m in ms]
        exp = [m.expected_std for m in ms]
        ax = axes[0][j]
        sband = [6.1 * e / math.sqrt(2 * m.n) for e, m in zip(exp, ms)]  # s.e. of a sample std
        ax.fill_between(
            layers,
            [e - b for e, b in zip(exp, sband)],
            [e + b for e, b in zip(exp, sband)],
            step="mid",
            facecolor="none",
            hatch="//",
            edgecolor=COLORS[7],
            label="expected +-6.1 s.e.",
        )
        ax.plot(layers, exp, drawstyle="steps-mid", color=COLORS[0], linestyle="--", label="expected std")
        ax.plot(layers, std, marker="o", color=COLORS[2], linestyle="-", label="observed std")
        ax.set_title(t.name, fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel("std")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        ax = axes[1][j]
        mean = [m.mean for m in ms]
        band = [6.1 * m.expected_std / math.sqrt(m.n) for m in ms]  # two-sided 1e-9
        ax.fill_between(
            layers,
            [-b for b in band],
            band,
            step="mid",
            facecolor="none",
            hatch="//",
            edgecolor=COLORS[7],
            label="expected +-6.1 s.e.",
        )
        ax.plot(layers, mean, marker="s", color=COLORS[5], linestyle="-", label="observed mean")
        ax.axhline(0.0, color=COLORS[0], linestyle="--", linewidth=1)
        ax.set_xlabel("layer")
        ax.set_ylabel("mean")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


# ---- compare ----------------------------------------------------------------------------------


def compare_std_ratios(tensors: list) -> bytes:
    """std / expected std per random tensor (verify.records.CompareTensor; bars hatched by
    verdict) and per layer for the per-layer tensors that are not exact/close."""
    plt = _plt()
    rnd = [t for t in tensors if t.std_ratio is not None]
    per_layer = [t for t in rnd if t.layers and t.verdict in ("distribution", "mismatch")]
    ncols = 2 if per_layer else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.0 * ncols, 3.6), squeeze=False)
    ax = axes[0][0]
    verdicts = ["exact", "close", "distribution", "mismatch"]
    for i, t in enumerate(rnd):
        k = verdicts.index(t.verdict) if t.verdict in verdicts else 3
        ax.bar(i, t.std_ratio, color=COLORS[k + 1], hatch=HATCHES[k], edgecolor=COLORS[0])
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=COLORS[k + 1], hatch=HATCHES[k], edgecolor=COLORS[0], label=v)
        for k, v in enumerate(verdicts)
    ]
    ax.axhline(1.0, color=COLORS[0], linestyle="--", linewidth=1)
    ax.set_xticks(range(len(rnd)), [t.name for t in rnd], rotation=30, fontsize=8)
    ax.set_ylabel("std / expected std")
    ax.set_yscale("log")
    ax.set_title("whole tensors", fontsize=9)
    ax.legend(handles=handles, fontsize=7)
    if per_layer:
        ax = axes[0][1]
        for i, t in enumerate(per_layer):
            layers = [r.layer for r in t.layers if r.std_ratio is not None]
            ratios = [r.std_ratio for r in t.layers if r.std_ratio is not None]
            ax.plot(layers, ratios, label=t.name, **style(i))
        ax.axhline(1.0, color=COLORS[0], linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel("std / expected std")
        ax.set_title("per layer (tensors not exact/close)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def rowcol_std(rc, *, layers: int) -> bytes:
    """std per row (all layers' rows in order, layer boundaries dotted) and per column."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 3.4))
    ax = axes[0]
    ax.plot(np.arange(rc.row_std.size), rc.row_std, color=COLORS[2], linewidth=0.8, label="observed")
    ax.axhline(rc.expected_std, color=COLORS[0], linestyle="--", linewidth=1, label="expected")
    if layers > 1:
        for b in range(1, layers):
            ax.axvline(b * rc.rows_per_layer, color=COLORS[7], linestyle=":", linewidth=0.8)
    ax.set_xlabel("row (layers in order)" if layers > 1 else "row")
    ax.set_ylabel("std")
    ax.set_title(f"{rc.tensor}: std per row", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(
        np.arange(rc.col_std.size),
        rc.col_std,
        color=COLORS[5],
        linewidth=0.8,
        linestyle="-.",
        label="observed",
    )
    ax.axhline(rc.expected_std, color=COLORS[0], linestyle="--", linewidth=1, label="expected")
    ax.set_xlabel("column")
    ax.set_ylabel("std")
    ax.set_title(f"{rc.tensor}: std per column", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


# ---- gradient flow ----------------------------------------------------------------------------


def gradflow_bars(rows: list, blocks: list, embed, expected_ratio) -> bytes:
    """Grouped bars of the gradient norm per layer and tensor (rows: verify.records.GradRow;
    log scale), and mean |x| of the residual stream after the embedding and each block."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    ax = axes[0]
    per_layer = [r for r in rows if r.layer is not None]
    names = list(dict.fromkeys(r.tensor for r in per_layer))
    layers = sorted({r.layer for r in per_layer})
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs, ys = [], []
        for r in per_layer:
            if r.tensor == name and r.grad_norm is not None and r.grad_norm > 0:
                xs.append(r.layer + (i - (len(names) - 1) / 2) * width)
                ys.append(r.grad_norm)
        ax.bar(
            xs,
            ys,
            width=width,
            color=COLORS[i % len(COLORS)],
            hatch=HATCHES[(i + i // len(COLORS)) % len(HATCHES)],  # (colour, hatch) unique up to 64
            edgecolor=COLORS[0],
            linewidth=0.3,
            label=name,
        )
    ax.set_yscale("log")
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("gradient norm")
    ax.set_title("gradient norm per layer", fontsize=9)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * (hi / lo) ** 0.4)  # headroom for the legend on the log axis
    ax.legend(fontsize=6, ncol=7, loc="upper center")
    ax = axes[1]
    labels = ["embed"] + [f"b{i}" for i in range(len(blocks))]
    vals = [embed if embed is not None else math.nan] + [b if b is not None else math.nan for b in blocks]
    ax.bar(range(len(vals)), vals, color=COLORS[7], hatch="//", edgecolor=COLORS[0])
    if expected_ratio is not None and embed:
        ax.axhline(
            embed * expected_ratio,
            color=COLORS[0],
            linestyle="--",
            linewidth=1,
            label="expected after the last block",
        )
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(vals)), labels, fontsize=7)
    ax.set_ylabel("mean |x|")
    ax.set_title("residual stream scale", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def width_sweep(sweep) -> bytes:
    """Coordinate check (verify.records.WidthSweep): mean |x| against width, log-log, one panel
    per step, one line per quantity (a width-independent parametrization gives flat lines)."""
    widths = sweep.widths
    scales = sweep.scales
    quantities = list(scales)
    steps = len(next(iter(scales.values()))) if scales else 0
    fig, axes = _grid(steps, ncols=min(steps, 4), size=(3.8, 3.2))
    for s, ax in enumerate(axes):
        for i, q in enumerate(quantities):
            ys = [math.nan if v is None else v for v in scales[q][s]]
            ax.plot(widths, ys, label=q, **style(i))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width C")
        ax.set_ylabel("mean |x|")
        ax.set_title("init" if s == 0 else f"after step {s}", fontsize=9)
        if s == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


# ---- ablation ---------------------------------------------------------------------------------


def ablation_curves(schemes: list, *, entropy_rate=None, target_loss=None) -> bytes:
    """Training loss (solid) and validation loss (dotted) per scheme (verify.records.AblateScheme):
    mean over seeds with the
    lo..hi band (hatched). Left: every step, log scale (bad inits start far above); right: the
    last two thirds of training, linear, where the schemes separate."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2))
    last = max((max(s.curve.step) for s in schemes if s.curve is not None and s.curve.step), default=0)
    zoom_from = last // 3
    for ax, zoom in zip(axes, (False, True)):
        ys = []
        for i, s in enumerate(schemes):
            st = style(i)
            for key, dotted in (("curve", False), ("val_curve", True)):
                c = getattr(s, key)
                keep = [k for k, step in enumerate(c.step if c else []) if not zoom or step >= zoom_from]
                if not keep or any(c.mean[k] is None for k in keep):
                    continue
                steps = [c.step[k] for k in keep]
                mean = [c.mean[k] for k in keep]
                ys += mean
                ax.plot(steps, mean, color=st["color"], linestyle=":" if dotted else st["linestyle"],
                        marker=st["marker"], markevery=max(1, len(steps) // 8), markersize=3 if dotted else 4,
                        label=f"{s.name} (val)" if dotted else s.name)
                if not dotted and c.lo and c.hi:
                    ax.fill_between(steps, [c.lo[k] for k in keep], [c.hi[k] for k in keep],
                                    facecolor="none", edgecolor=st["color"],
                                    hatch=HATCHES[(i + 1) % len(HATCHES)], linewidth=0)
        if entropy_rate is not None:
            ax.axhline(entropy_rate, color=COLORS[7], linestyle="-.", linewidth=1, label="entropy rate")
            ys.append(entropy_rate)
        if target_loss is not None:
            ax.axhline(target_loss, color=COLORS[0], linestyle=":", linewidth=1, label="target loss")
        ax.set_xlabel("step")
        if zoom:
            if ys:
                lo, hi = min(ys), max(ys)
                ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
            ax.set_title(f"steps {zoom_from}..{last}", fontsize=9)
        else:
            ax.set_yscale("log")
            ax.set_ylabel("loss (nats/token)")
            ax.set_title("all steps (log scale)", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def ablation_final(schemes: list) -> bytes:
    """Final loss per scheme: each seed's value (dots) and the interval lo..hi (bar)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 0.5 * len(schemes) + 1.5))
    for i, s in enumerate(schemes):
        f = s.final_loss
        if f.mean is None:
            continue
        lo = f.mean if f.lo is None else f.lo
        hi = f.mean if f.hi is None else f.hi
        ax.errorbar(
            [f.mean],
            [i],
            xerr=[[f.mean - lo], [hi - f.mean]],
            fmt=MARKERS[i % 8],
            color=COLORS[i % len(COLORS)],
            capsize=4,
        )
        vals = f.values
        ax.plot(vals, [i + 0.2] * len(vals), linestyle="none", marker="|", color=COLORS[0])
    ax.set_yticks(range(len(schemes)), [s.name for s in schemes], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("final loss: mean, interval lo..hi, seeds (|)")
    fig.tight_layout()
    return _png(fig)


def grad_norm_profiles(schemes: list) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    for i, s in enumerate(schemes):
        g = s.grad_norm_profile
        if g is None or not g.layer:
            continue
        st = style(i)
        ax.plot(g.layer, g.mean, label=s.name, **st)
        if g.lo and g.hi:
            ax.fill_between(
                g.layer,
                g.lo,
                g.hi,
                facecolor="none",
                edgecolor=st["color"],
                hatch=HATCHES[(i + 1) % len(HATCHES)],
                linewidth=0,
            )
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("gradient norm")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


# ---- bench ------------------------------------------------------------------------------------


def bench_bars(labels: list[str], tokens_per_s: list, mfu: list) -> bytes:
    """Throughput per configuration and device, and MFU where the device's peak is known."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 0.45 * len(labels) + 1.8))
    y = np.arange(len(labels))
    axes[0].barh(y, [t or 0.0 for t in tokens_per_s], color=COLORS[2], hatch="//", edgecolor=COLORS[0])
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("tokens / s")
    axes[0].set_xscale("log")
    axes[1].barh(
        y, [100 * m if m is not None else 0.0 for m in mfu], color=COLORS[1], hatch="..", edgecolor=COLORS[0]
    )
    for i, m in enumerate(mfu):
        if m is None:
            axes[1].text(0, i, " no peak known", va="center", fontsize=7)
    axes[1].set_yticks(y, [""] * len(labels))
    axes[1].invert_yaxis()
    axes[1].set_xlabel("MFU (%)")
    fig.tight_layout()
    return _png(fig)
