"""Commands on the reference init and llm.c checkpoints: init, checksum, stats, params, golden."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil

import numpy as np
from gpt2_verify.reference.init import iter_params

from ..errors import EXIT_CHECK_FAILED, EXIT_OK, CheckFailed, InputError
from ..pipeline import background
from ..progress import Progress
from .common import (
    add_config_args,
    add_executor_args,
    add_scheme_args,
    check_seed,
    config_from_args,
    emit_json,
    scheme_from_args,
)


def check_free_space(path: str, nbytes: int) -> None:
    """InputError before anything is written when the file system that will hold `path` has
    less than `nbytes` free (d48 is 6.2 GB, gpt3:c12288 about 700 GB)."""
    target = os.path.dirname(os.path.abspath(path))
    try:
        free = shutil.disk_usage(target).free
    except OSError as e:
        raise InputError(path, f"cannot write into {target}: {e.strerror or e}") from None
    if free < nbytes:
        raise InputError(path, f"needs {nbytes:,} bytes ({nbytes / 2**30:,.1f} GiB) but {target} has "
                               f"{free:,} bytes ({free / 2**30:,.1f} GiB) free; write it elsewhere, or use "
                               "`gpt2-verify checksum` (streams the init, writes nothing)")


@contextlib.contextmanager
def param_stream(args, cfg, scheme, *, digest: bool = False):
    """(spec, chunk) pairs of the reference init: sequential in this process (--workers 1), or
    in shards on --workers processes or Ray tasks (verify.sharded: the same values)."""
    if args.executor == "local" and args.workers == 1 and not args.ray_address:
        yield background(iter_params(cfg, args.seed, args.profile, scheme=scheme))
        return
    from .. import executors
    from ..sharded import iter_params_sharded

    workers = None if args.executor == "ray" and args.workers == 1 else args.workers
    ex = executors.make(args.executor, workers=workers, address=args.ray_address)
    try:
        yield iter_params_sharded(scheme, args.seed, ex, digest=digest)
    finally:
        ex.close()


def cmd_init(args) -> int:
    from ..formats.checkpoint import expected_size, write_checkpoint

    cfg = config_from_args(args)
    check_seed(args.seed)
    scheme = scheme_from_args(args, cfg)
    check_free_space(args.output, expected_size(cfg, args.dtype))
    sha = hashlib.sha256()
    with Progress(cfg.num_params_padded, f"init {cfg.slug()}") as bar, \
            param_stream(args, cfg, scheme) as pairs:
        def chunks():
            for _spec, part in pairs:
                if args.dtype == "fp32":
                    sha.update(np.ascontiguousarray(part, dtype="<f4").data)
                bar.update(part.size)
                yield part
        try:
            write_checkpoint(args.output, cfg, chunks(), args.dtype)
        except OSError as e:
            raise InputError(args.output, f"cannot write: {e.strerror or e}") from None
    line = (f"wrote {args.output}: {cfg.describe()}, {cfg.num_params_padded:,} params, "
            f"{args.dtype}, profile {args.profile}, seed {args.seed}")
    if scheme.label != "gpt2":
        line += f", scheme {scheme.label}"
    if args.dtype == "fp32":
        line += f", body sha256 {sha.hexdigest()}"
    print(line)
    return EXIT_OK


def cmd_checksum(args) -> int:
    from ..digest import digest_stream

    cfg = config_from_args(args)
    check_seed(args.seed)
    scheme = scheme_from_args(args, cfg)
    with Progress(cfg.num_params_padded, f"checksum {cfg.slug()}") as bar, \
            param_stream(args, cfg, scheme, digest=True) as pairs:
        d = digest_stream(pairs, progress=bar)
    if args.json:
        from ..records import ChecksumRecord

        emit_json(args.json, ChecksumRecord.make(config=cfg.as_dict(), seed=args.seed, profile=args.profile,
                                                 scheme=scheme.to_dict(), **d.as_dict()).to_dict())
        if args.json == "-":  # stdout carries only the JSON
            return EXIT_OK
    print(f"{cfg.describe()} seed {args.seed} profile {args.profile} scheme {scheme.label}")
    print(f"sha256 fp32 {d.sha256_fp32}")
    print(f"sha256 bf16 {d.sha256_bf16}")
    if args.json:
        print(f"wrote {args.json} ({ChecksumRecord.SCHEMA}: the digests and per-tensor statistics)")
    return EXIT_OK


def cmd_stats(args) -> int:
    from types import SimpleNamespace

    from gpt2_verify.reference.config import parameter_table

    from ..digest import digest_stream
    from ..formats.model import open_model

    # every format compare reads; chunks of at most 1M values (one layer's piece of a state dict)
    with open_model(args.file, fmt=args.format, layout=args.layout) as model:
        cfg = model.config
        names = [s.name for s in parameter_table(cfg) if s.name in model.sources]
        shapes = {n: tuple(model.shape(n)) for n in names}
        total = sum(int(np.prod(shapes[n])) for n in names)

        def pairs():  # (name and shape, float32 chunk) in llm.c's order
            for n in names:
                spec = SimpleNamespace(name=n, shape=shapes[n])
                for part in model.iter_chunks(n, 1 << 20):
                    yield spec, part

        with Progress(total, "stats") as bar:
            rows = list(digest_stream(pairs(), bf16=False, progress=bar).tensors.values())
        keys = {n: (model.sources[n][0] if len(model.sources[n]) == 1 else
                    model.sources[n][0].replace(".h.0.", ".h.{i}.")) for n in names}
        header = SimpleNamespace(config=cfg, dtype=model.dtype)
        llmc = model.layout == "llmc"
        where = f"{model.format}, layout {model.layout}"
        heads_unknown = model.heads_assumed
    if args.json:
        from ..records import StatsRecord

        emit_json(args.json, StatsRecord.make(file=args.file, config=header.config.as_dict(),
                                              dtype=header.dtype, format=where,
                                              tensors={d.name: d.as_dict() for d in rows}).to_dict())
        if args.json == "-":  # stdout carries only the JSON
            return EXIT_CHECK_FAILED if any(d.nonfinite for d in rows) else EXIT_OK
    desc = header.config.describe()
    if heads_unknown:  # no shape says NH: not printed as a fact
        desc = desc.replace(f"NH={header.config.heads}", "NH=?")
    print(f"{args.file} ({where}): {desc}, {header.dtype}, "
          f"{total:,} values")
    print(f"{'tensor':<9} {'shape':<18} {'numel':>12} {'mean':>12} {'std':>11} "
          f"{'min':>11} {'max':>11}")
    bad = 0
    for d in rows:
        shape = "x".join(map(str, d.shape))
        print(f"{d.name:<9} {shape:<18} {d.numel:>12,} {d.mean:>12.4e} "
              f"{d.std:>11.4e} {d.min:>11.4e} {d.max:>11.4e}"
              + (f"  {d.nonfinite} NaN/Inf" if d.nonfinite else "") + ("" if llmc else f"  {keys[d.name]}"))
        bad += d.nonfinite
    return EXIT_CHECK_FAILED if bad else EXIT_OK


def cmd_params(args) -> int:
    from ..formats.layouts import layout_shape, state_dict_key

    cfg = config_from_args(args)
    scheme = scheme_from_args(args, cfg)
    if args.json:
        from ..records import ParamsRecord

        emit_json(args.json, ParamsRecord.make(config=cfg.as_dict(), **scheme.to_dict(),
                                               tensors=scheme.law_table()).to_dict())
        if args.json == "-":
            return EXIT_OK
    print(cfg.describe())
    print(f"{'#':>2} {'llm.c':<9} {'llm.c shape':<18} {'offset':>12} {'numel':>12}  "
          f"{args.layout} key (shape)")
    for spec in cfg.tensors():
        key = state_dict_key(spec.name, 0 if spec.per_layer else None)
        if spec.per_layer:
            key = key.replace(".h.0.", ".h.{i}.")
        shape = layout_shape(cfg, spec.name, args.layout) if args.layout != "llmc" else spec.shape
        print(f"{spec.index:>2} {spec.name:<9} {'x'.join(map(str, spec.shape)):<18} "
              f"{spec.offset:>12,} {spec.numel:>12,}  "
              + (key if args.layout != "llmc" else "") + f" ({'x'.join(map(str, shape))})")
    print(f"parameters: {cfg.num_params_padded:,} as llm.c stores them (wte over Vp rows), "
          f"{cfg.num_params:,} with V rows, {cfg.num_params_nanogpt:,} nanoGPT non-embedding")
    if args.layout == "hf":
        print("hf: Conv1D weights are stored (in, out)")
    print()
    print(f"init scheme {scheme.label} (profile {args.profile}): {scheme.scheme.formula}")
    print(f"  source: {scheme.scheme.citation}")
    print(f"{'llm.c':<9} {'layers':<7} law (rows: law per part)")
    for row in scheme.law_table():
        parts = row["parts"]
        law = (parts[0]["describe"] if len(parts) == 1 else
               "; ".join(f"rows {p['rows'][0]}..{p['rows'][1] - 1}: {p['describe']}" for p in parts))
        print(f"{row['tensor']:<9} {row['layers'] or '':<7} {law}")
    return EXIT_OK


def cmd_golden(args) -> int:
    from .. import golden

    names = golden.resolve(args.names, all_=args.all)
    if args.action == "write":
        for name in names:
            path = golden.write(name)
            print(f"wrote {path}")
        return EXIT_OK
    failed = 0
    for name in names:
        problems = golden.check(name)
        if problems:
            failed += 1
            for p in problems:
                print(f"FAIL {p}")
        else:
            print(f"ok   {name}")
    if failed:
        raise CheckFailed(f"{failed} of {len(names)} golden records differ")
    return EXIT_OK


def register(sub) -> None:
    q = sub.add_parser("init", help="write the reference random init as an llm.c checkpoint")
    add_config_args(q)
    add_scheme_args(q)
    q.add_argument("--workers", type=int, default=1, metavar="N",
                   help="generate in shards on N processes (or N Ray tasks at a time with --executor ray; "
                        "default there: the cluster's CPUs), from each shard's stream position: the same "
                        "bytes as 1 (default)")
    add_executor_args(q, what="the shards")
    q.add_argument("-o", "--output", required=True, help="output .bin (written atomically)")
    q.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (version 3) or bf16 (version 5, round-to-nearest-even)")
    q.set_defaults(func=cmd_init)

    q = sub.add_parser("checksum", help="SHA-256 and statistics of the reference init, "
                                        "streamed (no file, bounded memory)")
    add_config_args(q)
    add_scheme_args(q)
    q.add_argument("--workers", type=int, default=1, metavar="N",
                   help="generate in shards on N processes (or N Ray tasks at a time with --executor ray; "
                        "default there: the cluster's CPUs), from each shard's stream position: the same "
                        "bytes as 1 (default)")
    add_executor_args(q, what="the shards")
    q.add_argument("--json", metavar="PATH", help="write per-tensor statistics as JSON "
                                                  "('-' for stdout)")
    q.set_defaults(func=cmd_checksum)

    q = sub.add_parser("stats", help="per-tensor statistics of a model file (any format compare reads)")
    q.add_argument("file", help="llm.c checkpoint, PyTorch state dict, .safetensors, Hugging Face model "
                                "directory, or .npz")
    q.add_argument("--format", choices=("llmc", "torch", "safetensors", "npz"),
                   help="override the format detected from the magic and suffix")
    q.add_argument("--layout", choices=("llmc", "nanogpt", "hf"),
                   help="override the layout detected from the tensor names")
    q.add_argument("--json", metavar="PATH", help="also write them as JSON ('-' for stdout)")
    q.set_defaults(func=cmd_stats)

    q = sub.add_parser("params", help="the parameter table: names, shapes, offsets, counts, "
                                      "and the state-dict names other implementations use, and "
                                      "the init scheme's law of every tensor")
    add_config_args(q)
    add_scheme_args(q)
    q.add_argument("--json", metavar="PATH", help="write the scheme's law table as JSON ('-' for stdout)")
    q.add_argument("--layout", choices=("llmc", "nanogpt", "hf"), default="nanogpt",
                   help="whose state-dict names/shapes to show (hf transposes Conv1D weights)")
    q.set_defaults(func=cmd_params)

    q = sub.add_parser("golden", help="write or check the golden statistics and checksums")
    q.add_argument("action", choices=("write", "check"))
    q.add_argument("names", nargs="*", help="golden records (default: all but d36/d48)")
    q.add_argument("--all", action="store_true", help="include the large d36 and d48 records")
    q.set_defaults(func=cmd_golden)
