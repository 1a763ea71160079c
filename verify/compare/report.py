"""The comparison report: JSON schema `gpt2-verify/compare/1` and the text table.

JSON (every key always present; null where it does not apply):

    schema            "gpt2-verify/compare/1"
    tool, version     "gpt2-verify", the package version
    verdict           worst tensor verdict: "exact" | "close" | "distribution" | "mismatch"
    require, passed   the --require level and whether the verdict meets it
    file              {"path", "format", "layout", "dtype", "heads_assumed", "wte_rows", "lm_head"}
    config            the config graded against, as every record of this tool writes it:
                      {"layers", "channels", "heads", "vocab", "padded_vocab", "max_seq_len",
                       "descriptor"}
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
        {"label", "law", "passed", "fpr", "reason", "n", "mean", "std"}),
        first_divergence {"index", "candidate", "reference"} when not exact/close,
        cause (stream diagnosis, when the values are not from the reference's stream position),
        layers [{"layer", "verdict", "differing", "mismatched", "max_abs_diff", "nonfinite",
                 "std", "std_ratio", "cause"}] for per-layer tensors
    first_divergence  the first slice in llm.c's draw order that is not exact/close:
                      {"tensor", "layer", "index", "candidate", "reference", "cause"}
    causes            the stream diagnosis, one entry per slice that is not exact/close:
                      {"tensor", "layer", "cause", "stream_seed", "stream_position", "drawn_std"}
    diagnosis         null, or why the stream diagnosis did not run (a scheme with uniform or
                      truncated-normal draws)
"""

from __future__ import annotations

import dataclasses

from ..records import CompareRecord
from .grade import VERDICTS, TensorGrade, layer_ranges, worst

SCHEMA = CompareRecord.SCHEMA
REQUIRE_LEVELS = ("exact", "close", "distribution")


def check_require(require: str) -> str:
    if require not in REQUIRE_LEVELS:
        raise ValueError(f"require={require!r}: use one of {', '.join(REQUIRE_LEVELS)}")
    return require


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

    @property
    def verdict(self) -> str:
        return worst([t.verdict for t in self.tensors] + ["mismatch"] * bool(self.problems))

    def passed(self, require: str | None = None) -> bool:
        level = check_require(require or self.require)
        return VERDICTS.index(self.verdict) <= VERDICTS.index(level)

    def worst_tensor(self) -> TensorGrade | None:
        bad = [t for t in self.tensors if t.verdict == self.verdict]
        return bad[0] if bad else None

    def summary(self) -> str:
        """One line: the verdict and why."""
        if self.problems and self.verdict == "mismatch":
            why = self.problems[0]
        else:
            t = self.worst_tensor()
            why = t.reason if t else ""
        n = sum(t.verdict == self.verdict for t in self.tensors)
        more = f" (+{n - 1} more tensors {self.verdict})" if n > 1 else ""
        return f"{self.verdict}: {why}{more}" if self.verdict != "exact" else \
            f"exact: all {len(self.tensors)} tensors bit-identical"

    def to_record(self) -> CompareRecord:
        """The typed JSON record (verify.records.CompareRecord), validated."""
        return CompareRecord.make(
            verdict=self.verdict, require=self.require, passed=self.passed(),
            file=self.file, config=self.config, against=self.against,
            profile=self.profile, seed=self.seed, tolerance=self.tolerance,
            problems=list(self.problems),
            tensors=[t.to_dict() for t in self.tensors],
            first_divergence=self.first_divergence, causes=list(self.causes),
            scheme=self.scheme, diagnosis=self.diagnosis,
        )

    def to_dict(self) -> dict:
        return self.to_record().to_dict()

    def render(self) -> str:
        f = self.file
        cfg = self.config
        label = self.scheme["label"] if self.scheme else "gpt2"
        lines = [f"candidate: {f['path']} ({f['format']}, layout {f['layout']}, {f['dtype']}"
                 + (", heads assumed" if f.get("heads_assumed") else "") + ")"
                 + (f"; read as {f['variant']}" if f.get("variant") else ""),
                 f"config:    L={cfg['layers']} C={cfg['channels']} NH={cfg['heads']} V={cfg['vocab']} "
                 f"Vp={cfg['padded_vocab']} maxT={cfg['max_seq_len']}",
                 "against:   " + (f"reference init, seed {self.seed}, profile {self.profile}, scheme {label}"
                                  if self.against["kind"] == "reference" else
                                  f"{self.against['path']} (laws of scheme {label})"),
                 "", f"{'tensor':<9} {'shape':<16} {'verdict':<12} figures"]
        for t in self.tensors:
            shape = "x".join(map(str, t.shape))
            lines.append(f"{t.name:<9} {shape:<16} {t.verdict:<12} {_figures(t)}")
        if self.problems:
            lines.append("")
            lines += [f"problem: {p}" for p in self.problems]
        reasons = [t for t in self.tensors if t.verdict in ("distribution", "mismatch")]
        if reasons:
            lines.append("")
            lines += [t.reason for t in reasons]
        if self.diagnosis and any(t.verdict in ("distribution", "mismatch") for t in self.tensors):
            lines.append("")
            lines.append(self.diagnosis)
        if self.causes:
            lines.append("")
            lines.append("stream diagnosis:")
            lines += [f"  - {c['cause']}" for c in _grouped(self.causes)]
        if self.first_divergence:
            d = self.first_divergence
            at = ", ".join(map(str, d["index"]))
            lines.append("")
            lines.append(f"first divergence (draw order): {d['tensor']}[{at}]"
                         + (f" (layer {d['layer']})" if d["layer"] is not None else "")
                         + f": {d['candidate']:.6g} vs reference {d['reference']:.6g}")
        lines.append("")
        verdict = f"verdict: {self.summary()}"
        lines.append(verdict + f"  [require {self.require}: {'PASS' if self.passed() else 'FAIL'}]")
        return "\n".join(lines)


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
    ("qkvw layers 0-11, fcw layers 0-11: values not found ...")."""
    groups: dict[str, list[dict]] = {}
    for c in causes:
        label = c["tensor"] if c["layer"] is None else f"{c['tensor']} of layer {c['layer']}"
        text = c["cause"]
        rest = text[len(label):] if text.startswith(label) else ": " + text
        groups.setdefault(rest, []).append(c)
    out = []
    for rest, cs in groups.items():
        if len(cs) == 1:
            out.append(cs[0])
            continue
        by_tensor: dict[str, list] = {}
        for c in cs:
            by_tensor.setdefault(c["tensor"], []).append(c["layer"])
        names = []
        for tensor, layers in by_tensor.items():
            layers = [x for x in layers if x is not None]
            names.append(tensor if not layers else f"{tensor} of layer {layers[0]}" if len(layers) == 1
                         else f"{tensor} of layers {layer_ranges(layers)}")
        out.append({**cs[0], "cause": ", ".join(names) + rest})
    return out
