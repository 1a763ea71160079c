"""Golden data: per-tensor statistics and checksums of the reference init, checked in CI.

Each golden/<name>.json holds one config, seed and init scheme (gpt2 unless the record says
"scheme"), and for each profile the per-tensor
numel, shape, mean, std, min, max and SHA-256 of the fp32 bytes, plus whole-model SHA-256
of the fp32 body and of the bf16 body. Only `gpt2-verify golden write` writes them;
`golden check` regenerates and compares: checksums exactly, statistics to 1e-9 relative
(float64 summation order may vary with numpy's SIMD kernels; the bits may not).
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path

from gpt2_verify.reference.config import GPTConfig, from_descriptor
from gpt2_verify.reference.init import iter_params
from gpt2_verify.reference.normal import PROFILES
from gpt2_verify.reference.schemes import DEFAULT_SCHEME, SCHEMES

from . import __version__
from .atomic import write_text_atomic
from .digest import digest_stream
from .errors import InputError
from .pipeline import background
from .progress import Progress

FORMAT = 1
STAT_RTOL = 1e-9
STAT_ATOL = 1e-12

# name -> (config, seed). Small custom configs hit the corners: tensors under 16 values
# (llm.c's double path), odd C, tails that are not multiples of 16, V a multiple of 128.
GOLDEN: dict[str, tuple[GPTConfig, int]] = {
    "d6": (from_descriptor("d6"), 42),
    "d12": (from_descriptor("d12"), 42),
    "d24": (from_descriptor("d24"), 42),
    "gpt3-c768": (from_descriptor("gpt3:c768"), 42),
    "tiny-L1-C2": (GPTConfig(1, 2, 1, 5, 5, 1), 42),
    "tiny-L2-C4-T3": (GPTConfig(2, 4, 4, 10, 16, 3), 42),
    "odd-L3-C9": (GPTConfig(3, 9, 3, 97, 128, 7), 42),
    "odd-L5-C33-V256": (GPTConfig(5, 33, 11, 256, 256, 13), 1337),
    "small-L2-C64": (GPTConfig(2, 64, 4), 0),
    "d36": (from_descriptor("d36"), 42),
    "d48": (from_descriptor("d48"), 42),
}
# every other init scheme on two configs: one with every tensor >= 16 values and fc tails, one
# odd (tensors under 16 values: llm.c's double normal path, short uniform / truncated draws)
SCHEME_CONFIGS = {"L3-C48": (GPTConfig(3, 48, 4, vocab=1000, max_seq_len=40), 1234),
                  "odd-L3-C9": (GPTConfig(3, 9, 3, 97, 128, 7), 42)}
SCHEME_OF: dict[str, str] = {}
for _scheme in SCHEMES:
    if _scheme != DEFAULT_SCHEME:
        for _label, (_cfg, _seed) in SCHEME_CONFIGS.items():
            GOLDEN[f"{_scheme}-{_label}"] = (_cfg, _seed)
            SCHEME_OF[f"{_scheme}-{_label}"] = _scheme
# checked by `golden check` with no names and by CI; the big ones need --all / -m slow
DEFAULT = [n for n in GOLDEN if n not in ("d36", "d48")]


def golden_path(name: str) -> Path:
    """The record's file in the installed `gpt2_verify.golden` package (importlib.resources).
    The package ships as plain files (wheel or editable install), so this is a real path that
    `golden write` can replace atomically."""
    return Path(os.fspath(resources.files("gpt2_verify.golden") / f"{name}.json"))


def resolve(names: list[str] | None, *, all_: bool = False) -> list[str]:
    if not names:
        return list(GOLDEN) if all_ else list(DEFAULT)
    for n in names:
        if n not in GOLDEN:
            raise InputError(None, f"unknown golden name {n!r}; known: {', '.join(GOLDEN)}")
    return names


def compute(name: str, profiles=PROFILES, *, progress: bool | None = None) -> dict:
    cfg, seed = GOLDEN[name]
    scheme = SCHEME_OF.get(name, DEFAULT_SCHEME)
    out = {"tool": "gpt2-verify", "version": __version__, "format": FORMAT, "name": name,
           "config": cfg.as_dict(),
           "seed": seed, "num_params_padded": cfg.num_params_padded, "profiles": {}}
    if scheme != DEFAULT_SCHEME:
        out["scheme"] = scheme
    for profile in profiles:
        pairs = iter_params(cfg, seed, profile, scheme=scheme)
        with Progress(cfg.num_params_padded, f"{name} {profile}", enabled=progress) as bar:
            d = digest_stream(background(pairs), progress=bar)
        out["profiles"][profile] = {"profile": profile, **d.as_dict()}
    return out


def write(name: str, *, progress: bool | None = None) -> Path:
    data = compute(name, progress=progress)
    path = golden_path(name)
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=False) + "\n")
    return path


def load(name: str) -> dict:
    path = golden_path(name)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "golden file missing; run `gpt2-verify golden write "
                               f"{name}`") from None
    except (OSError, ValueError) as e:
        raise InputError(path, f"unreadable golden file: {e}") from None


def _close(a: float, b: float) -> bool:
    if isinstance(a, float) and isinstance(b, float) and (math.isinf(a) or math.isinf(b)):
        return a == b
    return abs(a - b) <= STAT_ATOL + STAT_RTOL * abs(b)


def diff(expected: dict, actual: dict) -> list[str]:
    """Every difference between a golden record and a regenerated one (empty: equal)."""
    problems = []
    name = expected.get("name", "?")
    if expected.get("format") != FORMAT:
        problems.append(f"{name}: golden format {expected.get('format')} != {FORMAT}; rewrite it")
    for key in ("config", "seed", "num_params_padded", "scheme"):
        if expected.get(key) != actual.get(key):
            problems.append(f"{name}: {key} {expected.get(key)} != {actual.get(key)}")
    for profile, want in expected.get("profiles", {}).items():
        got = actual["profiles"].get(profile)
        if got is None:
            problems.append(f"{name}/{profile}: not regenerated")
            continue
        for key in ("sha256_fp32", "sha256_bf16", "numel"):
            if want[key] != got[key]:
                problems.append(f"{name}/{profile}: model {key} {got[key]} != golden {want[key]}")
        for tname, wt in want["tensors"].items():
            gt = got["tensors"].get(tname)
            if gt is None:
                problems.append(f"{name}/{profile}/{tname}: missing")
                continue
            for key in ("shape", "numel", "sha256_fp32", "nonfinite"):
                if wt[key] != gt[key]:
                    problems.append(f"{name}/{profile}/{tname}: {key} {gt[key]} != golden {wt[key]}")
            for key in ("mean", "std", "min", "max"):
                if not _close(gt[key], wt[key]):
                    problems.append(f"{name}/{profile}/{tname}: {key} {gt[key]!r} != golden "
                                    f"{wt[key]!r}")
    return problems


def check(name: str, *, progress: bool | None = None) -> list[str]:
    expected = load(name)
    actual = compute(name, tuple(expected.get("profiles", {})) or PROFILES, progress=progress)
    return diff(expected, actual)
