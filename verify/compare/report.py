"""The comparison report: JSON schema `gpt2-verify/compare/1` and the text table.

JSON (every key always present; null where it does not apply):

    schema            "gpt2-verify/compare/1"
    tool, version     "gpt2-verify", the package version
    verdict           worst tensor verdict: "exact" | "close" | "distribution" | "untestable" |
                      "mismatch"; an untestable tensor (too few values to test its law) counts
                      only when every random tensor is untestable
    require, passed   the level needed to pass and whether the verdict meets it
    require_why       why that level: given, or the default the file gets (default_require)
    min_values        the fewest values a law check runs on (fewer: untestable)
    file              {"path", "format", "layout", "dtype", "heads_assumed", "heads" (null when
                      the file does not say NH), "wte_rows", "lm_head" ("absent" | "tied" |
                      "equal" | "separate"), "biases" (false: a bias=False model, no bias
                      tensors, none graded)}
    config            the config graded against, as every record of this tool writes it:
                      {"layers", "channels", "heads", "vocab", "padded_vocab", "max_seq_len",
                       "descriptor"} (when file.heads is null, NH is unknown and "heads" here is a
                       placeholder the init does not depend on)
    against           {"kind": "reference", "seed", "profile", "scheme"} or {"kind": "file", "path", ...,
                      "scheme"} ("scheme": the scheme's label, e.g. "gpt2[wpe.std=0.01]")
    scheme            the init scheme graded against: reference.schemes.SchemeInit.to_dict()
                      {"scheme", "label", "profile", "overrides", "params", "formula", "citation"}
                      (against a file: the laws its constant parts and law checks use)
    profile, seed     the reference's (null when against a file)
    tolerance         the close bound, in words
    problems          file-level findings, one line each (missing/extra keys, shape problems)
    tensors           one entry per llm.c tensor (and "lm_head" when the file holds a separate one):
        name          llm.c's name (wte, wpe, ln1w, ..., lnfb)
        key           the file's key (per-layer tensors: the pattern with {i}, e.g.
                      transformer.h.{i}.attn.c_proj.weight); llm.c's name for llm.c files
        source        the file's own key or keys it came from
        shape, dtype  as found (llm.c orientation)
        verdict, reason
        numel, differing (not bit-identical), mismatched (outside the close bound; constants:
        differing), max_abs_diff, max_abs_diff_index, max_ulps (float32 ulps at the larger of
        |reference| and the tensor's std, rounded up), nonfinite, mean, std,
        expected_std (the law's std; several laws: their count-weighted rms), std_ratio (random
        tensors), laws [{"rows": [lo, hi], "layers": [first, last] or null, "law":
        {"kind", "std"|"bound"|"k"|"value", "sd"}, "fixed"}] (the scheme's expected laws, rows of
        the per-layer shape), distribution (the law checks' figures when they ran: "passed",
        "fpr", "reason", "n", "mean", "std", "law", and "checks", one entry per law checked:
        {"label", "law", "passed", "testable", "fpr", "reason", "n", "mean", "std"}),
        first_divergence {"index", "candidate", "reference"} when not exact/close,
        cause (stream diagnosis, when the values are not from the reference's stream position),
        layers [{"layer", "key", "verdict", "differing", "mismatched", "max_abs_diff", "nonfinite",
                 "std", "std_ratio", "cause"}] for per-layer tensors; a layer is "mismatch"
                 exactly when the text names it (or names the whole tensor)
    first_divergence  the first slice in llm.c's draw order that is not exact/close:
                      {"tensor", "layer", "key", "at", "index", "candidate", "reference", "cause"}
    causes            the stream diagnosis, one entry per slice that is not exact/close:
                      {"tensor", "layer", "key", "cause", "stream_seed", "stream_position",
                       "drawn_std", "model"}
    stream            null, or where the stream diagnosis found the file's values when they all
                      come from one modelled PyTorch init: {"seed", "model", "text"}
    diagnosis         null, or why the stream diagnosis did not run (a scheme with uniform or
                      truncated-normal draws)
"""

from __future__ import annotations

import dataclasses
import re

from ..records import CompareRecord
from .grade import VERDICTS, TensorGrade, worst
from .regions import layer_ranges

SCHEMA = CompareRecord.SCHEMA
REQUIRE_LEVELS = ("exact", "close", "distribution")


def check_require(require: str) -> str:
    if require not in REQUIRE_LEVELS:
        raise ValueError(f"require={require!r}: use one of {', '.join(REQUIRE_LEVELS)}")
    return require


def default_require(file_format: str, *, require: str | None, profile: str | None) -> tuple[str, str]:
    """(level, why): the verdict a file must reach when the caller did not say.

    A file that claims llm.c's stream keeps `close`: an llm.c checkpoint (llm.c and its ports
    write them from llm.c's seeded mt19937), or any file graded under an explicit --profile.
    Every other file (a state dict, safetensors, npz from PyTorch, JAX or numpy code with its
    own generator) can only be asked for the right laws: `distribution`."""
    if require is not None:
        return require, "given"
    if profile is not None:
        return "close", f"--profile {profile} given: the values must be that profile's stream"
    if file_format == "llmc":
        return "close", ("an llm.c checkpoint claims llm.c's stream; --require distribution to accept "
                         "another RNG")
    what = {"torch": "a PyTorch state dict", "safetensors": "a safetensors file", "npz": "an npz file"}.get(
        file_format, f"a {file_format} file")
    return "distribution", (f"{what} from its own RNG is graded on its laws; --require close to demand "
                            "llm.c's stream")


@dataclasses.dataclass
class Report:
    file: dict
    config: dict
    against: dict
    profile: str | None
    seed: int | None
    tolerance: str
    tensors: list[TensorGrade]
    problems: list[str] = dataclasses.field(default_factory=list)
    first_divergence: dict | None = None
    causes: list[dict] = dataclasses.field(default_factory=list)
    require: str = "close"
    scheme: dict | None = None  # reference.schemes.SchemeInit.to_dict()
    diagnosis: str | None = None  # why the stream diagnosis was skipped
    require_why: str = "given"
    min_values: int | None = None
    stream: dict | None = None  # the diagnosis' one-line finding when every slice fits one model
    heads_unknown: bool = False  # graded against the file's own config, whose NH nobody gave

    @property
    def verdict(self) -> str:
        """The worst tensor verdict. An untestable tensor (another stream, too few values to test
        its law) counts as distribution: it fails close and exact, and passes distribution unless
        every random tensor is untestable (then nothing at all was tested: untestable)."""
        random = [t for t in self.tensors if t.random]
        if random and all(t.verdict == "untestable" for t in random) and not self.problems and all(
                t.verdict in ("exact", "close", "untestable") for t in self.tensors):
            return "untestable"
        counted = ["distribution" if t.verdict == "untestable" else t.verdict for t in self.tensors]
        return worst(counted + ["mismatch"] * bool(self.problems))

    def passed(self, require: str | None = None) -> bool:
        level = check_require(require or self.require)
        return VERDICTS.index(self.verdict) <= VERDICTS.index(level)

    def worst_tensor(self) -> TensorGrade | None:
        bad = [t for t in self.tensors if t.verdict == self.verdict]
        return bad[0] if bad else None

    def summary(self) -> str:
        """One line: the verdict and why."""
        if self.verdict == "exact":
            return f"exact: all {len(self.tensors)} tensors bit-identical"
        if self.verdict == "distribution":
            n = sum(t.verdict == "distribution" for t in self.tensors)
            where = (f" (torch.manual_seed({self.stream['seed']}) stream, {self.stream['model']}'s order)"
                     if self.stream else "")
            skipped = sum(t.verdict == "untestable" for t in self.tensors)
            untested = f"; {skipped} too small to test" if skipped else ""
            return (f"distribution: right laws, another stream: {n} random tensors pass their law checks, "
                    f"their values are not llm.c's stream{where}{untested}")
        if self.problems and self.verdict == "mismatch":
            why = self.problems[0]
        else:
            t = self.worst_tensor()
            why = t.reason if t else ""
        n = sum(t.verdict == self.verdict for t in self.tensors)
        more = f" (+{n - 1} more tensors {self.verdict})" if n > 1 else ""
        return f"{self.verdict}: {why}{more}"

    def to_record(self) -> CompareRecord:
        """The typed JSON record (verify.records.CompareRecord), validated."""
        return CompareRecord.make(
            verdict=self.verdict, require=self.require, passed=self.passed(),
            file=self.file, config=self.config, against=self.against,
            profile=self.profile, seed=self.seed, tolerance=self.tolerance,
            problems=list(self.problems),
            tensors=[t.to_dict() for t in self.tensors],
            first_divergence=self.first_divergence, causes=list(self.causes),
            scheme=self.scheme, diagnosis=self.diagnosis, require_why=self.require_why,
            min_values=self.min_values, stream=self.stream,
        )

    def to_dict(self) -> dict:
        return self.to_record().to_dict()

    def render(self) -> str:
        f = self.file
        cfg = self.config
        label = self.scheme["label"] if self.scheme else "gpt2"
        nh = ("? (unknown: no tensor's shape depends on it and the file does not say; give --heads; "
              "the init does not depend on it)" if self.heads_unknown else cfg["heads"])
        lines = [f"candidate: {f['path']} ({f['format']}, layout {f['layout']}, {f['dtype']})"
                 + (f"; read as {f['variant']}" if f.get("variant") else ""),
                 f"config:    L={cfg['layers']} C={cfg['channels']} V={cfg['vocab']} "
                 f"Vp={cfg['padded_vocab']} maxT={cfg['max_seq_len']} NH={nh}"]
        lines += _file_notes(f, cfg)
        lines += ["against:   " + (f"reference init, seed {self.seed}, profile {self.profile}, scheme {label}"
                                   if self.against["kind"] == "reference" else
                                   f"{self.against['path']} (laws of scheme {label})"),
                  f"require:   {self.require}"
                  + (f" ({self.require_why})" if self.require_why != "given" else ""),
                  ""]
        llmc = f.get("layout", "llmc") == "llmc"
        width = max([9] + [len(_tensor_label(t, llmc)) for t in self.tensors])
        lines.append(f"{'tensor':<{width}} {'shape':<16} {'verdict':<12} figures")
        for t in self.tensors:
            shape = "x".join(map(str, t.shape))
            lines.append(f"{_tensor_label(t, llmc):<{width}} {shape:<16} {t.verdict:<12} {_figures(t)}")
        if self.problems:
            lines.append("")
            lines += [f"problem: {p}" for p in self.problems]
        reasons = [t for t in self.tensors if t.verdict in ("distribution", "untestable", "mismatch")]
        if reasons:
            lines.append("")
            lines += [t.reason for t in reasons]
        if self.diagnosis and any(t.verdict in ("distribution", "mismatch") for t in self.tensors):
            lines.append("")
            lines.append(self.diagnosis)
        if self.stream:
            lines += ["", f"stream: {self.stream['text']}"]
        elif self.causes:
            lines.append("")
            lines.append("stream diagnosis:")
            lines += [f"  - {c['cause']}" for c in _grouped(self.causes)]
        if self.first_divergence:
            d = self.first_divergence
            at = d.get("at") or f"{d['tensor']}[{', '.join(map(str, d['index']))}]"
            lines.append("")
            lines.append(f"first divergence (draw order): {at}"
                         + (f" (layer {d['layer']})" if d["layer"] is not None else "")
                         + f": {d['candidate']:.6g} vs reference {d['reference']:.6g}")
        lines.append("")
        verdict = f"verdict: {self.summary()}"
        lines.append(verdict + f"  [require {self.require}: {'PASS' if self.passed() else 'FAIL'}]")
        return "\n".join(lines)


def _tensor_label(t: TensorGrade, llmc: bool) -> str:
    return t.name if llmc or not t.key or t.key == t.name else f"{t.key} ({t.name})"


def _file_notes(f: dict, cfg: dict) -> list[str]:
    """What the file holds that changes what is graded: wte's rows, lm_head, biases."""
    notes = []
    rows = f.get("wte_rows")
    if rows is not None and f.get("format") != "llmc" and cfg.get("padded_vocab") != cfg.get("vocab"):
        notes.append(f"wte rows:  {rows:,} = " + ("Vp (padded; rows V..Vp-1 must be zero)" if rows ==
                                                   cfg["padded_vocab"] else "V (not padded)"))
    lm = {"tied": "tied to wte (one tensor)", "equal": "a copy of wte (graded as wte)",
          "separate": "untied: a tensor of its own, graded on its own under wte's laws"}.get(f.get("lm_head"))
    if lm:
        notes.append(f"lm_head:   {lm}")
    if f.get("biases") is False:
        notes.append("biases:    none in the file (bias=False): LayerNorm and Linear biases not graded")
    return notes


def _figures(t: TensorGrade) -> str:
    if t.verdict == "exact":
        return f"{t.numel:,} values bit-identical"
    if t.nonfinite:
        return f"{t.nonfinite:,} non-finite"
    parts = [f"{t.differing:,}/{t.numel:,} differ", f"max |diff| {t.max_abs_diff:.3g}"]
    if t.verdict == "close":
        parts.append(f"{t.max_ulps} ulps")
    if t.std_ratio is not None and t.verdict != "close":
        parts.append(f"std {t.std:.4g} ({t.std_ratio:.3g}x)")
    return ", ".join(parts)


def _grouped(causes: list[dict]) -> list[dict]:
    """Causes that say the same thing for several slices, folded into one line naming them all
    ("qkvw of layers 0-11, fcw of layers 0-11: values not found ...", or for a state dict
    "transformer.h.{0-3}.mlp.c_fc.weight (fcw): ..."); slices at the stream positions where a
    PyTorch init leaves its final values fold into one line per init and seed."""
    groups: dict[str, list[dict]] = {}
    for c in causes:
        text = c["cause"]
        label = c["tensor"] if c["layer"] is None else f"{c['tensor']} of layer {c['layer']}"
        if c.get("key") and c["key"] != c["tensor"]:
            label = f"{c['key']} ({c['tensor']})"  # a state dict's key, as the diagnosis names it
        rest = text[len(label):] if text.startswith(label) else ": " + text
        if c.get("model") and "(its final values" in rest:
            seed = c.get("stream_seed")
            rest = (f": {c['model']} from torch.manual_seed({seed}): each where it draws its final values "
                    "(constructor defaults drawn first, then re-initialised)")
        key = _LAYER_KEY.sub(".h.{i}.", _POSITION.sub("stream position ...", rest))
        groups.setdefault(key, []).append(c)
    out = []
    for key, cs in groups.items():
        if len(cs) == 1:
            out.append(cs[0])
            continue
        by_tensor: dict[str, list] = {}
        for c in cs:
            by_tensor.setdefault(_LAYER_KEY.sub(".h.0.", c.get("key") or c["tensor"]), []).append(c)
        names = [_slices_name(k, group) for k, group in by_tensor.items()]
        out.append({**cs[0], "cause": ", ".join(names) + key})
    return out


_POSITION = re.compile(r"stream position \d(?:[\d,]*\d)?")
_LAYER_KEY = re.compile(r"\.h\.\d+\.")


def _slices_name(key: str, group: list[dict]) -> str:
    """'fcw of layers 0-3' (llm.c names) or 'transformer.h.{0-3}.mlp.c_fc.weight (fcw)'."""
    layers = [c["layer"] for c in group if c["layer"] is not None]
    tensor = group[0]["tensor"]
    if not key.startswith(("transformer.", "lm_head")):
        return (tensor if not layers else f"{tensor} of layer {layers[0]}" if len(layers) == 1
                else f"{tensor} of layers {layer_ranges(layers)}")
    if len(layers) <= 1:
        return f"{key} ({tensor})"
    return f"{_LAYER_KEY.sub('.h.{' + layer_ranges(layers) + '}.', key)} ({tensor})"
