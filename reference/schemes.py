"""Init schemes: each of llm.c's 16 tensors, given the config and layer, gets a law.

A law (reference.laws) is one of normal(std), uniform(-bound, bound), truncnormal(std, cut at
+-k std) or a constant. A scheme is data: a name, one formula, a citation and a rule (`Scheme.rule`) that
maps a tensor to its law. `resolve(name, cfg)` applies the rule to every tensor and layer and
the user's overrides on top (`--set wpe.std=0.01`, reference.overrides); `reference.init` draws
the result.

Fans follow PyTorch's convention (torch.nn.init._calculate_fan_in_and_fan_out: a weight of
shape (out, in) has fan_in = in, fan_out = out), on llm.c's (out, in) weights:

    tensor     per-layer shape   fan_in   fan_out
    wte        (V, C)            C        V          an embedding: (num_embeddings, dim)
    wpe        (maxT, C)         C        maxT
    qkvw       (3C, C)           C        3C
    attprojw   (C, C)            C        C          output projection (residual branch)
    fcw        (4C, C)           C        4C
    fcprojw    (C, 4C)           4C       C          output projection (residual branch)
    biases     (out,)            the fan_in of their layer's weight (nn.Linear's bias bound)

wte's padded rows V..Vp are zero under every scheme (llm.c never draws them) and count for
nothing in its fans.

Drawing (all schemes, both profiles) uses the one mt19937 stream, one call per random part
in llm.c's draw order generalised: wte, wpe, then for each layer its tensors in checkpoint
order (ln1w ... fcprojb), then lnfw, lnfb; a tensor is drawn only where its law is random.
Under `gpt2` that is exactly llm.c's order (wte, wpe, per layer qkvw, attprojw, fcw,
fcprojw). How each law turns stream words into float32 values, exactly:

- normal(std): reference.normal.normal_ with the profile's rules (llm.c's normal_ in
  llmc/rand.h, or PyTorch's CPU normal_), std rounded to float32 as the profile does.
- uniform(-a, a): one u32 per value; k = its low 24 bits (llm.c's randfloat32 and PyTorch's
  uniform_real_distribution<float> both mask these), a32 = float32(a). llmc profile:
  RN32(a32 * (k - 2^23) / 2^23): (k - 2^23) / 2^23 is exact in float32, so one rounding; these
  are the bits of PyTorch's CPU `torch.empty(n).uniform_(-a, a)` after manual_seed with its
  AVX2 / AVX512 kernels. torch profile: PyTorch's scalar kernel (ATEN_CPU_CAPABILITY=default),
  RN32(RN32(k 2^-24 * 2 a32) - a32), two roundings (up to half the values 1 ulp apart).
  llm.c's own uniform_ (llmc/rand.h: randfloat32() * (to - from) + from in float) gives the
  llmc rule's bits when gcc contracts it into an FMA (-march=native on an FMA CPU, as llm.c's
  Makefile builds) and the torch rule's without FMA.
- truncnormal(std, k): standard normals z from consecutive blocks of 16 words with llm.c's
  Box-Muller (reference.normal.box_muller16, the llmc profile's n >= 16 transform at std 1);
  values with |z| <= k (compared in float64) are kept in order, the rest rejected; value =
  RN32(z * float32(std)). The call consumes whole blocks up to the one holding its n-th kept
  value; the remainder of that block is discarded. (PyTorch's trunc_normal_ inverts the CDF
  with erfinv, whose float bits are libm's; rejection keeps the bits machine-independent.)
- constant: no draws.

Scheme parameters are real numbers in float64 (Python floats; math.sqrt is correctly
rounded, so they are the same on every machine); drawing rounds them to float32 once.
Under `gpt2` the stds are llm.c's float32 arithmetic exactly (reference.normal.init_std).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterator, Mapping, Sequence

from .config import BASE_STD, GPTConfig, parameter_table
from .laws import ZERO, Law, Part, constant, normal, truncnormal, uniform
from .normal import check_profile, init_std
from .overrides import Override, parse_overrides

OUTPUT_PROJECTIONS = ("attprojw", "fcprojw")  # write into the residual stream
WEIGHTS = ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw")
EMBEDDINGS = ("wte", "wpe")
BIAS_OF = {"qkvb": "qkvw", "attprojb": "attprojw", "fcb": "fcw", "fcprojb": "fcprojw"}
LAYERNORM = {"ln1w": 1.0, "ln1b": 0.0, "ln2w": 1.0, "ln2b": 0.0, "lnfw": 1.0, "lnfb": 0.0}


# ---- fans -------------------------------------------------------------------------------------

def fans(cfg: GPTConfig, name: str) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight (PyTorch's convention on llm.c's (out, in) layout); a bias
    gets its weight's."""
    name = BIAS_OF.get(name, name)
    C = cfg.channels
    table = {"wte": (C, cfg.vocab), "wpe": (C, cfg.max_seq_len), "qkvw": (C, 3 * C),
             "attprojw": (C, C), "fcw": (C, 4 * C), "fcprojw": (4 * C, C)}
    if name not in table:
        raise ValueError(f"{name} has no fans: weights are {tuple(table)} (and their biases)")
    return table[name]


def rows_of(cfg: GPTConfig, name: str) -> tuple[int, int]:
    """(rows, values per row) of one layer's slice of tensor `name`."""
    spec = {s.name: s for s in parameter_table(cfg)}[name]
    shape = spec.shape[1:] if spec.per_layer else spec.shape
    per_row = 1
    for s in shape[1:]:
        per_row *= s
    return shape[0], per_row


# ---- schemes ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Site:
    """What a scheme's rule sees: one tensor of one layer."""

    cfg: GPTConfig
    name: str
    layer: int | None
    profile: str
    params: Mapping[str, float]

    @property
    def fan_in(self) -> int:
        return fans(self.cfg, self.name)[0]

    @property
    def fan_out(self) -> int:
        return fans(self.cfg, self.name)[1]


Rule = Callable[[Site], "Law | list[Part] | None"]  # None: the tensor's default (LN 1/0, bias 0)


@dataclasses.dataclass(frozen=True)
class Scheme:
    name: str
    formula: str
    citation: str
    rule: Rule
    params: Mapping[str, float] = dataclasses.field(default_factory=dict)  # defaults, e.g. base_width
    short: Mapping[str, str] = dataclasses.field(default_factory=dict)  # role -> the formula in a few words

    def short_formula(self, name: str) -> str | None:
        """The std (or bound) formula of tensor `name` in a few words (reports), None for a
        tensor the scheme leaves at its default (LayerNorm 1/0, biases 0)."""
        return self.short.get(role_of(name))


def role_of(name: str) -> str:
    """embedding | projection (residual output) | weight | bias | layernorm."""
    if name in EMBEDDINGS:
        return "embedding"
    if name in OUTPUT_PROJECTIONS:
        return "projection"
    if name in WEIGHTS:
        return "weight"
    return "bias" if name in BIAS_OF else "layernorm"


def _gpt2(site: Site):
    if site.name not in WEIGHTS:
        return None
    spec = {s.name: s for s in parameter_table(site.cfg)}[site.name]
    return normal(float(init_std(site.cfg, spec, site.profile)))


def _torch_default(site: Site):
    if site.name in EMBEDDINGS:
        return normal(1.0)  # nn.Embedding.reset_parameters: init.normal_(weight)
    if site.name in WEIGHTS or site.name in BIAS_OF:
        if site.name in BIAS_OF:  # nn.Linear.reset_parameters: bound = 1 / math.sqrt(fan_in)
            return uniform(1 / math.sqrt(site.fan_in))
        # the weight: kaiming_uniform_(a=math.sqrt(5)), evaluated as torch.nn.init does (the same
        # 1/sqrt(fan_in) in real numbers; the double can differ by an ulp, so follow it exactly)
        gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
        return uniform(math.sqrt(3.0) * (gain / math.sqrt(site.fan_in)))
    return None


def _xavier(kind: str) -> Rule:
    def rule(site: Site):
        if site.name not in WEIGHTS:
            return None
        # torch.nn.init.xavier_normal_ / xavier_uniform_ with gain 1, evaluated as they do:
        # std = sqrt(2 / (fan_in + fan_out)), the uniform bound sqrt(3) * std (= sqrt(6 / ...))
        std = 1.0 * math.sqrt(2.0 / float(site.fan_in + site.fan_out))
        return normal(std) if kind == "normal" else uniform(math.sqrt(3.0) * std)
    return rule


KAIMING_GAIN = math.sqrt(2.0)


def _kaiming(kind: str) -> Rule:
    def rule(site: Site):
        if site.name not in WEIGHTS:
            return None
        std = KAIMING_GAIN / math.sqrt(site.fan_in)  # mode fan_in
        return normal(std) if kind == "normal" else uniform(math.sqrt(3.0) * std)
    return rule


def _small_init(site: Site):
    if site.name not in WEIGHTS:
        return None
    C, L = site.cfg.channels, site.cfg.layers
    if site.name in OUTPUT_PROJECTIONS:
        return normal(2.0 / (L * math.sqrt(C)))  # wang_init_method: 2 / n_layers / sqrt(dim)
    return normal(math.sqrt(2.0 / (5.0 * C)))  # small_init_init_method: sqrt(2 / (5 dim))


OLMO_CUTOFF = 3.0


def _olmo_mitchell(site: Site):
    if site.name not in WEIGHTS:
        return None
    if site.name in EMBEDDINGS:
        std = 1.0 / math.sqrt(site.cfg.channels)  # d = d_model
    elif site.name in OUTPUT_PROJECTIONS:
        std = 1.0 / math.sqrt(2.0 * site.fan_in * (site.layer + 1))
    else:
        std = 1.0 / math.sqrt(site.fan_in)
    return truncnormal(std, OLMO_CUTOFF)


def _mup(site: Site):
    if site.name not in WEIGHTS:
        return None
    C, L = site.cfg.channels, site.cfg.layers
    base = site.params["base_width"]
    if site.name in EMBEDDINGS:
        return normal(BASE_STD)  # input weights: variance constant in width
    std = BASE_STD * math.sqrt(base / C)  # hidden weights: variance ~ 1 / fan_in, equal at C = base
    if site.name in OUTPUT_PROJECTIONS:
        std /= math.sqrt(2.0 * L)  # GPT-2's residual scaling, kept
    if site.name == "qkvw":
        # zero query (TP5 appendix D.2): q's rows [0, C) of each layer's (3C, C) are zero
        return [Part(0, C, ZERO, fixed=True), Part(C, 3 * C, normal(std))]
    return normal(std)


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("gpt2", "N(0, 0.02) for wte, wpe, qkvw, fcw; N(0, 0.02 / sqrt(2L)) for attprojw and fcprojw; "
                   "LayerNorm 1/0, biases 0",
           "Radford et al. 2019 (GPT-2), as llm.c's gpt_build_from_descriptor (train_gpt2.cu) and "
           "train_gpt2.py's _init_weights draw it", _gpt2,
           short={"embedding": "0.02", "weight": "0.02", "projection": "0.02/sqrt(2L)"}),
    Scheme("torch-default", "what untouched PyTorch modules give: nn.Embedding N(0, 1) (wte, wpe); nn.Linear "
                            "weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)); LayerNorm 1/0",
           "torch.nn.Embedding / torch.nn.Linear reset_parameters (kaiming_uniform_ with a=sqrt(5)). "
           "With a tied lm_head the survivor depends on the tie: nanoGPT assigns the Linear's tensor to "
           "wte (U), Hugging Face the Embedding's (N(0, 1)); this scheme takes the embedding's",
           _torch_default, short={"embedding": "nn.Embedding's N(0, 1)",
                                  **dict.fromkeys(("weight", "projection", "bias"),
                                                  "nn.Linear's U(+-1/sqrt(fan_in))")}),
    Scheme("xavier-normal", "every weight N(0, sqrt(2 / (fan_in + fan_out))); LayerNorm 1/0, biases 0",
           "Glorot & Bengio 2010, 'Understanding the difficulty of training deep feedforward neural "
           "networks'; torch.nn.init.xavier_normal_ (gain 1)", _xavier("normal"),
           short=dict.fromkeys(("embedding", "weight", "projection"), "sqrt(2/(fan_in+fan_out))")),
    Scheme("xavier-uniform", "every weight U(-a, a), a = sqrt(6 / (fan_in + fan_out)); "
                             "LayerNorm 1/0, biases 0",
           "Glorot & Bengio 2010; torch.nn.init.xavier_uniform_ (gain 1)", _xavier("uniform"),
           short=dict.fromkeys(("embedding", "weight", "projection"), "bound sqrt(6/(fan_in+fan_out))")),
    Scheme("kaiming-normal", "every weight N(0, sqrt(2) / sqrt(fan_in)); LayerNorm 1/0, biases 0",
           "He et al. 2015, 'Delving deep into rectifiers'; torch.nn.init.kaiming_normal_ (mode fan_in). "
           "Gain sqrt(2), the ReLU gain: He et al. derive it for ReLU, torch.nn.init.calculate_gain has no "
           "GELU entry, and GELU matches ReLU away from 0, so sqrt(2) is what kaiming_normal_'s default "
           "(leaky_relu, a=0) gives and what GELU models that call it get", _kaiming("normal"),
           short=dict.fromkeys(("embedding", "weight", "projection"), "sqrt(2/fan_in)")),
    Scheme("kaiming-uniform", "every weight U(-a, a), a = sqrt(6 / fan_in) (std sqrt(2 / fan_in)); "
                              "LayerNorm 1/0, biases 0",
           "He et al. 2015; torch.nn.init.kaiming_uniform_ (mode fan_in, gain sqrt(2) as kaiming-normal)",
           _kaiming("uniform"),
           short=dict.fromkeys(("embedding", "weight", "projection"), "bound sqrt(6/fan_in)")),
    Scheme("small-init", "wte, wpe, qkvw, fcw N(0, sqrt(2 / (5C))); attprojw, fcprojw N(0, 2 / (L sqrt(C))) "
                         "('wang'); LayerNorm 1/0, biases 0",
           "Nguyen & Salazar 2019, 'Transformers without Tears'; GPT-NeoX init_functions.py "
           "small_init_init_method and wang_init_method", _small_init,
           short={"embedding": "sqrt(2/(5C))", "weight": "sqrt(2/(5C))", "projection": "2/(L sqrt(C))"}),
    Scheme("olmo-mitchell", "every weight TN(0, 1/sqrt(fan_in), cut at 3 std), embeddings 1/sqrt(C); "
                            "attprojw, fcprojw 1/sqrt(2 fan_in (layer + 1)); LayerNorm 1/0, biases 0",
           "OLMo (Groeneveld et al. 2024) init_weights with InitFnType.mitchell, cutoff_factor 3 "
           "(olmo/initialization.py)", _olmo_mitchell,
           short={"embedding": "1/sqrt(C), cut at 3 std", "weight": "1/sqrt(fan_in), cut at 3 std",
                  "projection": "1/sqrt(2 fan_in (layer+1)), cut at 3 std"}),
    Scheme("mup", "muP init part at base width W0 (base_width): wte, wpe N(0, 0.02); qkvw, fcw N(0, 0.02 "
                  "sqrt(W0/C)); attprojw, fcprojw N(0, 0.02 sqrt(W0/C) / sqrt(2L)); the query rows of qkvw "
                  "zero; LayerNorm 1/0, biases 0. Equals gpt2 (but for the zero query) at C = W0",
           "Yang et al. 2022, 'Tensor Programs V' (muP), Table 3 and appendix D.2 (zero query, zero "
           "readout). "
           "Not included, because they are not an init: muP's forward multipliers (attention 1/d "
           "instead of 1/sqrt(d), the output logit multiplier 1/width_mult) and its per-layer learning "
           "rates. The readout is not zeroed: llm.c's lm_head is tied to wte, which must stay an "
           "input embedding", _mup, {"base_width": 256.0},
           short={"embedding": "0.02", "weight": "0.02 sqrt(W0/C)",
                  "projection": "0.02 sqrt(W0/C)/sqrt(2L)"}),
)}
DEFAULT_SCHEME = "gpt2"


def scheme_names() -> list[str]:
    return list(SCHEMES)


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise ValueError(f"unknown init scheme {name!r}; use one of {', '.join(SCHEMES)}")
    return SCHEMES[name]


# ---- a resolved scheme ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Draw:
    """One draw call: a random part of tensor `name` (layer `layer`), `count` values, starting
    `start` values into that layer's slice."""

    name: str
    layer: int | None
    index: int  # position among the tensor-layer's parts
    start: int
    count: int
    law: Law


class SchemeInit:
    """A scheme applied to one config (and profile), with overrides: the parts of every tensor."""

    def __init__(self, scheme: Scheme, cfg: GPTConfig, *, profile: str = "llmc",
                 overrides: Sequence[str | Override] = ()):
        self.scheme, self.cfg, self.profile = scheme, cfg, profile
        self.overrides = parse_overrides(overrides)
        params = dict(scheme.params)
        for o in self.overrides:
            if not o.tensors:
                if o.field not in params:
                    known = ", ".join(params) or "none"
                    raise ValueError(f"--set {o.text!r}: scheme {scheme.name} has no parameter "
                                     f"{o.field!r} (its parameters: {known})")
                if not o.value > 0:
                    raise ValueError(f"--set {o.text!r}: {o.field} must be positive")
                params[o.field] = o.value
        self.params = params
        self._parts: dict[tuple[str, int | None], tuple[Part, ...]] = {}
        for spec in parameter_table(cfg):
            for layer in (range(cfg.layers) if spec.per_layer else (None,)):
                self._parts[(spec.name, layer)] = self._resolve(spec.name, layer)

    @property
    def label(self) -> str:
        """The scheme name plus its overrides, e.g. gpt2[attprojw.scale=10]."""
        if not self.overrides:
            return self.scheme.name
        return f"{self.scheme.name}[{','.join(o.text for o in self.overrides)}]"

    def _resolve(self, name: str, layer: int | None) -> tuple[Part, ...]:
        rows, _ = rows_of(self.cfg, name)
        drawn_rows = self.cfg.vocab if name == "wte" else rows
        got = self.scheme.rule(Site(self.cfg, name, layer, self.profile, self.params))
        if got is None:
            got = constant(LAYERNORM.get(name, 0.0))
        parts = [Part(0, drawn_rows, got)] if isinstance(got, Law) else list(got)
        for o in self.overrides:
            if name in o.tensors:
                parts = [p if p.fixed else dataclasses.replace(p, law=o.apply(p.law)) for p in parts]
        if drawn_rows < rows:  # wte's padded rows V..Vp
            parts.append(Part(drawn_rows, rows, ZERO, fixed=True))
        return tuple(parts)

    def parts(self, name: str, layer: int | None = None) -> tuple[Part, ...]:
        if (name, layer) not in self._parts:
            raise ValueError(f"no tensor {name!r} at layer {layer!r} (per-layer tensors take 0..L-1, "
                             "wte/wpe/lnfw/lnfb take None)")
        return self._parts[(name, layer)]

    def moments(self, name: str) -> tuple[float, float]:
        """(mean, std) of the whole tensor `name` (every layer and part, wte's padded rows too)
        under its laws: a mixture, E x^2 = sum n_i (sd_i^2 + mean_i^2) / N."""
        rows, per_row = rows_of(self.cfg, name)
        spec = {s.name: s for s in parameter_table(self.cfg)}[name]
        n = s1 = s2 = 0.0
        for layer in (range(self.cfg.layers) if spec.per_layer else (None,)):
            for p in self.parts(name, layer):
                k = (p.hi - p.lo) * per_row
                n += k
                s1 += k * p.law.mean
                s2 += k * (p.law.sd ** 2 + p.law.mean ** 2)
        mean = s1 / n
        return mean, math.sqrt(max(s2 / n - mean * mean, 0.0))

    def draws(self) -> Iterator[Draw]:
        """Every draw call in order (see the module docstring)."""
        specs = parameter_table(self.cfg)
        top = [s for s in specs if not s.per_layer and s.name in EMBEDDINGS]
        per_layer = [s for s in specs if s.per_layer]
        tail = [s for s in specs if not s.per_layer and s.name not in EMBEDDINGS]
        order = [(s.name, None) for s in top]
        order += [(s.name, layer) for layer in range(self.cfg.layers) for s in per_layer]
        order += [(s.name, None) for s in tail]
        for name, layer in order:
            _, per_row = rows_of(self.cfg, name)
            for i, part in enumerate(self.parts(name, layer)):
                if part.law.random:
                    yield Draw(name, layer, i, part.lo * per_row, (part.hi - part.lo) * per_row, part.law)

    def layer_groups(self, name: str) -> list[tuple[list, tuple[Part, ...]]]:
        """(layers, parts) with consecutive layers of equal parts folded together; [None] for a
        tensor without layers."""
        spec = {s.name: s for s in parameter_table(self.cfg)}[name]
        groups: list[tuple[list, tuple[Part, ...]]] = []
        for layer in (range(self.cfg.layers) if spec.per_layer else [None]):
            parts = self.parts(name, layer)
            if groups and groups[-1][1] == parts:
                groups[-1][0].append(layer)
            else:
                groups.append(([layer], parts))
        return groups

    def law_table(self) -> list[dict]:
        """One row per tensor (per layer where the law varies with the layer): the params table."""
        out = []
        for spec in parameter_table(self.cfg):
            _, per_row = rows_of(self.cfg, spec.name)
            for group_layers, parts in self.layer_groups(spec.name):
                layer_text = (None if group_layers == [None] else
                              f"{group_layers[0]}" if len(group_layers) == 1 else
                              f"{group_layers[0]}-{group_layers[-1]}")
                out.append({"tensor": spec.name, "layers": layer_text, "shape": list(spec.shape),
                            "parts": [{"rows": [p.lo, p.hi], "values": (p.hi - p.lo) * per_row,
                                       "fixed": p.fixed, "law": p.law.to_dict(),
                                       "describe": p.law.describe()} for p in parts]})
        return out

    def to_dict(self) -> dict:
        return {"scheme": self.scheme.name, "label": self.label, "profile": self.profile,
                "overrides": [o.text for o in self.overrides], "params": dict(self.params),
                "formula": self.scheme.formula, "citation": self.scheme.citation}


def resolve(scheme: str | Scheme | SchemeInit = DEFAULT_SCHEME, cfg: GPTConfig | None = None, *,
            profile: str = "llmc", overrides: Sequence[str | Override] = ()) -> SchemeInit:
    """The laws of every tensor of `cfg` under `scheme` (a name), with `overrides` applied."""
    if isinstance(scheme, SchemeInit):
        if overrides:
            raise ValueError("give overrides when resolving a scheme by name, not with a resolved one")
        return scheme
    if cfg is None:
        raise ValueError("resolve(scheme, cfg): give the GPTConfig the scheme applies to")
    check_profile(profile)
    return SchemeInit(get_scheme(scheme) if isinstance(scheme, str) else scheme, cfg, profile=profile,
                      overrides=overrides)
