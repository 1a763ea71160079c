"""Every JSON record gpt2-verify writes, as one typed, versioned contract: the producers build
their JSON through it and the report (and `bench --merge`) read typed records back from it.

    rec = records.CompareRecord.make(verdict="exact", ...)   # validated; producers
    emit_json(path, rec.to_dict())                           # {"schema": "gpt2-verify/compare/1", ...}
    rec = records.read(path)                                 # a typed record, or InputError (one line)
    rec.tensors[0].std_ratio                                 # attributes, not dict.get

Record types (the `schema` string is written first in every record):

    gpt2-verify/compare/1         CompareRecord    `compare --json`
    gpt2-verify/fuzz/1            FuzzRecord       `fuzz --json`
    gpt2-verify/checksum/1        ChecksumRecord   `checksum --json`
    gpt2-verify/stats/1           StatsRecord      `stats --json`
    gpt2-verify/params/1          ParamsRecord     `params --json`
    gpt2-verify/gradflow/1        GradflowRecord   `gradflow --json`
    gpt2-verify/llmc/3            LlmcRecord       `llmc --json`
    gpt2-verify/module/1          ModuleRecord     `module --json`
    gpt2-verify/ablate/1          AblateSummary    `ablate`'s DIR/summary.json and `--json`
    gpt2-verify/ablate-run/1      AblateRun        `ablate`'s DIR/runs/*.json
    gpt2-verify/ablate-settings/1 AblateSettings   `ablate`'s DIR/ablation.json
    gpt2-verify/bench/1           BenchRecord      `bench --json`, `bench --merge`

Versioning: a schema string names a shape. Adding an optional field (one with a default) keeps
the version: older records still read, and keys a record holds that its class does not declare
are kept as read and written back (`Struct.extras`), so a newer writer's record passes through
an older reader unharmed. Renaming, removing or retyping a field, or adding a required one,
bumps the version (compare/1 -> compare/2) and keeps the old class while old records matter.

Adding a record type is one dataclass here:

    @struct
    class MyRecord(Record):
        SCHEMA = "gpt2-verify/my/1"
        KIND = "my"                  # the report's section name (verify/report/sections.py)
        verdict: Verdict
        config: Config
        values: list[float]
        note: str | None = None      # optional: may be absent from the JSON

Subclassing Record registers the schema (RECORDS); the producer writes
`MyRecord.make(verdict=..., ...).to_dict()`; `read(path)` returns a MyRecord; add a sample of
it to tests/test_records.py's `samples` fixture (written by its producer: the tests check every
registered type round-trips, fails one line per broken field, and renders). The report renders
it once its KIND is in verify/report/inputs.py KINDS (the section order) and
verify/report/sections.py SECTIONS maps the KIND to a section function `f(doc, inp)` reading
`inp.record` (until then the report says it does not read that kind: one line, exit 2).

Field types: bool, int, float (`Finite`: no NaN/Inf), str, Literal[...], X | None, list[X],
dict[str, X], another @struct class, Any or bare dict/list (kept as JSON, not checked). A
cross-field rule goes in a `_validate(self)` method raising RecordError(field, problem).

Errors. `make`/`from_dict` raise RecordError naming the field as a path
(`tensors[3].std_ratio: expected a number, got 'x'`): a producer that builds a bad record has a
bug, and gets a traceback. `read`/`parse` turn it into verify.errors.InputError naming the file,
the field and the problem, which the CLI prints as one line with exit 2.

Why plain dataclasses and a ~100-line checker driven by their annotations, not pydantic,
msgspec or jsonschema: the types *are* the schema, in one place, with attribute access for the
report; importing this module costs the standard library only (dataclasses, typing, json:
a few ms), where pydantic is neither a dependency of this project nor cheap to import, msgspec
is not installed here, and jsonschema would keep the schema as a second document beside the
types. Nothing here imports numpy, torch, matplotlib or the compare engine (the report's input
detection and `bench --merge` import only this); Config.gpt() imports reference.config lazily.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from gpt2_verify import __version__

from .errors import InputError

FINITE = "finite"
Finite = Annotated[float, FINITE]  # a float that must not be NaN or +-Inf
Verdict = Literal["pass", "fail"]


class RecordError(ValueError):
    """A record that breaks its contract: `field` is the path of the offending value
    ("tensors[3].std", "" for the record itself), `problem` says what is wrong."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


def struct(cls):
    """The decorator of every record and nested object: a keyword-only dataclass."""
    return dataclasses.dataclass(kw_only=True)(cls)


# ---- the checker --------------------------------------------------------------------------------


def _join(where: str, key) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def _show(value) -> str:
    if isinstance(value, (dict, list)):
        return "a JSON object" if isinstance(value, dict) else "a JSON array"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
          dict: "a JSON object", list: "a JSON array"}


def _word(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return "a finite number"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_word(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "a JSON array"
    if origin is dict:
        return "a JSON object"
    if isinstance(tp, type) and issubclass(tp, Struct):
        return f"a JSON object ({tp.__name__})"
    return _WORDS.get(tp, getattr(tp, "__name__", str(tp)))


def _is_bool(value) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's, without importing it


def _load(value, tp, where: str):
    """`value` (parsed JSON, or what a producer passed) checked against the type `tp` and
    converted (nested @struct objects built); RecordError otherwise."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        x = _load(value, args[0], where)
        if FINITE in args[1:] and not math.isfinite(x):
            raise RecordError(where, f"{x!r} is not finite (NaN and Inf are not allowed here)")
        return x
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise RecordError(where, f"{_show(value)} is not {_word(tp)}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _load(value, a, where)
            except RecordError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise RecordError(where, f"expected {_word(tp)}, got {_show(value)}")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecordError(where, f"expected a JSON array, got {_show(value)}")
        if not args:
            return list(value)
        return [_load(v, args[0], _join(where, i)) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecordError(where, f"expected a JSON object, got {_show(value)}")
        if not args:
            return dict(value)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise RecordError(where, f"key {k!r} is not a string")
            out[k] = _load(v, args[1], _join(where, k))
        return out
    if isinstance(tp, type) and issubclass(tp, Struct):
        if isinstance(value, tp):
            return value
        return tp._from(value, where)
    if tp is bool:
        if _is_bool(value):
            return bool(value)
    elif tp is int:
        if isinstance(value, numbers.Integral) and not _is_bool(value):
            return int(value)
    elif tp is float:
        if isinstance(value, numbers.Integral) and not _is_bool(value):
            return int(value)  # a JSON number; kept as written (3, not 3.0)
        if isinstance(value, numbers.Real) and not _is_bool(value):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is type(None):
        if value is None:
            return None
    else:
        raise TypeError(f"records: field type {tp!r} at {where} is not supported (see the module docstring)")
    raise RecordError(where, f"expected {_word(tp)}, got {_show(value)}")


def _dump(value):
    if isinstance(value, Struct):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


# ---- the base classes -----------------------------------------------------------------------------


class Struct:
    """A JSON object with typed fields (subclasses are @struct dataclasses). Keys the class does
    not declare are kept in `extras` and written back by to_dict."""

    extras: ClassVar[dict] = {}

    @classmethod
    @functools.lru_cache(maxsize=None)
    def _fields(cls) -> tuple[tuple[str, str, Any, bool], ...]:
        """(attribute, JSON key, type, required) per field."""
        hints = typing.get_type_hints(cls, include_extras=True)
        out = []
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            out.append((f.name, f.metadata.get("key", f.name), hints[f.name], required))
        return tuple(out)

    @classmethod
    def _from(cls, obj, where: str):
        if not isinstance(obj, dict):
            raise RecordError(where, f"expected a JSON object ({cls.__name__}), got {_show(obj)}")
        kwargs = {}
        known = {"schema"} if issubclass(cls, Record) else set()
        for attr, key, tp, required in cls._fields():
            known.add(key)
            if key not in obj:
                if required:
                    raise RecordError(_join(where, key), "missing")
                continue
            kwargs[attr] = _load(obj[key], tp, _join(where, key))
        out = cls(**kwargs)
        extras = {k: v for k, v in obj.items() if k not in known}
        if extras:
            object.__setattr__(out, "extras", extras)
        if cls._validate is not Struct._validate:
            try:
                out._validate()
            except RecordError as e:
                raise RecordError(_join(where, e.field) if e.field else where, e.problem) from None
        return out

    @classmethod
    def from_dict(cls, obj):
        """The typed object of a parsed JSON object; RecordError naming the field otherwise."""
        return cls._from(obj, "")

    def _validate(self) -> None:
        """Rules across fields (override; raise RecordError(field, problem))."""

    def to_dict(self) -> dict:
        out = {"schema": self.SCHEMA} if isinstance(self, Record) else {}
        for attr, key, _tp, _req in self._fields():
            out[key] = _dump(getattr(self, attr))
        out.update(self.extras)
        return out


RECORDS: dict[str, type[Record]] = {}  # schema -> record class


class Record(Struct):
    """A top-level record: its `SCHEMA` names and versions the shape, `KIND` is the short name
    the report and messages use. Subclassing registers it in RECORDS."""

    SCHEMA: ClassVar[str]
    KIND: ClassVar[str]
    WRITER: ClassVar[str]  # the command that writes it, for "regenerate it with ..."

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "SCHEMA" in cls.__dict__:
            if cls.SCHEMA in RECORDS:
                raise TypeError(f"records: schema {cls.SCHEMA} is declared twice")
            RECORDS[cls.SCHEMA] = cls

    @classmethod
    def make(cls, **fields):
        """A validated record from its fields (plain dicts/lists or typed objects): what
        producers call. A bad field raises RecordError: a bug in the producer."""
        return cls._from({"schema": cls.SCHEMA, **fields}, "")

    @classmethod
    def from_dict(cls, obj):
        if isinstance(obj, dict) and obj.get("schema") != cls.SCHEMA:
            raise RecordError("schema", f"is {obj.get('schema')!r}, expected {cls.SCHEMA!r}")
        return cls._from(obj, "")


# ---- shared pieces ----------------------------------------------------------------------------------


@struct
class Config(Struct):
    """A model config as every record writes it (reference.config.GPTConfig.as_dict)."""

    layers: int
    channels: int
    heads: int
    vocab: int
    padded_vocab: int
    max_seq_len: int
    descriptor: str | None = None

    def gpt(self):
        """The reference.config.GPTConfig (imported here, lazily: it brings numpy)."""
        from gpt2_verify.reference.config import GPTConfig

        return GPTConfig.from_dict(self.to_dict())

    def _validate(self) -> None:
        from gpt2_verify.reference.config import ConfigError

        try:
            self.gpt()
        except (ConfigError, ValueError, KeyError) as e:
            raise RecordError("", f"not a valid config: {e}") from None

    def describe(self) -> str:
        tag = f"{self.descriptor}: " if self.descriptor else ""
        return (f"{tag}L={self.layers} C={self.channels} NH={self.heads} V={self.vocab} "
                f"Vp={self.padded_vocab} maxT={self.max_seq_len}")


@struct
class TensorDigest(Struct):
    """Whole-tensor statistics of one tensor (verify.digest.TensorDigest.as_dict)."""

    shape: list[int]
    numel: int
    mean: float
    std: float
    min: float
    max: float
    nonfinite: int
    sha256_fp32: str


# ---- compare and fuzz --------------------------------------------------------------------------------


@struct
class CompareFile(Struct):
    path: str
    format: str
    layout: str
    dtype: str
    heads_assumed: bool = False
    wte_rows: int | None = None
    lm_head: str | None = None
    variant: str | None = None  # llm.c-format files: "llm.c checkpoint (magic ..., version ...)"
    heads: int | None = None  # null: the file does not say NH (config's heads is then a placeholder)
    biases: bool = True  # false: a bias=False model, no bias tensors graded


@struct
class CompareAgainst(Struct):
    kind: Literal["reference", "file"]
    scheme: str | None = None
    seed: int | None = None
    profile: str | None = None
    path: str | None = None


@struct
class CompareLayer(Struct):
    layer: int
    verdict: str
    key: str | None = None  # the file's key of this layer's tensor
    differing: int = 0
    mismatched: int = 0
    max_abs_diff: float = 0.0
    nonfinite: int = 0
    std: float | None = None
    std_ratio: float | None = None
    cause: str | None = None


@struct
class CompareTensor(Struct):
    name: str
    shape: list[int]
    dtype: str
    source: list[str]
    verdict: str
    reason: str
    numel: int = 0
    mismatched: int = 0
    differing: int = 0
    max_abs_diff: float = 0.0
    max_abs_diff_index: list[int] | None = None
    max_ulps: int = 0
    mean: float | None = None
    std: float | None = None
    expected_std: float | None = None
    std_ratio: float | None = None
    nonfinite: int = 0
    first_divergence: dict | None = None
    cause: str | None = None
    layers: list[CompareLayer] = dataclasses.field(default_factory=list)
    distribution: dict | None = None
    laws: list[dict] = dataclasses.field(default_factory=list)
    key: str | None = None  # the file's key (per-layer: the pattern with {i})


@struct
class Divergence(Struct):
    tensor: str
    layer: int | None
    index: list[int]
    candidate: float
    reference: float
    cause: str | None = None
    key: str | None = None
    at: str | None = None  # the index as the file indexes it


@struct
class StreamCause(Struct):
    tensor: str
    layer: int | None
    cause: str
    key: str | None = None
    model: str | None = None  # the PyTorch init whose call the values sit at
    stream_seed: int | None = None
    stream_position: int | None = None
    drawn_std: float | None = None


@struct
class SchemeInfo(Struct):
    """The init scheme a record was made under (reference.schemes.SchemeInit.to_dict)."""

    scheme: str
    label: str
    profile: str | None = None
    overrides: list[str] = dataclasses.field(default_factory=list)
    params: dict = dataclasses.field(default_factory=dict)
    formula: str | None = None
    citation: str | None = None


@struct
class CompareRecord(Record):
    SCHEMA = "gpt2-verify/compare/1"
    KIND = "compare"
    WRITER = "gpt2-verify compare FILE --json PATH"
    tool: str = "gpt2-verify"
    version: str = __version__
    verdict: str
    require: str
    passed: bool
    file: CompareFile
    config: Config
    against: CompareAgainst
    profile: str | None
    seed: int | None
    tolerance: str
    problems: list[str]
    tensors: list[CompareTensor]
    first_divergence: Divergence | None
    causes: list[StreamCause]
    scheme: SchemeInfo | None
    diagnosis: str | None
    require_why: str | None = None  # "given", or why the file gets its default level
    min_values: int | None = None  # fewest values a law check runs on (fewer: untestable)
    stream: dict | None = None  # {"seed", "model", "text"}: one PyTorch init explains every slice


@struct
class FuzzFailure(Struct):
    config: Config
    seed: int
    command: str
    error: str | None
    output_tail: str
    report: CompareRecord | None


@struct
class FuzzRecord(Record):
    SCHEMA = "gpt2-verify/fuzz/1"
    KIND = "fuzz"
    WRITER = "gpt2-verify fuzz ... --json PATH"
    tool: str = "gpt2-verify"
    version: str = __version__
    verdict: Verdict
    candidate: str
    require: str | None  # null: each example's file decided (see resolved)
    profile: str | None
    examples_run: int
    shrink_runs: int
    max_params: int
    hypothesis_seed: int | None
    scheme: str
    failure: FuzzFailure | None
    note: str | None
    resolved: str | None = None  # the level the examples were graded at
    min_values: int | None = None
    untested: int = 0  # runs too small to test the laws (distribution mode), not graded

    def _validate(self) -> None:
        if (self.verdict == "fail") != (self.failure is not None):
            raise RecordError("failure", f"verdict {self.verdict!r} with "
                                         f"{'no failure' if self.failure is None else 'a failure'}")


# ---- the reference init and checkpoints --------------------------------------------------------------


@struct
class ChecksumRecord(Record):
    """SHA-256 and statistics of the reference init stream (no file written)."""

    SCHEMA = "gpt2-verify/checksum/1"
    KIND = "checksum"
    WRITER = "gpt2-verify checksum CONFIG --json PATH"
    version: str = __version__
    config: Config
    seed: int
    profile: str
    scheme: SchemeInfo  # the scheme drawn from, with its overrides
    numel: int
    sha256_fp32: str
    sha256_bf16: str
    tensors: dict[str, TensorDigest]


@struct
class StatsRecord(Record):
    SCHEMA = "gpt2-verify/stats/1"
    KIND = "stats"
    WRITER = "gpt2-verify stats FILE --json PATH"
    file: str
    config: Config
    dtype: str
    tensors: dict[str, TensorDigest]
    format: str | None = None  # "torch, layout nanogpt": what the file was read as


@struct
class ParamsRecord(Record):
    """The parameter table's laws (`params --json`): reference.schemes.SchemeInit.to_dict() and
    law_table()."""

    SCHEMA = "gpt2-verify/params/1"
    KIND = "params"
    WRITER = "gpt2-verify params CONFIG --json PATH"
    config: Config
    scheme: str
    label: str
    profile: str
    overrides: list[str]
    params: dict
    formula: str
    citation: str
    tensors: list[dict]


# ---- gradient flow ----------------------------------------------------------------------------------


@struct
class Finding(Struct):
    check: str
    reason: str
    severity: str
    section: str | None = None
    tensor: str | None = None
    layer: int | None = None


@struct
class LossBound(Struct):
    lo: float
    hi: float
    ln_v: float | None = None
    logit_std: float | None = None
    positions: int | None = None
    centre: float | None = None
    half_width: float | None = None


@struct
class GradRow(Struct):
    tensor: str
    layer: int | None
    numel: int
    grad_norm: float | None
    nonfinite: int = 0
    first_nonfinite: list[int] | None = None
    zero: bool = False
    param_norm: float | None = None
    update_rms: float | None = None
    update_norm: float | None = None
    update_ratio: float | None = None
    vs_neighbours: float | None = None


@struct
class GradTensor(Struct):
    tensor: str
    grad_norm: float | None
    update_ratio: float | None = None
    norm_spread: float | None = None
    ratio_spread: float | None = None
    min_layer: int | None = None
    max_layer: int | None = None


@struct
class Gradients(Struct):
    source: str
    passed: bool
    loss: float | None
    loss_bound: LossBound | None
    optimizer: dict | None
    rows: list[GradRow]
    tensors: list[GradTensor]
    findings: list[Finding]
    config: Config | None = None


@struct
class Activations(Struct):
    embed: float | None
    blocks: list[float | None]
    last_over_embed: float | None
    expected_last_over_embed: float | None
    passed: bool
    findings: list[Finding]
    config: Config | None = None
    unscaled_last_over_embed: float | None = None  # the prediction without 1/sqrt(2L)
    level_limit: float | None = None  # the largest ratio a correctly scaled init may show


@struct
class NumericsResult(Struct):
    quantity: str
    max_abs: float | None
    max_rel: float | None
    mismatched: int
    used_percent: float | None
    passed: bool


@struct
class Numerics(Struct):
    table: dict  # the tolerance table: {"name", "source", "logits", "loss", "grads", "wte_rows"}
    passed: bool
    results: list[NumericsResult]
    findings: list[Finding]


@struct
class WidthSweep(Struct):
    widths: list[int]
    layers: int
    steps: int
    init: str
    slope_limit: float
    passed: bool
    scales: dict[str, list[list[float | None]]]  # quantity -> [step][width]
    slopes: dict[str, list[float | None]]  # quantity -> [step]
    losses: list[list[float | None]]
    findings: list[Finding]
    expected_slopes: dict[str, float | None] | None = None  # quantity -> what the init's weights predict


@struct
class GradflowModel(Struct):
    source: str  # "reference" or the weights file
    format: str | None = None
    seed: int | None = None
    profile: str | None = None
    random_init: bool = True


@struct
class GradflowTokens(Struct):
    batch: int
    seq: int
    seed: int | None = None
    origin: str = dataclasses.field(default="random_tokens", metadata={"key": "from"})  # or the --grads file


@struct
class GradflowRecord(Record):
    SCHEMA = "gpt2-verify/gradflow/1"
    KIND = "gradflow"
    WRITER = "gpt2-verify gradflow ... --json PATH"
    verdict: Verdict
    config: Config
    model: GradflowModel
    tokens: GradflowTokens
    loss: float | None
    gradients: Gradients
    activations: Activations
    numerics: Numerics | None
    width_sweep: WidthSweep | None
    findings: list[Finding]


# ---- the llm.c harness -----------------------------------------------------------------------------


@struct
class LlmcCheck(Struct):
    binary: str
    check: str
    value: float | None
    tolerance: float | None
    used: float | None
    passed: bool
    llmc_says: str | None = None
    detail: str | None = None


@struct
class LlmcRecord(Record):
    SCHEMA = "gpt2-verify/llmc/3"
    KIND = "llmc"
    WRITER = "gpt2-verify llmc ... --json PATH"
    verdict: Verdict
    config: Config
    seed: int
    weights: str
    tolerances: dict[str, dict]
    checks: list[LlmcCheck]
    builds_compared: list[str] = dataclasses.field(default_factory=list)
    # CUDA binaries' derived limits by program ("test", "train", "fp32cu"), when any ran
    cuda_tolerances: dict[str, dict] = dataclasses.field(default_factory=dict)


# ---- a PyTorch module judged against the reference ----------------------------------------------


@struct
class ModuleCheck(Struct):
    """One quantity of `module` (verify.torchmodule.compare.Check): normwise error
    max|module - reference| / scale against its limit; null error, used_percent and max_abs mean
    the module gave a NaN or Inf."""

    quantity: str  # "logits", "loss", "dwte" ... , "step 2 loss"
    error: float | None
    limit: Finite
    used_percent: float | None  # error / limit * 100
    passed: bool
    numel: int
    mismatched: int
    max_abs: float | None
    worst_index: list[int] | None
    allowed_abs: float
    message: str | None = None  # torch.testing's style: "Mismatched elements: ..." (added in module/1)

    def _validate(self) -> None:
        if self.passed != (self.error is not None and self.error <= self.limit):
            raise RecordError("passed", f"is {self.passed} but error {self.error} vs limit {self.limit} "
                                        f"says {not self.passed}")


@struct
class ModuleTolerance(Struct):
    """The (device, precision) table the checks used (verify.torchmodule.tolerances.Tolerance)."""

    device: str
    precision: str
    key: str  # "cpu-fp32"
    derived: bool  # true: derived from another table, not measured on this device
    limits: dict[str, Finite]  # logits, loss, grads, steps
    measured: dict[str, float] | None
    bounds: dict[str, dict]  # per quantity: the tolerance with its source (kept as JSON)


@struct
class ModuleTokens(Struct):
    batch: int
    seq: int
    seed: int


@struct
class ModuleSteps(Struct):
    optimizer: dict | None  # the AdamW settings (verify.numerics.adamw), null with --steps 0
    losses: list[float | None]  # the module's loss before each step (null: not finite)
    reference: list[float | None]
    checks: list[ModuleCheck]


@struct
class ModuleCause(Struct):
    """The known variants (verify.torchmodule.variants) the failing module matches best."""

    variants: list[str]
    matches: bool  # every quantity within tolerance of the reference run as those variants
    score: float | None  # worst error / tolerance against them (null: not finite)
    baseline: float | None  # the same against GPT-2 itself
    text: str


@struct
class ModuleRecord(Record):
    SCHEMA = "gpt2-verify/module/1"
    KIND = "module"
    WRITER = "gpt2-verify module SPEC ... --json PATH"
    verdict: Verdict
    source: str  # SPEC
    config: Config
    device: str
    precision: str
    tolerance: ModuleTolerance
    layout: str  # how parameters were mapped: "llmc-py", "hf"
    convention: Literal["idx-targets", "hf", "adapter"]
    tied: bool
    absent: list[str]  # llm.c tensors the module lacks (held at 0)
    vocab_rows: int
    tokens: ModuleTokens
    checks: list[ModuleCheck]
    steps: ModuleSteps
    findings: list[str]  # structural failures the numbers do not show
    cause: ModuleCause | None
    margins: dict[str, float | None] | None  # variant -> tolerances it moves the reference

    def all_checks(self) -> list[ModuleCheck]:
        return self.checks + self.steps.checks

    def _validate(self) -> None:
        passed = not self.findings and all(c.passed for c in self.all_checks())
        if self.verdict != ("pass" if passed else "fail"):
            raise RecordError("verdict", f"is {self.verdict!r} but the checks and findings say "
                                         f"{'pass' if passed else 'fail'!r}")


# ---- ablations ----------------------------------------------------------------------------------------


@struct
class Interval(Struct):
    """Mean with a Student-t 95% interval over seeds (experiments.study.interval)."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    values: list[float] = dataclasses.field(default_factory=list)


@struct
class Curve(Struct):
    step: list[int]
    mean: list[float | None]
    lo: list[float | None]
    hi: list[float | None]
    smoothing: str | None = None


@struct
class GradNormProfile(Struct):
    layer: list[int]
    mean: list[float | None]
    lo: list[float | None]
    hi: list[float | None]
    step: int = 0


@struct
class AblateScheme(Struct):
    name: str
    scheme: str
    overrides: list[str]
    final_loss: Interval
    best_loss: Interval
    steps_to_target: Interval | None
    diverged: list[int]
    curve: Curve | None
    val_curve: Curve | None
    grad_norm_profile: GradNormProfile | None
    runs: int | None = None
    reached_target: int | None = None
    overlaps_reference: bool | None = None


@struct
class AblateData(Struct):
    """The training data of an ablation (verify.experiments.sources.Tokens.to_dict)."""

    kind: str
    description: str
    entropy_rate: float | None = None  # nats per token, when known
    vocab: int | None = None
    train_tokens: int | None = None
    val_tokens: int | None = None


@struct
class AblateSummary(Record):
    SCHEMA = "gpt2-verify/ablate/1"
    KIND = "ablation"
    WRITER = "gpt2-verify ablate ... -o DIR"
    tool_version: str = __version__
    config: Config
    data: AblateData
    steps: int
    seeds: list[int]
    batch: int
    seq: int
    lr: float
    optimizer: dict | None = None
    target_loss: float | None
    final_loss_definition: str | None = None
    reference: str | None = None
    schemes: list[AblateScheme]
    runs: list[str]


@struct
class AblateRun(Record):
    SCHEMA = "gpt2-verify/ablate-run/1"
    KIND = "ablate-run"
    WRITER = "gpt2-verify ablate ... -o DIR"
    tool_version: str = __version__
    label: str
    scheme: str
    overrides: list[str]
    seed: int
    settings: dict  # experiments.study.Settings.to_dict(): a resumed run must match it exactly
    init: dict  # reference.schemes.SchemeInit.to_dict()
    train_loss: list[float | None]
    val_loss: list[list[float | None]]  # [[step, loss]]
    grad_norm: list[list]  # [[step, {tensor: [per-layer norm]}]]
    act_rms: list[list]  # [[step, [rms per activation]]]
    diverged: bool
    diverged_at: int | None
    wall_s: float


@struct
class AblateSettings(Record):
    SCHEMA = "gpt2-verify/ablate-settings/1"
    KIND = "ablate-settings"
    WRITER = "gpt2-verify ablate ... -o DIR"
    digest: str
    config: Config
    arms: list[str]
    seeds: list[int]
    steps: int


# ---- benchmarks ---------------------------------------------------------------------------------------


@struct
class Spread(Struct):
    """A timed interval over the repeats: median, min, max and quartiles (seconds)."""

    median: Finite
    min: Finite
    max: Finite
    q1: Finite
    q3: Finite


@struct
class BenchDevice(Struct):
    kind: str
    name: str
    cpu_model: str
    cores: int
    threads: int
    gpu_name: str | None
    gpu_memory_bytes: int | None
    torch: str
    cuda: str | None
    driver: str | None
    host: str

    def label(self) -> str:
        return self.gpu_name or self.cpu_model or self.name or self.kind


@struct
class BenchRow(Struct):
    device: BenchDevice
    impl: Literal["reference", "llmc"]
    config: Config
    descriptor: str | None
    batch: int
    seq: int
    dtype: str
    compile: bool
    fwd_s: Spread | None
    bwd_s: Spread | None
    opt_s: Spread | None
    step_s: Spread
    tokens_per_s: Finite
    flops_per_token: Finite
    achieved_tflops: Finite
    peak_tflops: Finite | None
    peak_source: str | None
    mfu: Finite | None
    peak_memory_bytes: int | None


@struct
class BenchRecord(Record):
    SCHEMA = "gpt2-verify/bench/1"
    KIND = "bench"
    WRITER = "gpt2-verify bench ... --json PATH"
    tool_version: str = __version__
    rows: list[BenchRow]
    merged_from: list[str] | None = None


# ---- reading ------------------------------------------------------------------------------------------


def load_json(path: str | os.PathLike) -> dict:
    """The JSON object in `path`; InputError for a missing or unreadable file, text that is not
    JSON, or JSON that is not an object."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a JSON file") from None
    except UnicodeDecodeError:
        raise InputError(path, "not valid JSON: not UTF-8 text") from None
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise InputError(path, f"not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise InputError(path, f'a JSON {type(obj).__name__}, not a gpt2-verify record (a JSON object with '
                               'a "schema" field)')
    return obj


def record_class(obj: dict, source, *, expect: tuple[type[Record], ...] = ()) -> type[Record]:
    """The record class of a parsed JSON object by its "schema"; InputError naming `source`
    when it has none, an unknown one, or (with `expect`) one of another type."""
    names = ", ".join(sorted(c.KIND for c in (expect or RECORDS.values())))
    schema = obj.get("schema")
    if schema is None:
        raise InputError(source, f'JSON without a "schema" field: not a gpt2-verify record ({names})')
    cls = RECORDS.get(schema) if isinstance(schema, str) else None
    if cls is None:
        raise InputError(source, f"unknown schema {schema!r}; known: {', '.join(RECORDS)}")
    if expect and cls not in expect:
        raise InputError(source, f"a {cls.KIND} record ({schema}); this reads {names}")
    return cls


def parse(obj: dict, source, *, expect: tuple[type[Record], ...] = ()) -> Record:
    """The typed record of a parsed JSON object; InputError (one line: the file, the field and
    the problem) when it is not a valid record."""
    cls = record_class(obj, source, expect=expect)
    try:
        return cls.from_dict(obj)
    except RecordError as e:
        where = f"field {e.field!r}: " if e.field else ""
        raise InputError(source, f"malformed {cls.KIND} record ({cls.SCHEMA}): {where}{e.problem}; "
                                 f"write it again with `{cls.WRITER}`") from None


def read(path: str | os.PathLike, *, expect: tuple[type[Record], ...] = ()) -> Record:
    """The typed record in the JSON file `path` (parse(load_json(path)))."""
    return parse(load_json(path), path, expect=expect)
