"""`gpt2-verify gradflow`: gradient flow, activation scales, width sweep, and a candidate's
gradients against the float64 reference under a tolerance table.

    gpt2-verify gradflow d12                       reference init, random tokens B=4 T=64
    gpt2-verify gradflow --model ckpt.bin          any weights file verify.formats.model opens
                                                   (--heads NH when the file does not say)
    gpt2-verify gradflow --model m.bin --grads gpt2_124M_debug_state.bin --tolerance llmc-test_gpt2.c
    gpt2-verify gradflow --layers 2 --channels 64 --heads 4 --vocab 1000 --widths 32,64,128

Without --grads the gradients checked are the reference's (float64) for the model; with --grads
they are the candidate's: an llm.c debug state (its x, y and logits/loss are used) or an npz /
state dict / safetensors file of gradients keyed like parameters (computed on
random_tokens(cfg, batch=B, seq=T, seed=N) - the same --batch/--seq/--seed here; `--tokens-out
FILE.npz` writes that batch as int32 arrays x and y). Gradients from another batch are named as
such ("the tokens differ from the reference's", from the rows of dwte and dwpe the batch
reaches) instead of being compared value by value.
--seed seeds both the reference init (mt19937, like llm.c) and the random tokens.
--widths runs the width sweep with --sweep-init (llmc: std 0.02 at every width, as llm.c does).

Output: a per-tensor table, a per-layer table, the comparison table (with --grads), findings,
and the verdict line last. Exit 0 pass, 1 a check failed, 2 bad input. `--json -` prints only
the JSON.

JSON schema "gpt2-verify/gradflow/1":
    {"schema": "gpt2-verify/gradflow/1",
     "verdict": "pass" | "fail",
     "config": cfg.as_dict(),
     "model": {"source": "reference" | PATH, "format", "seed", "profile", "random_init": bool},
     "tokens": {"batch", "seq", "seed" | null, "from": "random_tokens" | PATH},
     "loss": float (reference, float64),
     "gradients": {"source": "reference-float64" | PATH, "passed", "loss", "loss_bound":
                   {"ln_v", "logit_std", "positions", "centre", "half_width", "lo", "hi"} | null,
                   "optimizer": {...}, "rows": [{"tensor", "layer", "numel", "grad_norm",
                   "nonfinite", "first_nonfinite", "zero", "param_norm", "update_rms",
                   "update_norm", "update_ratio", "vs_neighbours"}], "tensors": [{"tensor", "grad_norm",
                   "update_ratio", "norm_spread", "ratio_spread", "min_layer", "max_layer"}],
                   "findings": [...]},
     "activations": {"embed", "blocks": [mean |x| per block], "last_over_embed",
                     "expected_last_over_embed", "passed", "findings"},
     "numerics": null | {"table": {"name", "source", "logits", "loss", "grads", "wte_rows"},
                         "passed", "results": [{"quantity", "numel", "max_abs", "max_rel",
                         "worst_index", "mismatched", "used_percent", "passed", "rule",
                         "double_passes"}], "findings"},
     "width_sweep": null | {"widths", "layers", "steps", "init", "slope_limit", "passed",
                            "expected_slopes": {quantity: predicted slope},
                            "scales": {quantity: [step][width]}, "slopes": {quantity: [step]},
                            "losses": [width][step], "findings"},
     "findings": [{"section", "check", "reason", "tensor", "layer", "severity"}]}
Non-finite numbers are written as null.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from ..errors import EXIT_CHECK_FAILED, EXIT_OK, InputError
from ..formats.llmc_header import DEBUG_STATE_MAGIC
from .common import add_config_args, check_seed, config_from_args, emit_json


def _load_model(args):
    """(cfg, params float32 llm.c layout, model info dict)."""
    if args.model:
        if args.descriptor or any(v is not None for v in (args.layers, args.channels)):
            raise InputError(None, "give either --model FILE or a descriptor/custom config, not both "
                                   "(--heads is allowed: files without a config lack it)")
        from ..formats.model import open_model

        with open_model(args.model, heads=args.heads) as mf:
            if mf.heads_assumed and args.heads is None:
                raise InputError(args.model, f"the file does not record the number of attention "
                                             f"heads, which the forward pass needs; give --heads "
                                             f"(a divisor of C={mf.config.channels})")
            problems = list(mf.shape_problems) + [f"{k}: {v}" for k, v in mf.unusable.items()]
            if mf.missing:
                problems.insert(0, f"missing {', '.join(mf.missing[:3])}"
                                   + (" ..." if len(mf.missing) > 3 else ""))
            if problems:
                raise InputError(args.model, f"cannot run a forward pass: {problems[0]}")
            cfg = mf.config
            params = {s.name: np.array(mf.tensor(s.name), dtype=np.float32) for s in cfg.tensors()}
            info = {"source": str(args.model), "format": mf.format, "seed": None, "profile": None}
        params["wte"] = _pad_wte(cfg, params["wte"], args.model)
        return cfg, params, info
    from gpt2_verify.reference.init import init_tensors

    cfg = config_from_args(args)
    check_seed(args.seed)
    info = {"source": "reference", "format": None, "seed": args.seed, "profile": args.profile}
    return cfg, init_tensors(cfg, args.seed, args.profile), info


def _pad_wte(cfg, wte: np.ndarray, source) -> np.ndarray:
    if wte.shape == (cfg.padded_vocab, cfg.channels):
        return wte
    if wte.shape != (cfg.vocab, cfg.channels):
        raise InputError(source, f"wte has shape {wte.shape}, expected ({cfg.padded_vocab}, "
                                 f"{cfg.channels}) or ({cfg.vocab}, {cfg.channels})")
    out = np.zeros((cfg.padded_vocab, cfg.channels), dtype=wte.dtype)
    out[: cfg.vocab] = wte
    return out


def _is_debug_state(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except IsADirectoryError:
        return False
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    return len(head) == 4 and struct.unpack("<i", head)[0] == DEBUG_STATE_MAGIC


def _load_candidate(path: str, cfg) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """(candidate dict for compare_numerics, x, y) - x, y only from a debug state."""
    if _is_debug_state(path):
        from ..formats.debug_state import read_debug_state

        ds = read_debug_state(path, cfg)  # validates header, size and tokens
        return ({"logits": ds.logits, "loss": float(ds.loss), "grads": ds.grad_tensors(cfg)},
                ds.x, ds.y)
    from ..formats.model import open_model

    with open_model(path, config=cfg) as mf:
        if mf.missing:
            raise InputError(path, f"gradient file lacks {', '.join(mf.missing[:3])}")
        grads = {s.name: np.array(mf.tensor(s.name), dtype=np.float32) for s in cfg.tensors()}
    grads["wte"] = _pad_wte(cfg, grads["wte"], path)
    return {"grads": grads}, None, None


def _write_tokens(path: str, x: np.ndarray, y: np.ndarray) -> None:
    """The batch as an npz with int32 arrays x (B, T) and y (B, T) (y[t] = x[t + 1]'s token)."""
    import io

    from ..atomic import atomic_output

    buf = io.BytesIO()
    np.savez(buf, x=np.asarray(x, dtype=np.int32), y=np.asarray(y, dtype=np.int32))
    try:
        with atomic_output(path) as fh:
            fh.write(buf.getvalue())
    except OSError as e:
        raise InputError(path, f"cannot write: {e.strerror or e}") from None


def _widths(text: str) -> list[int]:
    try:
        ws = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise InputError(None, f"--widths {text!r}: give comma-separated integers, e.g. 32,64,128") \
            from None
    if len(set(ws)) < 3 or any(w <= 0 or w % 16 for w in ws):
        raise InputError(None, f"--widths {text!r}: give at least 3 distinct positive multiples of "
                               f"16 (head size 16), e.g. 32,64,128")
    return ws


def cmd_gradflow(args) -> int:
    from ..numerics import gradflow as G
    from ..numerics.model import forward_backward, random_tokens

    cfg, params, model_info = _load_model(args)
    random_init = not args.trained
    model_info["random_init"] = random_init
    widths = _widths(args.widths) if args.widths else None
    if args.steps < 0:
        raise InputError(None, f"--steps {args.steps}: give 0 or more")
    check_seed(args.seed)
    candidate = x = None
    if args.grads:
        candidate, x, y = _load_candidate(args.grads, cfg)
    if x is None:
        seq = args.seq if args.seq is not None else min(64, cfg.max_seq_len)
        if args.batch < 1 or not 1 <= seq <= cfg.max_seq_len:
            raise InputError(None, f"--batch {args.batch} --seq {seq}: need B >= 1 and "
                                   f"1 <= T <= maxT = {cfg.max_seq_len}")
        x, y = random_tokens(cfg, batch=args.batch, seq=seq, seed=args.seed)
        tokens = {"batch": args.batch, "seq": seq, "seed": args.seed, "from": "random_tokens"}
    else:
        tokens = {"batch": int(x.shape[0]), "seq": int(x.shape[1]), "seed": None,
                  "from": str(args.grads)}
    B, T = tokens["batch"], tokens["seq"]

    ref = forward_backward(cfg, params, x, y, dtype="float64", keep_activations=True)
    if candidate is None:
        grads, loss, gsource = ref.grads, ref.loss, "reference-float64"
    else:
        grads, loss, gsource = candidate["grads"], candidate.get("loss", ref.loss), str(args.grads)
    grad_report = G.check_gradients(cfg, grads, loss=loss, params=params, positions=B * T, seq=T,
                                    random_init=random_init)
    acts = G.activation_scales(cfg, params, x, random_init=random_init, forward=ref)
    if args.tokens_out:
        _write_tokens(args.tokens_out, x, y)
    token_finding = None
    if candidate is not None and tokens["from"] == "random_tokens":
        token_finding = G.token_mismatch(cfg, ref.grads, candidate["grads"], x, y)
    numerics = (G.compare_numerics(ref, candidate, tolerances=args.tolerance)
                if candidate is not None and token_finding is None else None)
    sweep = (G.width_sweep(widths=widths, layers=cfg.layers, steps=args.steps,
                           init=args.sweep_init, seed=args.seed) if widths else None)

    findings = [("gradients", f) for f in grad_report.findings]
    findings += [("activations", f) for f in acts.findings]
    if token_finding is not None:
        findings.append(("numerics", token_finding))
    if numerics is not None:
        findings += [("numerics", f) for f in numerics.findings]
    if sweep is not None:
        findings += [("width_sweep", f) for f in sweep.findings]
    failed = [f for _, f in findings if f.severity == "fail"]
    verdict = "fail" if failed else "pass"

    if args.json:
        from ..records import GradflowRecord

        out = GradflowRecord.make(
            verdict=verdict, config=cfg.as_dict(), model=model_info, tokens=tokens,
            loss=G.json_float(ref.loss),
            gradients={"source": gsource, **grad_report.to_dict()}, activations=acts.to_dict(),
            numerics=None if numerics is None else numerics.to_dict(),
            width_sweep=None if sweep is None else sweep.to_dict(),
            findings=[{"section": s, **f.to_dict()} for s, f in findings])
        emit_json(args.json, out.to_dict())
        if args.json == "-":
            return EXIT_CHECK_FAILED if failed else EXIT_OK

    src = model_info["source"] if args.model else "reference init"
    print(f"gradflow {cfg.describe()}; {src}; tokens B={B} T={T} "
          + (f"seed {args.seed}" if tokens["seed"] is not None else f"from {args.grads}"))
    line = f"loss {ref.loss:.6f} (float64 reference)"
    if grad_report.loss_bound is not None:
        b = grad_report.loss_bound
        line += f"; random-init bound [{b.lo:.4f}, {b.hi:.4f}] (ln V {b.ln_v:.4f})"
    print(line)
    print(f"gradients: {gsource}; update = first {grad_report.optimizer.name or 'AdamW'} step "
          f"(lr {grad_report.optimizer.lr:g})")
    _print_tensor_table(grad_report)
    _print_layer_table(cfg, grad_report, acts)
    if numerics is not None:
        _print_numerics(numerics)
    if sweep is not None:
        _print_sweep(sweep)
    warns = [(s, f) for s, f in findings if f.severity != "fail"]
    for s, f in [(s, f) for s, f in findings if f.severity == "fail"] + warns:
        print(f"{'FAIL' if f.severity == 'fail' else 'warn'} {s}/{f.check}: {f.reason}")
    print(f"verdict: {verdict.upper()} ({len(failed)} failure(s), {len(warns)} warning(s))")
    return EXIT_CHECK_FAILED if failed else EXIT_OK


def _e(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.2e}"


def _print_tensor_table(rep) -> None:
    print(f"{'tensor':<9} {'grad norm':>10} {'upd/param':>10} {'norm spread':>12} "
          f"{'(min, max layer)':>17} {'ratio spread':>12}")
    for t in rep.tensors:
        span = "-" if t.min_layer is None else f"({t.min_layer}, {t.max_layer})"
        ns = "-" if t.norm_spread is None else f"{t.norm_spread:.2f}x"
        rs = "-" if t.ratio_spread is None else f"{t.ratio_spread:.2f}x"
        print(f"{t.tensor:<9} {_e(t.grad_norm):>10} {_e(t.update_ratio):>10} {ns:>12} {span:>17} "
              f"{rs:>12}")


def _print_layer_table(cfg, rep, acts) -> None:
    print(f"{'layer':<6} {'act |x|':>9} {'grad norm':>10} {'upd/param':>10}  "
          f"weakest / strongest tensor vs neighbour layers")
    print(f"{'emb':<6} {acts.embed:>9.3e} {'':>10} {'':>10}")
    for layer in range(cfg.layers):
        rs = [r for r in rep.rows if r.layer == layer]
        gn = math.sqrt(sum(r.grad_norm ** 2 for r in rs))
        pn = math.sqrt(sum((r.param_norm or 0.0) ** 2 for r in rs))
        un = math.sqrt(sum((r.update_norm or 0.0) ** 2 for r in rs))
        nb = [r for r in rs if r.vs_neighbours is not None]
        span = ""
        if nb:
            lo = min(nb, key=lambda r: r.vs_neighbours)
            hi = max(nb, key=lambda r: r.vs_neighbours)
            span = f"{lo.tensor} {lo.vs_neighbours:.2f}x / {hi.tensor} {hi.vs_neighbours:.2f}x"
        print(f"{layer:<6} {acts.blocks[layer]:>9.3e} {_e(gn):>10} {_e(un / pn if pn else None):>10}"
              f"  {span}")
    if acts.expected_ratio is not None:
        print(f"residual stream last block / embedding: {acts.ratio:.3g}x "
              f"(GPT-2 scaling predicts {acts.expected_ratio:.3g}x for these weights, no scaling "
              f"{acts.unscaled_ratio:.3g}x; limit {acts.level_limit:.3g}x)")


def _print_numerics(rep) -> None:
    print(f"compare with {rep.table.name}: {rep.table.source}")
    print(f"{'quantity':<9} {'max |a-b|':>10} {'rel':>9} {'mismatch':>9} {'used':>8}  rule")
    for r in rep.results:
        used = f"{r.used:.3g}%" if math.isfinite(r.used) else "inf"
        print(f"{r.quantity:<9} {_e(r.max_abs):>10} {_e(r.max_rel):>9} {r.mismatched:>9} "
              f"{used:>8}  {r.rule.describe()}" + ("  (2x passes)" if r.double_passes else ""))


def _print_sweep(sw) -> None:
    print(f"width sweep (init {sw.init}, L={sw.layers}, widths {', '.join(map(str, sw.widths))}, "
          f"steps 0..{sw.steps}): slope of log mean |x| vs log width, and what the init's weights "
          f"predict (allowed +-{sw.slope_limit:g})")
    for q, s in sw.slopes.items():
        print(f"  {q:<8} " + " ".join(f"{v:+.2f}" for v in s) + f"   predicted {sw.expected[q]:+.2f}")


def register(sub) -> None:
    from gpt2_verify.reference.schemes import SCHEMES

    from ..numerics.gradflow import SWEEP_INITS, TOLERANCES

    q = sub.add_parser("gradflow", help="gradient flow, activation scales and width sweep; "
                                        "compare a candidate's gradients with the reference")
    add_config_args(q)
    q.add_argument("--model", metavar="FILE", help="weights file (llm.c checkpoint, state dict, "
                                                   "safetensors, npz, HF dir) instead of the "
                                                   "reference init")
    q.add_argument("--grads", metavar="FILE", help="candidate gradients: llm.c debug state, or "
                                                   "npz/state dict/safetensors keyed like params")
    q.add_argument("--batch", type=int, default=4, help="B for the random tokens (4)")
    q.add_argument("--seq", type=int, default=None, help="T for the random tokens (min(64, maxT))")
    q.add_argument("--tokens-out", metavar="FILE.npz",
                   help="write the batch the reference used (npz: int32 x and y, (B, T)); compute a "
                        "candidate's --grads on exactly these tokens")
    q.add_argument("--tolerance", choices=sorted(TOLERANCES), default="fp32-cpu",
                   help="tolerance table for --grads (fp32-cpu)")
    q.add_argument("--trained", action="store_true",
                   help="not a random init: skip the initial-loss and residual-level checks")
    q.add_argument("--widths", metavar="W,W,W", help="also run the width sweep at these widths")
    q.add_argument("--sweep-init", choices=sorted(SWEEP_INITS) + list(SCHEMES), default="llmc",
                   help="init of the width sweep: llmc (= the gpt2 scheme), fan-in, fixed-1, or any init "
                        "scheme (gpt2-verify params --scheme S)")
    q.add_argument("--steps", type=int, default=3, help="AdamW steps of the width sweep (3)")
    q.add_argument("--json", metavar="PATH|-", help="write the JSON report ('-': stdout, only JSON)")
    q.set_defaults(func=cmd_gradflow)
