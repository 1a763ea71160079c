"""`gpt2-verify ablate`: train small GPT-2s under several init schemes x seeds on the same data
and compare their losses with confidence intervals (verify.experiments.study)."""

from __future__ import annotations

import math

from gpt2_verify.reference.config import GPTConfig

from ..errors import EXIT_OK, InputError
from .common import add_config_args, add_executor_args, check_seed, config_from_args, emit_json

DEFAULT_SCHEMES = "gpt2,torch-default,xavier-normal,gpt2+attprojw,fcprojw.scale=10"


def _data(args):
    from ..experiments import sources

    given = [x for x in (args.tokens, args.text) if x]
    if len(given) > 1:
        raise InputError(None, "give at most one of --tokens SHARD and --text FILE")
    if args.tokens:
        return sources.shard_tokens(args.tokens, vocab=args.vocab or 50257, val_path=args.val_tokens)
    if args.text:
        return sources.text_tokens(args.text)
    if args.markov_vocab < 2 or not args.markov_alpha > 0:
        raise InputError(None, "--markov-vocab must be >= 2 and --markov-alpha positive")
    return sources.markov_tokens(vocab=args.markov_vocab, alpha=args.markov_alpha, seed=args.data_seed,
                                 train_tokens=args.train_tokens,
                                 val_tokens=max(args.train_tokens // 20, 4096))


def _config(args, vocab: int) -> GPTConfig:
    if args.descriptor or args.layers is not None:
        cfg = config_from_args(args)
        if cfg.vocab < vocab:
            raise InputError(None, f"the config's vocab {cfg.vocab} is smaller than the data's {vocab}")
        return cfg
    # the default small model: L4 C128 NH4 over the data's vocabulary
    return GPTConfig(4, 128, 4, vocab=vocab, max_seq_len=max(args.seq, 64))


def cmd_ablate(args) -> int:
    from ..experiments import study

    if args.steps < 1 or args.batch < 1 or args.seq < 1 or not args.lr > 0 or not math.isfinite(args.lr):
        raise InputError(None, "--steps, --batch and --seq must be >= 1 and --lr positive")
    if args.eval_every < 1 or args.log_every < 1:
        raise InputError(None, "--eval-every and --log-every must be >= 1")
    try:
        seeds = tuple(int(x) for x in args.seeds.split(",")) if "," in args.seeds else \
            tuple(range(int(args.seeds)))
    except ValueError:
        raise InputError(None, f"--seeds {args.seeds!r}: give a count (3) or a list (0,1,2)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(None, f"--seeds {args.seeds!r}: give at least one seed, each once")
    for seed in seeds:
        check_seed(seed)
    try:
        arms = tuple(study.parse_arms(args.schemes, args.overrides))
    except ValueError as e:
        raise InputError(None, str(e)) from None
    data = _data(args)
    cfg = _config(args, data.vocab)
    if args.seq > cfg.max_seq_len:
        raise InputError(None, f"--seq {args.seq} > the config's maxT {cfg.max_seq_len}")
    target = args.target_loss
    if target is None and data.entropy_rate is not None:
        target = round(data.entropy_rate + 0.1, 4)
    if args.gpus_per_run < 0 or not args.cpus_per_run > 0:
        raise InputError(None, "--gpus-per-run must be >= 0 and --cpus-per-run positive")
    device = args.device
    if args.gpus_per_run:  # each Ray task gets its own GPU(s)
        if args.executor != "ray":
            raise InputError(None, "--gpus-per-run goes with --executor ray")
        device = "cuda"
    elif device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    s = study.Settings(cfg, arms, seeds, args.steps, args.batch, args.seq, args.lr,
                       weight_decay=args.weight_decay, eval_every=args.eval_every, log_every=args.log_every,
                       target_loss=target, device=device, profile=args.profile, data=data.to_dict())
    made = []

    def ray_executor():  # started only if some run is still to train
        from .. import executors

        made.append(executors.make("ray", workers=None, address=args.ray_address,
                                   cpus_per_task=args.cpus_per_run, gpus_per_task=args.gpus_per_run))
        return made[-1]

    if args.ray_address and args.executor != "ray":
        raise InputError(None, "--ray-address goes with --executor ray")
    if args.executor == "ray":
        from .. import executors

        executors.require_ray()  # a missing extra is reported before any work
    try:
        summary = study.run_ablation(s, data, args.output, force=args.force,
                                     executor=ray_executor if args.executor == "ray" else None)
    finally:
        for ex in made:
            ex.close()
    if args.plot:  # the same figures as the report's ablation section
        from pathlib import Path

        from ..atomic import atomic_output
        from ..report import figures as F

        try:
            F.require_matplotlib()
        except F.MatplotlibMissing as e:
            raise InputError(None, str(e)) from None
        from ..records import AblateSummary

        schemes = AblateSummary.from_dict(summary).schemes
        pngs = {"loss_curves.png": F.ablation_curves(schemes, entropy_rate=data.entropy_rate,
                                                     target_loss=target),
                "final_loss.png": F.ablation_final(schemes),
                "grad_norm_profile.png": F.grad_norm_profiles(schemes)}
        for name, png in pngs.items():
            with atomic_output(Path(args.output) / name) as fh:
                fh.write(png)
    if args.json:
        emit_json(args.json, summary)
    if args.json != "-":
        print(study.render(summary))
        print(f"runs and summary.json in {args.output}")
    return EXIT_OK


def register(sub) -> None:
    q = sub.add_parser("ablate", help="train small models under several init schemes x seeds on the same "
                                      "data and compare their losses with 95%% confidence intervals")
    add_config_args(q, seed=False)  # init seeds: --seeds
    q.add_argument("--schemes", default=DEFAULT_SCHEMES,
                   help="comma-separated arms: a scheme, optionally with overrides joined by '+', e.g. "
                        "'gpt2,torch-default,gpt2+attprojw,fcprojw.scale=10' (default: %(default)s)")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="T.F=V",
                   help="an override applied to every arm (repeatable)")
    q.add_argument("--seeds", default="3", help="init seeds: a count (3 -> 0,1,2) or a list (default 3)")
    q.add_argument("--steps", type=int, default=300, help="AdamW steps per run (300)")
    q.add_argument("--batch", type=int, default=8, help="B (8)")
    q.add_argument("--seq", type=int, default=64, help="T (64)")
    q.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (1e-3)")
    q.add_argument("--weight-decay", type=float, default=0.0, help="on the matrices, as train_gpt2.cu (0)")
    q.add_argument("--eval-every", type=int, default=25, help="held-out loss every N steps (25)")
    q.add_argument("--log-every", type=int, default=25,
                   help="gradient norms, activation RMS every N steps (25)")
    q.add_argument("--target-loss", type=float, default=None,
                   help="report steps to reach this train loss (default: entropy rate + 0.1 for Markov data)")
    q.add_argument("--tokens", metavar="SHARD", help="train on an llm.c token shard (last 10%% held out)")
    q.add_argument("--val-tokens", metavar="SHARD", help="held-out shard for --tokens")
    q.add_argument("--text", metavar="FILE", help="train byte-level (V=256) on a text file")
    q.add_argument("--markov-vocab", type=int, default=64, help="Markov source: vocabulary (64)")
    q.add_argument("--markov-alpha", type=float, default=0.1,
                   help="Markov source: Dirichlet concentration of the transition rows (0.1)")
    q.add_argument("--train-tokens", type=int, default=400_000, help="Markov source: train tokens (400,000)")
    q.add_argument("--data-seed", type=int, default=0,
                   help="Markov source: seed of the chain and samples (0)")
    q.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="cpu (default) or cuda")
    add_executor_args(q, what="the runs")
    q.add_argument("--cpus-per-run", type=float, default=1, metavar="N",
                   help="Ray: CPUs each run reserves, and its torch thread count (1)")
    q.add_argument("--gpus-per-run", type=float, default=0, metavar="G",
                   help="Ray: GPUs each run reserves (> 0 trains on cuda; 0: CPU runs)")
    q.add_argument("--plot", action="store_true", help="also write DIR/loss_curves.png (needs matplotlib)")
    q.add_argument("--force", action="store_true", help="redo every run in DIR, replacing its settings")
    q.add_argument("--json", metavar="PATH|-", help="also write the summary as JSON ('-': stdout, only JSON)")
    q.add_argument("-o", "--output", required=True, metavar="DIR", help="run directory (resumable)")
    q.set_defaults(func=cmd_ablate)
