"""`check_module`: a PyTorch GPT-2 module's forward, backward and training steps against the
float64 reference (verify.numerics.model), with the cause named when it fails.

    report = check_module(factory)             # factory(config dict) -> torch.nn.Module
    report.passed, print(report.render())

1. factory(config) builds the module; its parameters are mapped onto llm.c's 16 tensors
   (layout.map_module) and loaded with the probe weights (probe.probe_params); the values the
   module then holds are the reference's weights.
2. The module is called by its own convention (call.py) in eval() mode, once forward and
   backward: logits, its own loss and every gradient are judged normwise against the reference
   under the (device, precision) table (tolerances.py).
3. `steps` AdamW steps as its user would configure them (train_gpt2.py's configure_optimizers:
   decay on tensors with ndim >= 2; default ADAMW["train_gpt2.py"] with weight decay 0.1 so the
   scope matters), each step's loss judged against the reference trained the same way.
4. On a failure the reference is re-run as the common variants (variants.py) and the one the
   module matches is named; an untied lm_head is also seen from the parameters themselves.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from gpt2_verify.reference.config import TENSOR_NAMES, GPTConfig

from ..errors import InputError
from ..numerics.model import Arch
from ..records import ModuleRecord
from . import call as calls
from .compare import Check, normwise
from .layout import map_module
from .probe import probe_params
from .run import Outputs, module_loss, run_module, run_reference
from .tolerances import Tolerance, steps_limit, tolerance_for
from .variants import VARIANTS, Explanation, explain

DEFAULT_CONFIG = GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64)  # Vp 1024; ~1 s on 2 cores
DEFAULT_BATCH, DEFAULT_SEQ, DEFAULT_STEPS = 2, 16, 3
DEFAULT_WEIGHT_DECAY = 0.1  # nanoGPT train.py's; train_gpt2.py's 0.0 would hide the decay scope


def default_optimizer():
    """train_gpt2.py's AdamW (lr 1e-4, betas (0.9, 0.95), eps 1e-8, clip 1.0, decay on ndim >= 2)
    with weight decay DEFAULT_WEIGHT_DECAY."""
    from ..numerics.adamw import ADAMW

    return dataclasses.replace(ADAMW["train_gpt2.py"], weight_decay=DEFAULT_WEIGHT_DECAY,
                               name="train_gpt2.py, weight decay 0.1")


@dataclasses.dataclass
class ModuleReport:
    source: str
    config: GPTConfig
    tolerance: Tolerance
    device: str
    precision: str
    layout: str
    convention: str
    tied: bool
    absent: tuple[str, ...]
    vocab_rows: int
    batch: int
    seq: int
    seed: int
    checks: list[Check]
    step_checks: list[Check]
    step_losses: list[float]
    reference_step_losses: list[float]
    optimizer: object | None
    findings: list[str]  # failures the numbers do not show (structure)
    explanation: Explanation | None
    margins: dict[str, float] | None = None

    @property
    def passed(self) -> bool:
        return not self.findings and all(c.passed for c in self.checks + self.step_checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks + self.step_checks if not c.passed]

    def record(self) -> ModuleRecord:
        """The `gpt2-verify/module/1` record (verify.records.ModuleRecord), validated."""
        opt = self.optimizer
        return ModuleRecord.make(
            verdict="pass" if self.passed else "fail", source=self.source, config=self.config.as_dict(),
            device=self.device, precision=self.precision, tolerance=self.tolerance.to_dict(),
            layout=self.layout, convention=self.convention, tied=self.tied, absent=list(self.absent),
            vocab_rows=self.vocab_rows, tokens={"batch": self.batch, "seq": self.seq, "seed": self.seed},
            checks=[c.to_dict() for c in self.checks],
            steps={"optimizer": None if opt is None else dataclasses.asdict(opt),
                   "losses": [_finite(x) for x in self.step_losses],
                   "reference": [_finite(x) for x in self.reference_step_losses],
                   "checks": [c.to_dict() for c in self.step_checks]},
            findings=self.findings,
            cause=None if self.explanation is None else self.explanation.to_dict(),
            margins=None if self.margins is None else {k: _finite(v) for k, v in self.margins.items()})

    def to_dict(self) -> dict:
        return self.record().to_dict()

    def render(self) -> str:
        cfg, tol = self.config, self.tolerance
        head = "tied" if self.tied else "UNTIED"
        lines = [f"module {self.source}: layout {self.layout}, call {_CALL_TEXT[self.convention]}, "
                 f"{head} lm_head, wte {self.vocab_rows} rows"
                 + (f", no {'/'.join(self.absent)} (held at 0)" if self.absent else ""),
                 f"config {cfg.describe()}; probe weights seed {self.seed}; tokens B={self.batch} "
                 f"T={self.seq}; {self.device} {self.precision} (table {tol.key}: "
                 f"{'derived' if tol.derived else 'measured'})",
                 f"{'quantity':<14} {'error':>9} {'limit':>8} {'used':>8}  result"]
        for c in self.checks + self.step_checks:
            used = f"{c.used:.3g}%" if math.isfinite(c.used) else "NaN"
            lines.append(f"{c.quantity:<14} {_e(c.error):>9} {c.limit:>8.2g} {used:>8}  "
                         + ("ok" if c.passed else f"FAIL  {c.message()}"))
        if self.margins:
            lines.append(f"probe margins (each variant's distance from GPT-2 in {tol.key} tolerances):")
            lines.append("  " + ", ".join(f"{k} {_x(v)}" for k, v in self.margins.items()))
        for f in self.findings:
            lines.append(f"FAIL {f}")
        if self.explanation is not None:
            lines.append(f"cause: {self.explanation.describe()}")
        total = len(self.checks) + len(self.step_checks)
        lines.append(f"verdict: {'PASS' if self.passed else 'FAIL'} ("
                     + (f"all {total} checks within {tol.key}'s tolerance" if self.passed
                        else f"{len(self.failed())} of {total} checks failed"
                        + (f", {len(self.findings)} structural failure(s)" if self.findings else "")) + ")")
        return "\n".join(lines)


_CALL_TEXT = {"idx-targets": "logits, loss = model(idx, targets)",
              "hf": "model(input_ids=idx, labels=idx) (labels shifted inside)",
              "adapter": "--call adapter"}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _e(x: float) -> str:
    return f"{x:.2e}" if math.isfinite(x) else "NaN"


def _x(v: float) -> str:
    return f"{v:.3g}x" if math.isfinite(v) else "inf"


def compare_outputs(cand: Outputs, ref: Outputs, tol: Tolerance) -> list[Check]:
    """logits, loss and each gradient (wte over the module's rows; an untied head's too)."""
    lim = tol.limits
    checks = [normwise("logits", cand.logits, ref.logits, lim["logits"]),
              normwise("loss", cand.loss, ref.loss, lim["loss"])]
    for name in TENSOR_NAMES + ("lm_head",):
        if name in cand.grads and name in ref.grads:
            checks.append(normwise(f"d{name}", cand.grads[name], ref.grads[name], lim["grads"]))
    return checks


def worst(checks: list[Check]) -> float:
    """Worst error / limit over checks (inf for a NaN)."""
    return max((c.error / c.limit if math.isfinite(c.error) else math.inf for c in checks), default=0.0)


def variant_score(cfg, params, batch, cand: Outputs, tol: Tolerance, rows: int) -> Callable[[Arch], float]:
    def score(arch: Arch) -> float:
        try:
            ref = run_reference(cfg, params, batch, arch=arch, rows=rows)
        except ValueError:  # e.g. shifted positions at T = maxT
            return math.inf
        return worst(compare_outputs(cand, ref, tol))
    return score


def probe_margins(cfg, params, batch, tol: Tolerance, rows: int) -> dict[str, float]:
    """How many tolerances each variant moves the reference: > 1 means the probe makes it
    visible at this (device, precision)."""
    base = run_reference(cfg, params, batch, rows=rows)
    score = variant_score(cfg, params, batch, base, tol, rows)
    return {v.name: score(v.arch()) for v in VARIANTS if v.name != "untied"}


def _train_module(model, fn, batch, opt, steps: int, **kw) -> list[float]:
    """`steps` training steps the way train_gpt2.py's loop runs them: zero_grad, forward,
    backward, clip_grad_norm_, torch.optim.AdamW with configure_optimizers' groups."""
    import torch

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if opt.decays(n, ndim=p.dim())],
               "weight_decay": opt.weight_decay},
              {"params": [p for n, p in named if not opt.decays(n, ndim=p.dim())], "weight_decay": 0.0}]
    optim = torch.optim.AdamW([g for g in groups if g["params"]], lr=opt.lr,
                              betas=(opt.beta1, opt.beta2), eps=opt.eps)
    losses = []
    for _ in range(steps):
        optim.zero_grad(set_to_none=True)
        _, loss = module_loss(model, fn, batch, **kw)
        loss.backward()
        if opt.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
        optim.step()
        losses.append(float(loss.detach().to("cpu")))
    return losses


def _step_checks(losses: list[float], ref: list[float], limit: float, *, params: int,
                 lr: float) -> list[Check]:
    """Step i's loss after i updates, within the steps bound grown for model size, lr and i
    (tolerances.steps_limit: AdamW's sign flips part fp32 from float64 more at larger N)."""
    first = ref[0]
    return [normwise(f"step {i} loss", a, b, steps_limit(limit, step=i, params=params, lr=lr), denom=first)
            for i, (a, b) in enumerate(zip(losses, ref))]


def as_config(config) -> GPTConfig:
    """None (DEFAULT_CONFIG), a GPTConfig, an llm.c descriptor ("d12") or a config dict."""
    from gpt2_verify.reference.config import from_descriptor

    if config is None:
        return DEFAULT_CONFIG
    if isinstance(config, GPTConfig):
        return config
    if isinstance(config, str):
        return from_descriptor(config)
    if isinstance(config, dict):
        return GPTConfig.from_dict({"padded_vocab": None, **config})
    raise TypeError(f"config must be None, a GPTConfig, a descriptor such as 'd12' or a config dict, "
                    f"got {type(config).__name__}")


def check_module(factory: Callable, config: GPTConfig | str | dict | None = None, *, device: str = "cpu",
                 dtype: str = "fp32", steps: int = DEFAULT_STEPS, layout: str = "auto",
                 call: str | Callable = "auto", batch: int = DEFAULT_BATCH, seq: int = DEFAULT_SEQ,
                 seed: int = 42, optimizer=None, explain_failures: bool = True,
                 margins: bool = False, source: str | None = None) -> ModuleReport:
    """Judge `factory(config.as_dict())` (a torch.nn.Module) against the float64 reference;
    config: see `as_config`.

    dtype: "fp32" | "tf32" (CUDA) | "bf16" (autocast); call: "auto" | "idx-targets" | "hf" or an
    adapter fn(model, idx, targets) -> (logits, loss); optimizer: an AdamW (verify.numerics.
    adamw) for the `steps` training steps (default `default_optimizer()`). Raises InputError
    (bad input: the factory raises, the module cannot be mapped or called) with one line."""
    import torch

    cfg = as_config(config)
    tol = tolerance_for(device, dtype)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda: torch sees no CUDA device")
    model = _build(factory, cfg).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    pmap = map_module(model, cfg, layout=layout)
    convention = "adapter" if callable(call) else (calls.detect(model) if call == "auto" else call)
    if convention not in ("adapter",) + calls.CONVENTIONS[1:]:
        raise ValueError(f"call must be 'auto', {calls.CONVENTIONS[1:]} or a callable, got {call!r}")
    fn = calls.caller("idx-targets" if convention == "adapter" else convention,
                      call if callable(call) else None)
    if not 1 <= seq <= cfg.max_seq_len or batch < 1:
        raise ValueError(f"need batch >= 1 and 1 <= seq <= maxT={cfg.max_seq_len}, got {batch}, {seq}")
    tokens = calls.make_batch(cfg, "hf" if convention == "hf" else "idx-targets", batch=batch,
                              seq=seq, seed=seed)
    probe = probe_params(cfg, seed)
    held = pmap.load(probe)
    kw = dict(cfg=cfg, pmap=pmap, device=device, mode=dtype)
    cand = run_module(model, fn, tokens, **kw)
    ref = run_reference(cfg, held, tokens, rows=pmap.vocab_rows)
    checks = compare_outputs(cand, ref, tol)
    findings = []
    if not pmap.tied:
        findings.append(f"lm_head: {pmap.prefix}lm_head.weight is a parameter of its own, not "
                        f"transformer.wte.weight (GPT-2 ties them: one tensor, whose gradient is the sum "
                        f"of both uses, updated once); dwte is the embedding's share alone")
    opt = step_checks = None
    losses = ref_losses = []
    step_checks = []
    if steps:
        from ..numerics.model import train_steps

        opt = optimizer or default_optimizer()
        pmap.load(probe)
        losses = _train_module(model, fn, tokens, opt, steps, **kw)
        ref_losses = train_steps(cfg, held, tokens.tokens, tokens.targets, steps=steps, optimizer=opt)
        step_checks = _step_checks(losses, ref_losses, tol.limits["steps"], params=cfg.num_params, lr=opt.lr)
    report = ModuleReport(source or getattr(factory, "__name__", repr(factory)), cfg, tol, device, dtype,
                          pmap.layout, convention, pmap.tied, pmap.absent, pmap.vocab_rows, batch, seq,
                          seed, checks, step_checks, losses, ref_losses, opt, findings, None)
    score = None
    if margins:
        report.margins = probe_margins(cfg, held, tokens, tol, pmap.vocab_rows)
    if explain_failures and (findings or not all(c.passed for c in checks)):
        score = variant_score(cfg, held, tokens, cand, tol, pmap.vocab_rows)
        report.explanation = explain(score, baseline=worst(checks))
    return report


def _build(factory: Callable, cfg: GPTConfig):
    import torch

    try:
        model = factory(cfg.as_dict())
    except Exception as e:  # noqa: BLE001 - the user's factory: one line, exit 2
        raise InputError(None, f"the factory raised {type(e).__name__}: {e}") from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(None, f"the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model
