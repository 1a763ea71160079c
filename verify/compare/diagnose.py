"""Stream diagnosis: where in llm.c's mt19937 stream did a tensor's values come from?

Each normal_ call of n >= 16 values (llmc/rand.h, and PyTorch's CPU kernel) turns 16 uniforms
into 16 values: for t < 8, with u1 = 1 - k[t] / 2^24 and u2 = k[t+8] / 2^24 (k = the low 24 bits
of a 32-bit draw),

    v[t] = R cos(theta) std,  v[t+8] = R sin(theta) std,  theta = 2 pi u2,  R = sqrt(-2 ln u1).

So the angle atan2(v[t+8], v[t]) gives back k[t+8], whatever the std, and the radius gives
back std once k[t] is known. From the first 16 values of a slice (one call: wte, wpe, or one
layer of qkvw/attprojw/fcw/fcprojw) we recover 8 draws of 24 bits, search the stream for them
(all slices at once, one pass over the draws), and read the std off the radius. Comparing the
position found with where the reference makes that call names the bug:

    same position, std ratio r     -> the std is wrong (e.g. residual scaling 1/sqrt(2L) missing)
    another call's position        -> draw order differs ("fcw of layer 1 holds the values the
                                      reference draws for layer 0's fcw")
    shifted by the size of a call  -> a tensor drawn twice or skipped (c_proj re-drawn, ...)
    shifted by (Vp - V) C draws    -> wte drawn over Vp rows instead of V
    after the reference's last draw-> a second initialisation (nanoGPT's tied lm_head, c_proj redraw)
    where a PyTorch model draws it -> PyTorch code (verify.compare.torchmodel): constructor
                                      defaults first, then re-initialised; a slice at another of
                                      the model's calls names the step that went wrong (c_proj
                                      not re-drawn, a tensor given another's values)
    in another seed's stream       -> another seed
    nowhere                        -> another generator (or values transformed after drawing)

Every common seed's stream (COMMON_SEEDS, the reference seed first) is searched in one pass
each, STREAM_DEPTH times the model's parameter count deep (PyTorch models draw every tensor
once at construction and again at init, some a third time), at most MAX_HORIZON words.

Under another init scheme (reference.schemes) the same holds for every normal part: the calls
are SchemeInit.draws() (llm.c's order generalised), each with its law's std. Uniform and
truncated-normal draws have no Box-Muller pairs to invert, so schemes with them are not
traced (undiagnosable says why).

Two causes need no search: a transposed draw (the slice's first row holds the reference's first
column) and the n < 16 path, where llm.c discards the spare normal and PyTorch keeps it for the
next call (the slice then matches the other profile's values).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
from gpt2_verify.reference.config import GPTConfig, TensorSpec, parameter_table
from gpt2_verify.reference.init import Plan, init_tensors, std_arg
from gpt2_verify.reference.mt19937 import MT19937
from gpt2_verify.reference.normal import PROFILES, advance, draws_needed, normal_array
from gpt2_verify.reference.schemes import DEFAULT_SCHEME, Law, SchemeInit, resolve

from ..progress import Progress
from . import causes as std_causes
from .names import Names
from .tolerance import CLOSE_ATOL_STD, STORAGE_ROUNDING, close_bound
from .torchmodel import LABELS, PHASES, TorchCall, TorchModel
from .torchmodel import calls as torch_calls

COMMON_SEEDS = (0, 1, 42, 1234, 1337, 3407, 2024, 123, 7, 2**31 - 1)
STREAM_DEPTH = 3  # stream words searched per model parameter, in each seed's stream
MAX_HORIZON = 1 << 30  # at most this many words searched in one seed's stream
SWEEP_CHUNK = 1 << 23
TWO_PI = 2.0 * math.pi
K = float(1 << 24)

Key = tuple[str, "int | None"]


def slice_label(name: str, layer: int | None) -> str:
    return name if layer is None else f"{name} of layer {layer}"


@dataclasses.dataclass
class Location:
    seed: int
    position: int  # stream position (u32 draws consumed before the call) of the call's start
    std: float  # the std the values were drawn with, read off the radius


@dataclasses.dataclass
class Head:
    """The first 16 values of one normal_ call's slice, as the candidate holds them."""
    key: Key
    values: np.ndarray  # (16,) float64
    anchor: int  # t of the pair used to search (largest radius: most precise angle)
    k2: np.ndarray  # (8,) recovered low-24 draws at positions start + 8 + t
    tol: np.ndarray  # (8,) allowed |k2 error| per pair
    hyp: np.ndarray  # (8,) R * std per pair


def _head(key: Key, values: np.ndarray, dtype: str) -> Head | None:
    v = np.asarray(values, dtype=np.float64)
    if v.size < 16 or not np.isfinite(v).all():
        return None
    x, y = v[:8], v[8:16]
    hyp = np.hypot(x, y)
    if not (hyp > 0).all():
        return None
    theta = np.mod(np.arctan2(y, x), TWO_PI)
    k2 = np.rint(theta / TWO_PI * K).astype(np.int64) % (1 << 24)
    rel, absolute = STORAGE_ROUNDING.get(dtype, (2.0 ** -24, 0.0))
    # angle error: the close bound's absolute part (relative to the candidate's own scale,
    # median Rayleigh radius 1.18) over the radius, plus two roundings of each coordinate
    scale = float(np.median(hyp)) / 1.18
    dtheta = (CLOSE_ATOL_STD * scale + absolute) / hyp + 4 * (rel + 2.0 ** -23)
    tol = np.ceil(dtheta * K / TWO_PI).astype(np.int64) + 2
    return Head(key, v[:16], int(np.argmax(hyp)), k2, tol, hyp)


def _radius(k1: np.ndarray) -> np.ndarray:
    u1 = 1.0 - k1.astype(np.float64) / K
    return np.sqrt(-2.0 * np.log(u1 + 1e-12))


def _circ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a - b) % (1 << 24)
    return np.minimum(d, (1 << 24) - d)


def locate(heads: list[Head], seed: int, horizon: int, *, progress: bool | None = None
           ) -> dict[Key, Location]:
    """One pass over the first `horizon` draws of seed's stream: where each head's call starts."""
    found: dict[Key, Location] = {}
    if not heads:
        return found
    anchors = np.array([h.k2[h.anchor] for h in heads], dtype=np.int64)
    tols = np.array([h.tol[h.anchor] for h in heads], dtype=np.int64)
    order = np.argsort(anchors)
    sorted_k, sorted_tol = anchors[order], tols[order]
    max_tol = int(tols.max())
    stream = MT19937(seed)
    prev = np.empty(0, dtype=np.int64)  # the last 16 draws of the previous chunk
    base = 0  # stream position of buf[0]
    with Progress(horizon, f"stream search seed {seed}", enabled=progress) as bar:
        done = 0
        while done < horizon and len(found) < len(heads):
            n = min(SWEEP_CHUNK, horizon - done)
            new = (stream.u32(n) & np.uint32(0xFFFFFF)).astype(np.int64)
            buf = np.concatenate([prev, new])
            done += n
            bar.update(n)
            # candidate anchor positions q: buf[q] near some anchor key
            pos = np.searchsorted(sorted_k, buf)
            hit = np.zeros(buf.size, dtype=bool)
            for off in (-1, 0):
                j = np.clip(pos + off, 0, sorted_k.size - 1)
                hit |= np.abs(buf - sorted_k[j]) <= np.minimum(sorted_tol[j], max_tol)
            for q in np.flatnonzero(hit):
                for hi in _heads_near(sorted_k, sorted_tol, int(buf[q])):
                    h = heads[order[hi]]
                    if h.key in found:
                        continue
                    start = q - 8 - h.anchor  # index of the call's first draw in buf
                    if start < 0 or start + 16 > buf.size:
                        continue  # seen again whole in the next buffer (or before the stream)
                    loc = _verify(h, buf[start:start + 16], seed, base + start)
                    if loc is not None:
                        found[h.key] = loc
            keep = min(16, buf.size)
            base += buf.size - keep
            prev = buf[-keep:]
    return found


def _heads_near(sorted_k: np.ndarray, sorted_tol: np.ndarray, value: int) -> list[int]:
    lo = np.searchsorted(sorted_k, value - int(sorted_tol.max()), side="left")
    hi = np.searchsorted(sorted_k, value + int(sorted_tol.max()), side="right")
    return [i for i in range(lo, hi) if abs(int(sorted_k[i]) - value) <= int(sorted_tol[i])]


def _verify(h: Head, draws: np.ndarray, seed: int, start: int) -> Location | None:
    ok = _circ(draws[8:16], h.k2) <= h.tol
    if ok.sum() < 7:
        return None
    r = _radius(draws[:8])
    good = ok & (r > 1e-3)
    if good.sum() < 4:
        return None
    stds = h.hyp[good] / r[good]
    std = float(np.median(stds))
    if not np.all(np.abs(stds / std - 1) < 1e-2):
        return None
    return Location(seed, int(start), std)


# ---- the reference's calls ----------------------------------------------------------------------

@dataclasses.dataclass
class Call:
    key: Key
    spec: TensorSpec
    count: int
    start: int  # stream position
    draws: int
    law: Law | None = None  # the normal law drawn (its std)
    part: int = 0  # index of the scheme part in its tensor-layer
    offset: int = 0  # where the part starts in its tensor-layer slice (values)

    @property
    def std(self) -> float:
        return self.law.std


def _torch_explain(init: SchemeInit, key: Key, loc: Location, models: dict[str, list[TorchCall]],
                   slice_name) -> str | None:
    """The slice's values at a call of a modelled PyTorch init: which call, and what it means."""
    for kind, seq in models.items():
        hit = next((c for c in seq if c.start == loc.position and c.what == "normal"), None)
        if hit is None:
            continue
        where = (f"{LABELS[kind]} from torch.manual_seed({loc.seed}): stream position {loc.position:,}, "
                 f"{PHASES[hit.phase]} of {slice_name(*hit.key)}")
        drawn = f"drawn with std {loc.std:.4g}"
        if hit.key == key and hit.final:
            ok = abs(loc.std / hit.std - 1) < 1e-3
            if ok:
                return where + " (its final values: constructor defaults drawn first, then re-initialised)"
            fits = std_causes.fitting(init, key[0], key[1], loc.std, None)
            return (where + f", {drawn} = {loc.std / hit.std:.3g}x {hit.std:.4g}"
                    + (": " + "; or ".join(fits) if fits else ""))
        if hit.key == key:
            later = [c for c in seq if c.key == key and c.start > hit.start]
            return (where + f", {drawn}: a later draw of {LABELS[kind]} over this tensor "
                    f"({', '.join(PHASES[c.phase] for c in later)}) did not happen")
        return where + f": this tensor holds the values {LABELS[kind]} draws for {slice_name(*hit.key)}"
    return None


def undiagnosable(init: SchemeInit) -> str | None:
    """Why the stream diagnosis cannot trace `init`'s draws, or None when it can (every random
    part normal, at most one per tensor and layer)."""
    kinds = sorted({d.law.kind for d in init.draws()} - {"normal"})
    if kinds:
        return (f"stream diagnosis skipped: scheme {init.label} draws {' and '.join(kinds)} laws, and "
                "the diagnosis traces Box-Muller normal draws only")
    keys = [(d.name, d.layer) for d in init.draws()]
    if len(keys) != len(set(keys)):
        return (f"stream diagnosis skipped: scheme {init.label} draws several parts of one tensor and "
                "layer, which the diagnosis does not trace")
    return None


def reference_calls(cfg: GPTConfig, seed: int, profile: str, init: SchemeInit | None = None
                    ) -> tuple[list[Call], int, Plan]:
    """The scheme's normal_ calls (default gpt2: llm.c's) in draw order with their stream
    positions, the end position, and the plan (generator snapshots at each call)."""
    init = resolve(DEFAULT_SCHEME, cfg, profile=profile) if init is None else init
    plan = Plan(cfg, seed, profile, scheme=init)
    specs = {s.name: s for s in parameter_table(cfg)}
    calls = []
    for d in init.draws():
        start = plan.stream_at(d.name, d.layer, d.index).position
        calls.append(Call((d.name, d.layer), specs[d.name], d.count, start, 0, d.law, d.index, d.start))
    if not calls:
        raise ValueError(f"scheme {init.label} draws nothing: there is no stream to trace")
    last = calls[-1]
    stream = plan.stream_at(*last.key, last.part)
    advance(stream, last.count, std_arg(last.law, profile), profile=profile)
    end = stream.position
    for a, b in zip(calls, calls[1:]):
        a.draws = b.start - a.start
    last.draws = end - last.start
    return calls, end, plan


# ---- causes -----------------------------------------------------------------------------------

@dataclasses.dataclass
class SliceDiagnosis:
    key: Key
    cause: str
    location: Location | None = None
    model: str | None = None  # the PyTorch init whose call the values sit at, if any

    def to_dict(self) -> dict:
        d = {"tensor": self.key[0], "layer": self.key[1], "cause": self.cause, "model": self.model}
        if self.location is not None:
            d.update(stream_seed=self.location.seed, stream_position=self.location.position,
                     drawn_std=self.location.std)
        return d


def _std_note(init: SchemeInit, call: Call, std: float) -> str:
    """The std read off the radius, against the expected one, with the causes it fits exactly."""
    expected = call.std
    ratio = std / expected
    if abs(ratio - 1) < 1e-3:
        return ""
    note = f"drawn with std {std:.4g} = {ratio:.3g}x expected {expected:.4g}"
    fits = std_causes.fitting(init, call.key[0], call.key[1], std, None)
    return note + (": " + "; or ".join(fits) if fits else "")


def _shift_note(delta: int, calls: list[Call], cfg: GPTConfig) -> str:
    C = cfg.channels
    if cfg.padded_vocab != cfg.vocab and delta == draws_needed(cfg.padded_vocab * C) - draws_needed(
            cfg.vocab * C):
        return "wte drawn over Vp rows instead of V (the padded rows consumed draws)"
    sizes = {}
    for c in calls:
        sizes.setdefault(c.draws, c.key)
    if delta in sizes:
        return (f"one extra normal_ call of {slice_label(*sizes[delta])}'s size ({delta:,} draws) "
                f"before it: a tensor drawn twice or an extra draw")
    if -delta in sizes:
        return f"a call of {slice_label(*sizes[-delta])}'s size ({-delta:,} draws) skipped before it"
    return f"the stream is shifted by {delta:+,} draws at this call"


def diagnose(cfg: GPTConfig, *, seed: int, profile: str, heads: dict[Key, np.ndarray],
             bad: list[Key], dtype: str, candidate_slice: Callable[[Key], np.ndarray],
             progress: bool | None = None, init: SchemeInit | None = None, names: Names | None = None,
             torch_model: TorchModel | None = None, wte_rows: int | None = None) -> list[SliceDiagnosis]:
    """Causes for the slices in `bad` (not exact/close), in draw order.

    heads: key -> the candidate's first 16 values of every slice (of its random part);
    candidate_slice(key) -> all values of one slice's random part (used for the transposed-draw
    and n < 16 checks, small slices only). init: the resolved scheme (default gpt2); it must
    pass undiagnosable(). names: how the file names tensors; torch_model: the PyTorch inits
    the file may come from (default: nanoGPT's and Hugging Face's, tied, with biases);
    wte_rows: wte's rows in the file (default V).
    """
    init = resolve(DEFAULT_SCHEME, cfg, profile=profile) if init is None else init
    names = names or Names()
    label = names.slice
    torch_model = torch_model or TorchModel()
    models = {k: torch_calls(k, cfg, wte_rows or cfg.vocab, biases=torch_model.biases, tied=torch_model.tied)
              for k in torch_model.kinds} if init.scheme.name == DEFAULT_SCHEME else {}
    why_not = undiagnosable(init)
    if why_not:
        raise ValueError(why_not)
    gpt2 = init.scheme.name == DEFAULT_SCHEME
    calls, end, plan = reference_calls(cfg, seed, profile, init)
    by_key = {c.key: c for c in calls}
    by_start = {c.start: c for c in calls}
    out: list[SliceDiagnosis] = []
    search: list[Head] = []
    pending: list[Key] = []
    other_profile = [p for p in PROFILES if p != profile][0]
    other_ref = None
    for key in bad:
        call = by_key[key]
        name, layer = key
        # n < 16: llm.c's and PyTorch's small-tensor paths differ (spare normal kept or not)
        if call.count < 16:
            if other_ref is None:
                other_ref = init_tensors(cfg, seed, other_profile, scheme=resolve(
                    init.scheme, cfg, profile=other_profile, overrides=init.overrides))
            want = _slice_of(other_ref[name], cfg, call)
            got = candidate_slice(key).astype(np.float32)
            bound = close_bound(want, call.std, dtype)
            if got.shape == want.shape and np.all(np.abs(got.astype(np.float64) - want) <= bound):
                rule = ("PyTorch's (spare normal kept for the next call)" if other_profile == "torch"
                        else "llm.c's (spare normal discarded)")
                out.append(SliceDiagnosis(key, f"{label(*key)} has {call.count} values (< 16): "
                                               f"it follows {rule} small-tensor rule, not {profile}'s"))
            else:
                out.append(SliceDiagnosis(key, f"{label(*key)} has {call.count} values (< 16, "
                                               f"the two-uniforms path): values not from the reference "
                                               f"stream"))
            continue
        # a transposed draw: the slice's first row is the reference's first column
        spec = call.spec
        how = _transposed(cfg, key, spec, call, heads.get(key), plan, profile, dtype)
        if how:
            out.append(SliceDiagnosis(key, f"{label(*key)} is the reference's draw transposed: {how}"))
            continue
        h = _head(key, heads.get(key, np.empty(0)), dtype)
        if h is None:
            out.append(SliceDiagnosis(key, f"{label(*key)}: too few finite values to trace"))
            continue
        search.append(h)
        pending.append(key)
    if search:
        depth = STREAM_DEPTH * (sum(s.numel for s in parameter_table(cfg)) + cfg.vocab * cfg.channels)
        horizon = min(max(depth, 2 * end, end + (1 << 20)), MAX_HORIZON)
        # first the places a bug usually puts a call: where the reference makes some call, or
        # right after its last draw; the whole stream is swept only for what is left
        starts = {c.start: plan.stream_at(*c.key, c.part) for c in calls}
        tail = plan.stream_at(*calls[-1].key, calls[-1].part)
        advance(tail, calls[-1].count, std_arg(calls[-1].law, profile), profile=profile)
        starts[end] = tail
        firsts = {p: (st.u32(16) & np.uint32(0xFFFFFF)).astype(np.int64) for p, st in starts.items()}
        found = {}
        for h in search:
            for p, draws in firsts.items():
                loc = _verify(h, draws, seed, p)
                if loc is not None:
                    found[h.key] = loc
                    break
        missing = [h for h in search if h.key not in found]
        for s in dict.fromkeys((seed, *COMMON_SEEDS)):  # one pass over each seed's stream
            if missing:
                found.update(locate(missing, s, horizon, progress=progress))
                missing = [h for h in missing if h.key not in found]
        for key in pending:
            out.append(_explain(init, key, found.get(key), by_key, by_start, end, calls, seed, horizon,
                                gpt2, label, models))
    order = {c.key: i for i, c in enumerate(calls)}
    out.sort(key=lambda d: order[d.key])
    return out


def _transposed(cfg, key, spec, call, got, plan, profile, dtype) -> str | None:
    """Is the candidate slice's first row the first column of the reference's draw, seen as
    (in, out) (a transposed draw) or as (out, in) (stored transposed, then reshaped)?"""
    if not spec.per_layer or got is None or got.size < 16:
        return None
    rows, cols = spec.shape[1:]
    if call.offset != 0 or call.count != rows * cols:
        return None  # a part of the slice (muP's key/value rows): no whole matrix to transpose
    ref = normal_array(plan.stream_at(*key, call.part), call.count, std_arg(call.law, profile),
                       profile=profile)
    for shape, how in (((cols, rows), f"drawn as ({cols}, {rows}) = (in, out) and stored (out, in)"),
                       ((rows, cols), "stored transposed (column-major), then reshaped")):
        if shape[0] < 16:
            continue
        col = ref.reshape(shape)[:16, 0].astype(np.float64)
        if np.all(np.abs(got[:16].astype(np.float64) - col) <= close_bound(col, call.std, dtype)):
            return how
    return None


def _slice_of(tensor: np.ndarray, cfg: GPTConfig, call: Call) -> np.ndarray:
    name, layer = call.key
    flat = tensor.reshape(-1) if layer is None else tensor[layer].reshape(-1)
    return flat[call.offset:call.offset + call.count].astype(np.float64)


def _explain(init, key, loc, by_key, by_start, end, calls, seed, horizon, gpt2, slice_name,
             models) -> SliceDiagnosis:
    label = slice_name(*key)
    if loc is None:
        seeds = ", ".join(str(s) for s in dict.fromkeys((seed, *COMMON_SEEDS)))
        return SliceDiagnosis(key, f"{label}: values not found in the first {horizon:,} words of the "
                                   f"mt19937 stream (torch.manual_seed, llm.c's manual_seed) of any of "
                                   f"the seeds {seeds}: another generator or seed, or the values were "
                                   f"transformed after drawing")
    torch_text = _torch_explain(init, key, loc, models, slice_name)
    if torch_text is not None:
        return SliceDiagnosis(key, f"{label}: {torch_text}", loc, torch_text.split(" from ", 1)[0])
    note = _std_note(init, by_key[key], loc.std)
    if loc.seed != seed:
        text = f"{label} comes from mt19937 seed {loc.seed}'s stream, not seed {seed}'s"
        if loc.position:
            text += f" (stream position {loc.position:,}, where no modelled init draws it)"
    elif loc.position == by_key[key].start:
        text = f"{label} is drawn from the right stream position"
        if not note:
            text += " with the right std, but later values differ (block or tail handling)"
    elif loc.position in by_start:
        other = by_start[loc.position].key
        text = f"{label} holds the values the reference draws for {slice_name(*other)}"
        if other[0] == key[0] and other[1] != key[1]:
            text += ": layers swapped or shifted"
        else:
            text += ": tensors drawn in another order"
    elif loc.position >= end:
        text = (f"{label} was drawn after all of the reference's draws (stream position "
                f"{loc.position:,}, the reference ends at {end:,}): a second initialisation "
                f"after the first pass (e.g. a tied lm_head drawn after wte, or c_proj re-drawn)")
    else:
        delta = loc.position - by_key[key].start
        text = f"{label}: {_shift_note(delta, calls, init.cfg)}"
    if note:
        text += "; " + note
    return SliceDiagnosis(key, text, loc)
