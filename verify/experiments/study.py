"""Init ablations: train every (scheme, seed) on the same data in the same order with the same
optimizer, and summarise each scheme over its seeds with 95% confidence intervals.

Honest by construction: runs differ only in their init (reference.init.init_tensors with the
scheme, its overrides and the init seed); the batches (verify.experiments.sources.batch), the
held-out set, AdamW and the number of steps are shared. Each run is written to
DIR/runs/<label>__seed<k>.json atomically when it finishes, so an interrupted ablation resumes
without redoing or losing finished runs; DIR/ablation.json holds the settings (a second call
with other settings on the same DIR is refused).

JSON: runs "gpt2-verify/ablate-run/1", DIR/summary.json "gpt2-verify/ablate/1":
    {"schema", "tool_version", "config", "data": {"kind", "description", "entropy_rate", ...},
     "steps", "seeds", "batch", "seq", "lr", "optimizer", "target_loss",
     "schemes": [{"name", "scheme", "overrides", "final_loss", "best_loss", "steps_to_target",
                  "diverged", "curve", "val_curve", "grad_norm_profile"}], "runs": [...]}
with intervals {"mean", "lo", "hi", "n", "values"} (Student t, 95%, over the seeds that did not
diverge) and curves {"step", "mean", "lo", "hi"}.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from gpt2_verify.reference.config import GPTConfig, parameter_table
from gpt2_verify.reference.overrides import parse_override
from gpt2_verify.reference.schemes import resolve
from gpt2_verify.reference.special import student_t_quantile

from ..atomic import write_text_atomic
from ..errors import InputError
from ..records import AblateRun, AblateSettings, AblateSummary
from .sources import Tokens, batch

RUN_SCHEMA = AblateRun.SCHEMA
SCHEMA = AblateSummary.SCHEMA
FINAL_FRACTION = 0.1  # final loss = mean train loss over the last 10% of steps


# ---- Student t intervals ----------------------------------------------------------------------

def interval(values: Sequence[float], *, level: float = 0.95) -> dict:
    """Mean with a Student-t confidence interval (lo = hi = mean for one value)."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    n = len(v)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0, "values": []}
    mean = sum(v) / n
    if n == 1:
        return {"mean": mean, "lo": mean, "hi": mean, "n": 1, "values": v}
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = student_t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n, "values": v}


# ---- settings and runs ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Arm:
    """One scheme with its overrides: 'gpt2', 'gpt2+attprojw,fcprojw.scale=10'."""

    scheme: str
    overrides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.scheme + (f"[{','.join(self.overrides)}]" if self.overrides else "")

    @classmethod
    def parse(cls, text: str, common: Sequence[str] = ()) -> "Arm":
        scheme, *sets = [p for p in text.strip().split("+") if p]
        return cls(scheme, tuple(sets) + tuple(common))


def parse_arms(text: str, common: Sequence[str] = ()) -> list[Arm]:
    """'gpt2,torch-default,gpt2+attprojw,fcprojw.scale=10': items separated by commas that start a
    scheme name (commas inside an override's tensor list stay with it)."""
    from gpt2_verify.reference.schemes import SCHEMES

    items: list[str] = []
    for piece in text.split(","):
        head = piece.split("+")[0].strip()
        if items and (head not in SCHEMES or piece.strip().startswith("+")) and "+" in items[-1]:
            items[-1] += "," + piece
        else:
            items.append(piece)
    arms = [Arm.parse(i, common) for i in items if i.strip()]
    for a in arms:
        if a.scheme not in SCHEMES:
            raise ValueError(f"--schemes: unknown scheme {a.scheme!r}; use {', '.join(SCHEMES)} "
                             "(overrides as scheme+TENSOR.FIELD=VALUE)")
        for o in a.overrides:
            parse_override(o)
    if len({a.label for a in arms}) != len(arms):
        raise ValueError(f"--schemes: an arm is listed twice ({text})")
    return arms


@dataclasses.dataclass(frozen=True)
class Settings:
    config: GPTConfig
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    steps: int
    batch: int
    seq: int
    lr: float
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    eval_every: int = 25
    log_every: int = 25  # gradient norms and activation scales every this many steps
    target_loss: float | None = None
    device: str = "cpu"
    profile: str = "llmc"  # the init's normal_ rules (reference.normal.PROFILES)
    data: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)

    def optimizer(self):
        from ..numerics.adamw import ADAMW

        # llm.c train_gpt2.cu's settings (betas (0.9, 0.95), eps 1e-8, matrices decay) with
        # this study's lr, weight decay and clip
        return dataclasses.replace(ADAMW["train_gpt2.cu"], lr=self.lr, weight_decay=self.weight_decay,
                                   grad_clip=self.grad_clip, name="ablate (train_gpt2.cu style)")

    def to_dict(self) -> dict:
        return {"config": self.config.as_dict(), "arms": [a.label for a in self.arms],
                "seeds": list(self.seeds), "steps": self.steps, "batch": self.batch, "seq": self.seq,
                "lr": self.lr, "weight_decay": self.weight_decay, "grad_clip": self.grad_clip,
                "eval_every": self.eval_every, "log_every": self.log_every,
                "target_loss": self.target_loss, "profile": self.profile, "data": self.data}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def run_file(arm: Arm, seed: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_.=," else "_" for c in arm.label)
    return f"runs/{safe}__seed{seed}.json"


def train_run(s: Settings, arm: Arm, seed: int, data: Tokens, *,
              on_step: Callable[[int, float], None] | None = None) -> dict:
    """One run: init `arm` with `seed`, `s.steps` AdamW steps on the shared batch order."""
    import torch
    from gpt2_verify.reference.init import init_tensors

    from ..numerics.model import TorchModel

    cfg = s.config
    t0 = time.monotonic()
    params = init_tensors(cfg, seed, s.profile, scheme=arm.scheme, overrides=arm.overrides)
    model = TorchModel(cfg, params, dtype="float32", device=s.device)
    opt = s.optimizer()
    vx, vy = batch(data.val, 0, batch_size=max(s.batch, 8), seq=s.seq)
    train_loss, val_loss, grad_norm, act_rms = [], [], [], []
    diverged_at = None

    def evaluate(step):
        with torch.no_grad():
            val_loss.append([step, float(model.loss(vx, vy))])

    for step in range(s.steps):
        x, y = batch(data.train, step, batch_size=s.batch, seq=s.seq)
        log = step % s.log_every == 0 or step == s.steps - 1
        if log:
            loss, acts = model.loss(x, y, keep_activations=True)
            act_rms.append([step, [float(a.double().square().mean().sqrt()) for a in acts.values()]])
        else:
            loss = model.loss(x, y)
        value = float(loss.detach())
        train_loss.append(value)
        if not math.isfinite(value):
            diverged_at = step
            break
        if step % s.eval_every == 0:
            evaluate(step)
        loss.backward()
        if log:
            norms = model.grad_norms()
            grad_norm.append([step, {k: v for k, v in norms.items()}])
        model.step(opt)
        if on_step:
            on_step(step, value)
    if diverged_at is None:
        evaluate(s.steps)
    return AblateRun.make(
        label=arm.label, scheme=arm.scheme, overrides=list(arm.overrides), seed=seed, settings=s.to_dict(),
        init=resolve(arm.scheme, cfg, profile=s.profile, overrides=arm.overrides).to_dict(),
        train_loss=[v if math.isfinite(v) else None for v in train_loss],
        val_loss=[[st, v if math.isfinite(v) else None] for st, v in val_loss],
        grad_norm=grad_norm, act_rms=act_rms, diverged=diverged_at is not None,
        diverged_at=diverged_at, wall_s=time.monotonic() - t0).to_dict()


# ---- summary ----------------------------------------------------------------------------------

def _curve(runs: list[dict], key: str, every: int = 1) -> dict:
    if key == "train":
        # each run's loss averaged over a trailing window (one batch's loss is noisy), then the
        # interval over runs at each step
        n = min(len(r["train_loss"]) for r in runs)
        window = max(1, n // 30)
        smooth = []
        for r in runs:
            c = np.cumsum(np.asarray(r["train_loss"][:n], dtype=np.float64))
            lo = np.maximum(np.arange(n) - window + 1, 0)
            smooth.append((c - np.concatenate([[0.0], c])[lo]) / (np.arange(n) - lo + 1))
        steps = list(range(0, n, every))
        cols = [[float(sm[i]) for sm in smooth] for i in steps]
    else:
        pts = [dict((st, v) for st, v in r["val_loss"]) for r in runs]
        steps = sorted(set.intersection(*(set(p) for p in pts))) if pts else []
        cols = [[p[st] for p in pts] for st in steps]
    ivs = [interval(c) for c in cols]
    out = {"step": steps, "mean": [i["mean"] for i in ivs], "lo": [i["lo"] for i in ivs],
           "hi": [i["hi"] for i in ivs]}
    if key == "train":
        out["smoothing"] = f"trailing mean over {window} steps"
    return out


def _final(run: dict) -> float:
    losses = run["train_loss"]
    k = max(1, int(round(len(losses) * FINAL_FRACTION)))
    return float(np.mean(losses[-k:]))


def _steps_to(run: dict, target: float | None) -> int | None:
    if target is None:
        return None
    for i, v in enumerate(run["train_loss"]):
        if v is not None and v <= target:
            return i
    return None


def summarize(s: Settings, runs: dict[tuple[str, int], dict], data: Tokens) -> dict:
    schemes = []
    L = s.config.layers
    layer_names = [t.name for t in parameter_table(s.config) if t.per_layer]
    for arm in s.arms:
        mine = [runs[(arm.label, seed)] for seed in s.seeds if (arm.label, seed) in runs]
        ok = [r for r in mine if not r["diverged"]]
        entry = {"name": arm.label, "scheme": arm.scheme, "overrides": list(arm.overrides),
                 "diverged": [r["seed"] for r in mine if r["diverged"]], "runs": len(mine)}
        entry["final_loss"] = interval([_final(r) for r in ok])
        entry["best_loss"] = interval([min(v for v in r["train_loss"]) for r in ok])
        entry["steps_to_target"] = None if s.target_loss is None else interval(
            [t for t in (_steps_to(r, s.target_loss) for r in ok) if t is not None])
        if s.target_loss is not None:
            entry["reached_target"] = sum(_steps_to(r, s.target_loss) is not None for r in ok)
        every = max(1, s.steps // 200)
        entry["curve"] = _curve(ok, "train", every) if ok else None
        entry["val_curve"] = _curve(ok, "val") if ok else None
        if ok:
            # per-layer gradient norm (all per-layer tensors of the layer together) at step 0, the
            # init's own profile; wte, wpe, lnfw, lnfb are not per layer (TensorSpec.per_layer)
            per_layer = [[math.sqrt(sum(r["grad_norm"][0][1][n][layer] ** 2 for n in layer_names))
                          for layer in range(L)] for r in ok if r["grad_norm"]]
            ivs = [interval([p[layer] for p in per_layer]) for layer in range(L)]
            entry["grad_norm_profile"] = {"layer": list(range(L)), "step": 0,
                                          "mean": [i["mean"] for i in ivs], "lo": [i["lo"] for i in ivs],
                                          "hi": [i["hi"] for i in ivs]}
        else:
            entry["grad_norm_profile"] = None
        schemes.append(entry)
    ref = next((e for e in schemes if e["name"] == "gpt2"), schemes[0] if schemes else None)
    for e in schemes:
        a, b = e["final_loss"], ref["final_loss"] if ref else None
        e["overlaps_reference"] = (None if e is ref or not a["n"] or not b or not b["n"]
                                   else not (a["hi"] < b["lo"] or b["hi"] < a["lo"]))
    return AblateSummary.make(
        config=s.config.as_dict(), data=data.to_dict(), steps=s.steps, seeds=list(s.seeds), batch=s.batch,
        seq=s.seq, lr=s.lr, optimizer=dataclasses.asdict(s.optimizer()), target_loss=s.target_loss,
        final_loss_definition=f"mean train loss over the last {FINAL_FRACTION:.0%} of steps",
        reference=ref["name"] if ref else None, schemes=schemes,
        runs=sorted(run_file(Arm(r["scheme"], tuple(r["overrides"])), r["seed"]) for r in runs.values())
    ).to_dict()


# ---- the ablation: resume, progress -----------------------------------------------------------

def run_ablation(s: Settings, data: Tokens, out_dir: str | os.PathLike, *, force: bool = False,
                 progress: bool | None = None, on_run_done: Callable[[dict], None] | None = None,
                 executor=None) -> dict:
    """Train every (arm, seed) not already in DIR/runs, writing each run's JSON as it finishes.
    `executor` (verify.executors, or a function making one when there are runs to train): None
    trains in this process one run after another with a per-step progress line; a Ray executor
    trains runs in parallel tasks, each run
    written when its task returns; a task that fails or whose worker dies loses only its run,
    which the next call redoes (the call raises CheckFailed naming the lost runs)."""
    from ..progress import Progress

    out = Path(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    settings_path = out / "ablation.json"
    mine = AblateSettings.make(digest=s.digest(), **s.to_dict()).to_dict()
    if settings_path.exists() and not force:
        try:
            old = json.loads(settings_path.read_text())
        except (OSError, ValueError) as e:
            raise InputError(settings_path, f"unreadable settings: {e}") from None
        if old.get("digest") != mine["digest"]:
            raise InputError(out, "holds an ablation with other settings; use a fresh -o DIR, or --force "
                                  "to replace it")
    write_text_atomic(settings_path, json.dumps(mine, indent=1) + "\n")
    runs: dict[tuple[str, int], dict] = {}
    todo = []
    for arm in s.arms:
        for seed in s.seeds:
            path = out / run_file(arm, seed)
            if path.exists() and not force:
                try:
                    rec = AblateRun.from_dict(json.loads(path.read_text())).to_dict()
                    if rec["settings"] == s.to_dict():
                        runs[(arm.label, seed)] = rec
                        continue
                except (OSError, ValueError):  # RecordError is a ValueError
                    pass  # a damaged or foreign file is redone
            todo.append((arm, seed))
    total = len(s.arms) * len(s.seeds)
    if executor is not None and todo:
        if callable(executor):  # made only when there is something to train (a rerun needs no cluster)
            executor = executor()
        failed = _run_on(executor, s, data, todo, runs, out, total=total, progress=progress,
                         on_run_done=on_run_done)
        summary = summarize(s, runs, data)
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
        if failed:
            from ..errors import CheckFailed

            lost = "; ".join(f"{arm.label} seed {seed}: {why}" for (arm, seed), why in failed)
            raise CheckFailed(f"{len(failed)} of {total} runs failed ({lost}); the others are saved in "
                              f"{out}: run the same command again to redo only the failed runs")
        return summary
    with Progress(len(todo) * s.steps, f"ablate ({len(runs)} runs done before)", enabled=progress,
                  unit="steps") as bar:
        for i, (arm, seed) in enumerate(todo, start=total - len(todo) + 1):
            head = f"run {i}/{total} {arm.label} seed {seed}"

            def on_step(step, loss, head=head):
                bar.label = f"{head} step {step + 1} loss {loss:.3f}"
                bar.update(1)

            bar.label = head
            rec = train_run(s, arm, seed, data, on_step=on_step)
            bar.update(s.steps - len(rec["train_loss"]))
            write_text_atomic(out / run_file(arm, seed), json.dumps(rec) + "\n")
            runs[(arm.label, seed)] = rec
            if on_run_done:
                on_run_done(rec)
    summary = summarize(s, runs, data)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _train_task(job: tuple) -> dict:
    """One run in a worker (a Ray task or a process): the same train_run, with the worker's
    torch thread count fixed to `threads` (Ray gives each task its CPUs through
    OMP_NUM_THREADS; torch's default elsewhere)."""
    s, arm, seed, data, threads = job
    if threads:
        import torch

        torch.set_num_threads(threads)
    return train_run(s, arm, seed, data)


def _run_on(executor, s: Settings, data: Tokens, todo: list, runs: dict, out: Path, *, total: int,
            progress: bool | None, on_run_done) -> list:
    """Runs as parallel tasks; returns [((arm, seed), why)] of the runs that failed."""
    from ..executors import Failed
    from ..progress import Progress

    threads = getattr(executor, "threads_per_task", None)
    jobs = [(s, arm, seed, data, threads) for arm, seed in todo]
    failed = []
    with Progress(len(todo), f"ablate ({len(runs)} runs done before)", enabled=progress, unit="runs") as bar:
        for job, rec in executor.as_done(_train_task, jobs):
            _, arm, seed, _, _ = job
            if isinstance(rec, Failed):
                failed.append(((arm, seed), rec.error))
                bar.label = f"{total - len(todo) + bar.done + 1}/{total} runs; {arm.label} seed {seed} FAILED"
            else:
                write_text_atomic(out / run_file(arm, seed), json.dumps(rec) + "\n")
                runs[(arm.label, seed)] = rec
                last = rec["train_loss"][-1]
                bar.label = (f"{total - len(todo) + bar.done + 1}/{total} runs; {arm.label} seed {seed} "
                             f"loss {last if last is None else format(last, '.3f')}")
                if on_run_done:
                    on_run_done(rec)
            bar.update(1)
    return failed


def render(summary: dict) -> str:
    """The terminal table: final loss per scheme with its interval, against the reference."""
    cfg = GPTConfig.from_dict(summary["config"])
    data = summary["data"]
    h = data.get("entropy_rate")
    lines = [f"ablation: {cfg.describe()}; {summary['steps']} steps, "
             f"B={summary['batch']} T={summary['seq']}, "
             f"lr {summary['lr']:g}, seeds {summary['seeds']}; gpt2-verify {summary['tool_version']}",
             f"data: {data['description']}",
             f"final loss: {summary['final_loss_definition']}; 95% Student-t intervals over seeds",
             "",
             f"{'scheme':<34} {'final loss [95% CI]':<27} {'best':>7} "
             + (f"{'gap to H':>9} " if h is not None else "")
             + (f"{'steps to ' + format(summary['target_loss'], '.3g'):>15} "
                if summary.get("target_loss") else "")
             + f"{'diverged':<9} vs {summary.get('reference')}"]
    for e in summary["schemes"]:
        f, b = e["final_loss"], e["best_loss"]
        ci = "-" if not f["n"] else f"{f['mean']:.4f} [{f['lo']:.4f}, {f['hi']:.4f}]"
        row = f"{e['name']:<34} {ci:<27} {b['mean'] if b['n'] else float('nan'):>7.4f} "
        if h is not None:
            row += f"{(f['mean'] - h) if f['n'] else float('nan'):>9.4f} "
        if summary.get("target_loss"):
            st = e["steps_to_target"]
            reached = f"{st['mean']:.0f} ({e.get('reached_target', 0)}/{f['n']})" if st and st["n"] \
                else "not reached"
            row += f"{reached:>15} "
        div = ",".join(map(str, e["diverged"])) or "-"
        vs = ("reference" if e["overlaps_reference"] is None else
              "overlaps" if e["overlaps_reference"] else "separated")
        lines.append(row + f"{div:<9} {vs}")
    return "\n".join(lines)
