"""The ``vrnn`` command line: a table of subcommands over library functions.

    vrnn train --data handwriting --model vrnn-gmm --preset small --max-steps 2000
    vrnn evaluate runs/handwriting-vrnn-gmm/best.pt --split test --samples 40 --json
    vrnn score runs/handwriting-vrnn-gmm/best.pt --out scores.csv
    vrnn sample runs/handwriting-vrnn-gmm/best.pt --num 8 --steps 300 --temperature 0.8
    vrnn analyse runs/speech-vrnn-gauss/best.pt --data speech
    vrnn data list
    vrnn data info handwriting
    vrnn data pack old.npz new.npz --trust-pickle
    vrnn info runs/handwriting-vrnn-gmm/best.pt
    vrnn pretrained
    vrnn sample --pretrained speech-vrnn-gauss --steps 160
    vrnn export runs/handwriting-vrnn-gmm/best.pt --format safetensors
    vrnn presets --kind strokes
    vrnn demo
    vrnn reproduce --data handwriting --budget-minutes 20
    vrnn benchmark ...

Adding a subcommand is one entry in :data:`COMMANDS` (``Command(help, add_arguments, run)``, or
``Command(help, passthrough="module:function")`` for a command that parses its own arguments).
A mistake the user can fix (a bad flag value, a missing or corrupt file, data that does not fit the
checkpoint, a request that does not fit in memory or ran out of it) prints one line naming the flag
or file and exits with status 2; set ``VRNN_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILED = 1


@dataclass
class Command:
    """One subcommand: ``add_arguments(parser)`` then ``run(args) -> exit status``; or a
    ``passthrough`` ("module:function") that receives the remaining argv unparsed."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    run: Callable[[argparse.Namespace], int | None] | None = None
    passthrough: str | None = None


# -- flags that several subcommands share ---------------------------------------------------------

def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")


def _add_seed(p: argparse.ArgumentParser, text: str | None = None) -> None:
    """--seed (default 0); ``text`` is the subcommand's help for it."""
    p.add_argument("--seed", type=int, default=0, help=text)


def _add_overwrite(p: argparse.ArgumentParser,
                   text: str = "replace an existing --out (refused without)") -> None:
    p.add_argument("--overwrite", action="store_true", help=text)


def _add_skip_bad(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-bad", action="store_true",
                   help="report and skip unreadable or invalid data files instead of stopping")


# -- train ----------------------------------------------------------------------------------------

def _train_args(p: argparse.ArgumentParser) -> None:
    from vrnn.train.config import add_train_flags

    add_train_flags(p, required=("data", "model"))


def _train(args: argparse.Namespace) -> int:
    from vrnn.train.config import TrainConfig, config_from_args
    from vrnn.train.loop import train

    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    result = train(config_from_args(fields, args.argv[1:]))
    if result.summary() is not None:  # None on the ranks other than 0
        print(result.summary())
    return result.exit_status


# -- checkpoints ----------------------------------------------------------------------------------

def _checkpoint_arg(p: argparse.ArgumentParser) -> None:
    """A checkpoint file, or a pretrained model that ships with the package."""
    p.add_argument("checkpoint", metavar="CKPT", nargs="?", help="a checkpoint file")
    p.add_argument("--pretrained", default=None, metavar="NAME",
                   help="instead of CKPT, a model that ships with vrnn (`vrnn pretrained` "
                        "lists them); what it writes goes to runs/pretrained/NAME/ by default")


def _checkpoint(args: argparse.Namespace) -> str:
    """The checkpoint file of CKPT or --pretrained (exactly one of them)."""
    from vrnn.store.pretrained import pretrained_path

    if (args.checkpoint is None) == (args.pretrained is None):
        raise ValueError("give a checkpoint file CKPT or --pretrained NAME, one of them")
    if args.pretrained is not None:  # '' too (an unset shell variable): pretrained_path says so
        return str(pretrained_path(args.pretrained))
    return args.checkpoint


def _default_out(args: argparse.Namespace, name: str) -> str | None:
    """--out as given, or for --pretrained runs/pretrained/NAME/<name> (never the package)."""
    from vrnn.store.pretrained import output_folder

    if args.out or args.pretrained is None:
        return args.out
    return str(output_folder(args.pretrained) / name)


def _checkpoint_data_args(p: argparse.ArgumentParser) -> None:
    """The flags of a subcommand that applies a checkpoint to a split of data."""
    _checkpoint_arg(p)
    p.add_argument("--data", default=None,
                   help="default: the checkpoint's data set (a table, CSV, TSV or Parquet, is "
                        "read with the sequence, time and feature columns it was trained on)")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_data_args(p)
    p.add_argument("--estimator", choices=("is", "smc"), default="is",
                   help="is: importance sampling (the paper's); smc: a particle filter that "
                        "resamples when the effective sample size falls below S/2 (default is)")
    p.add_argument("--samples", type=int, default=40,
                   help="importance samples per sequence, or smc's particles per filter "
                        "(default 40, as the paper)")
    p.add_argument("--repeats", type=int, default=4,
                   help="smc: independent filters per sequence for its standard error, "
                        "REPEATS x SAMPLES trajectories in all (default 4)")
    p.add_argument("--resampling", choices=("multinomial", "systematic"), default=None,
                   help="smc: how a filter draws its particles' ancestors when it resamples "
                        "(default multinomial; importance sampling does not resample)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-sequences", type=int, default=0, help="evaluate the first N only")
    _add_skip_bad(p)
    _add_seed(p, "seed of the samples or particles")
    _add_device(p)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="the dtype of the matrix products: fp32 (default, the reference) or "
                        "bf16 (bfloat16 products, densities and sums in float32; faster where "
                        "the hardware multiplies bf16, refused where it does not)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (with ess_mean, ess_min; smc: resamples_mean)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")
    _add_overwrite(p)


def _evaluate(args: argparse.Namespace) -> int:
    from vrnn.commands.evaluate import evaluate_checkpoint, format_evaluation
    from vrnn.host.files import WriteError, check_folder, refuse_existing, write_text

    if args.out:  # before the work, not after it
        check_folder(Path(args.out).parent, "--out")
        refuse_existing([args.out], "--out", args.overwrite)
    result = evaluate_checkpoint(_checkpoint(args), data=args.data, split=args.split,
                                 samples=args.samples, batch_size=args.batch_size,
                                 max_sequences=args.max_sequences, seed=args.seed,
                                 device=args.device, skip_bad=args.skip_bad,
                                 estimator=args.estimator, repeats=args.repeats,
                                 precision=args.precision, resampling=args.resampling)
    print(json.dumps(result) if args.json else format_evaluation(result))
    if args.out:
        try:  # not over a file that appeared meanwhile, unless --overwrite
            write_text(args.out, json.dumps(result, indent=2) + "\n", overwrite=args.overwrite,
                       flag="--out")
        except WriteError:
            if not args.json:  # the numbers took minutes: keep them on stdout
                print(json.dumps(result))
            raise
    return 0


def _score_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_data_args(p)
    p.add_argument("--samples", type=int, default=40,
                   help="particles of the one particle filter per sequence (default 40; an RNN "
                        "is exact and draws none)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-sequences", type=int, default=0, help="score the first N only")
    _add_skip_bad(p)
    _add_seed(p, "seed of the particles")
    _add_device(p)
    p.add_argument("--out", default=None, metavar="CSV",
                   help="one row per valid step: sequence (index in the split), step (from 0), "
                        "log_p (log p(x_t | x_<t), nats), ess (1 to --samples), kl (nats); "
                        "default: CKPT's folder/scores.csv")
    _add_overwrite(p)


def _score(args: argparse.Namespace) -> int:
    from vrnn.commands.score import format_scores, score_checkpoint

    result = score_checkpoint(_checkpoint(args), data=args.data, split=args.split,
                              samples=args.samples, batch_size=args.batch_size,
                              max_sequences=args.max_sequences, seed=args.seed,
                              device=args.device, skip_bad=args.skip_bad,
                              out=_default_out(args, "scores.csv"), overwrite=args.overwrite)
    print(format_scores(result))
    return 0


def _sample_args(p: argparse.ArgumentParser) -> None:
    from vrnn.commands.sample import MAX_PICTURES

    _checkpoint_arg(p)
    p.add_argument("--num", type=int, default=4,
                   help=f"sequences to draw (default 4; all go to samples.npy, the first "
                        f"{MAX_PICTURES} to pictures and sound files)")
    p.add_argument("--steps", type=int, default=None,
                   help="frames per sequence (default: the median training length)")
    p.add_argument("--prime", default=None, metavar="FILE",
                   help="a .npy (P, D) prefix in data units, or an audio file for audio models; "
                        "encoded with the posterior, then the model continues it. samples.npy "
                        "holds the continuations, primed.npy prefix + continuation, and the "
                        "pictures and sound files show prefix + continuation")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scales output noise: mixture and Bernoulli logits / X, scales * sqrt(X)"
                        " (default 1; < 1 gives tidier, less varied samples)")
    _add_seed(p, "seed of the random stream (default 0)")
    p.add_argument("--out", default=None, metavar="DIR", help="default: CKPT's folder/samples")
    _add_overwrite(p, "replace the samples an earlier run wrote into --out (refused without)")
    _add_device(p)


def _sample(args: argparse.Namespace) -> int:
    from vrnn.commands.sample import sample_checkpoint

    result = sample_checkpoint(_checkpoint(args), num=args.num, steps=args.steps,
                               prime=args.prime, temperature=args.temperature, seed=args.seed,
                               out=_default_out(args, "samples"), device=args.device,
                               overwrite=args.overwrite)
    print(result.line())
    for path in result.files:
        print(f"  {path}")
    return 0


def _analyse_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_data_args(p)
    p.add_argument("--index", type=int, default=0, help="which sequence of the split")
    _add_skip_bad(p)
    p.add_argument("--out", default=None, metavar="PNG", help="default: CKPT's folder/kl.png")
    _add_overwrite(p)
    _add_seed(p, "seed of the posterior samples")
    _add_device(p)


def _analyse(args: argparse.Namespace) -> int:
    from vrnn.commands.analyse import analyse_checkpoint

    png = analyse_checkpoint(_checkpoint(args), data=args.data, split=args.split,
                             index=args.index, out=_default_out(args, "kl.png"), seed=args.seed,
                             device=args.device, skip_bad=args.skip_bad,
                             overwrite=args.overwrite)
    print(f"KL per time step of {args.split} sequence {args.index}: {png}")
    return 0


def _info_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_arg(p)
    p.add_argument("--json", action="store_true")


def _info(args: argparse.Namespace) -> int:
    from vrnn.commands.info import checkpoint_info, format_checkpoint_info

    info = checkpoint_info(_checkpoint(args))
    print(json.dumps(info, default=str) if args.json else format_checkpoint_info(info))
    return 0


def _pretrained_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="the index entries as one JSON object")


def _pretrained(args: argparse.Namespace) -> int:
    from vrnn.store.pretrained import format_pretrained, read_index

    index = read_index()
    print(json.dumps(index) if args.json else format_pretrained(index))
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--format", default="safetensors", choices=("safetensors",))
    p.add_argument("--out", default=None, metavar="FILE",
                   help="default: CKPT with a .safetensors suffix (a .json of the config beside)")
    _add_overwrite(p, "replace an existing --out and its .json (refused without)")


def _export(args: argparse.Namespace) -> int:
    from vrnn.store.checkpoint import export_safetensors, load_checkpoint

    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".safetensors")
    weights, config = export_safetensors(load_checkpoint(args.checkpoint), out,
                                         overwrite=args.overwrite)
    print(f"weights: {weights}\nconfig:  {config}")
    return 0


# -- data, presets, studies -----------------------------------------------------------------------

def _data_info_fields() -> list[str]:
    """The data flags of ``vrnn train`` that ``vrnn data info`` takes (the data set is its
    positional argument)."""
    from vrnn.train.config import DATA_FIELDS

    return [f for f in DATA_FIELDS if f != "data"]


def _data_args(p: argparse.ArgumentParser) -> None:
    from vrnn.train.config import add_train_flags

    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="the built-in data sets and whether they are installed")
    ls.add_argument("--json", action="store_true")
    info = sub.add_parser("info", help="splits, lengths and normalisation statistics of a data "
                                       "set (loads it)")
    info.add_argument("name", metavar="NAME_OR_PATH")
    add_train_flags(info, only=_data_info_fields())
    info.add_argument("--json", action="store_true")
    pack = sub.add_parser("pack", help="write sequences (a .npy / .npz file or a folder of them) "
                                       "to the pickle-free .npz layout --data reads")
    pack.add_argument("source", metavar="SRC", help="a .npy / .npz file or a folder")
    pack.add_argument("target", metavar="NEW.npz")
    pack.add_argument("--trust-pickle", action="store_true",
                      help="read NumPy object arrays by unpickling them, which runs any code the "
                           "file carries: only for a file you made or trust")
    pack.add_argument("--json", action="store_true")


def _data(args: argparse.Namespace) -> int:
    from vrnn.commands.info import format_dataset, format_packed
    from vrnn.data import format_dataset_table, list_datasets, load_dataset, pack_sequences

    if args.action == "list":
        rows = list_datasets()
        print(json.dumps(rows, default=str) if args.json else format_dataset_table(rows))
        return 0
    if args.action == "pack":
        packed = pack_sequences(args.source, args.target, allow_pickle=args.trust_pickle)
        print(json.dumps(packed) if args.json else format_packed(packed))
        return 0
    ds = load_dataset(args.name, **{k: getattr(args, k) for k in _data_info_fields()})
    summary = ds.summary()
    print(json.dumps(summary, default=str) if args.json
          else format_dataset(ds, summary, args.seq_len))
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", metavar="DIR")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run in seconds (tiny models, few steps); numbers mean nothing")
    _add_seed(p)
    p.add_argument("--serial", action="store_true",
                   help="train the models one after the other in this process (default: one "
                        "process per model, at the same time)")


def _demo(args: argparse.Namespace) -> int:
    from vrnn.study.demo import run_demo

    run_demo(Path(args.out), quick=args.quick, seed=args.seed, parallel=not args.serial)
    return 0


def _presets_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=("audio", "strokes", "binary", "text"), default=None,
                   help="only this data kind (default all)")
    p.add_argument("--x-dim", type=int, default=None,
                   help="frame size (default 200 audio, 3 strokes, 88 binary)")


def _presets(args: argparse.Namespace) -> int:
    from vrnn.models.presets import DATA_KINDS, format_parameter_table

    if args.x_dim is not None and args.x_dim < 1:
        raise ValueError(f"--x-dim must be >= 1, got {args.x_dim}")
    print(format_parameter_table((args.kind,) if args.kind else DATA_KINDS, x_dim=args.x_dim))
    return 0


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    from vrnn.study.reproduce import build_parser

    build_parser(p)


def _reproduce(args: argparse.Namespace) -> int:
    from vrnn.study.reproduce import run_study

    run_study(args)
    return 0


COMMANDS: dict[str, Command] = {
    "train": Command("train a model (VRNN, SRNN, DMM, STORN or RNN baseline) on a data set",
                     _train_args, _train),
    "evaluate": Command("ELBO and log-likelihood of a checkpoint on a split (Table 1 numbers)",
                        _evaluate_args, _evaluate),
    "score": Command("log p(x_t | x_<t) of every step of a split, with its ESS and KL, as a CSV "
                     "(per-step scores: where the model is surprised)", _score_args, _score),
    "sample": Command("generate sequences (pictures / audio and .npy)", _sample_args, _sample),
    "analyse": Command("KL per time step beside a test sequence (Figure 2)", _analyse_args,
                       _analyse),
    "data": Command("the data sets", _data_args, _data),
    "info": Command("what a checkpoint holds", _info_args, _info),
    "export": Command("export weights for sharing (safetensors + JSON config)", _export_args,
                      _export),
    "pretrained": Command("the pretrained models that ship with vrnn, with their test "
                          "log-likelihoods (use one with --pretrained NAME)", _pretrained_args,
                          _pretrained),
    "demo": Command("VRNN-Gauss against RNN-Gauss and RNN-GMM on raw speech in about five "
                    "minutes (chorales when speech is absent): report.md + report.html with "
                    "audio", _demo_args, _demo),
    "presets": Command("parameter counts of every model at every preset", _presets_args,
                       _presets),
    "reproduce": Command("the paper's comparison (Table 1, Figs. 2-4) on one data set; "
                         "--study srnn: the SRNN paper's; objectives: the training bounds; "
                         "families: RNN, VRNN, SRNN, DMM, STORN",
                         _reproduce_args, _reproduce),
    "benchmark": Command("speed benchmark (vrnn benchmark --help)",
                         passthrough="vrnn.bench:main"),
}


def build_parser() -> argparse.ArgumentParser:
    from vrnn import __version__

    parser = argparse.ArgumentParser(
        prog="vrnn", description="Variational Recurrent Neural Networks (Chung et al., 2015).")
    parser.add_argument("--version", action="version", version=f"vrnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help,
                           add_help=cmd.passthrough is None)
        if cmd.add_arguments is not None:
            cmd.add_arguments(p)
        p.set_defaults(func=cmd.run)
    return parser


MEMORY_FLAGS = {"train": "a smaller --batch-size or --seq-len, fewer --particles",
                "evaluate": "fewer --samples, a smaller --batch-size",
                "score": "fewer --samples, a smaller --batch-size",
                "sample": "fewer --num or --steps",
                "reproduce": "a smaller --batch-size, fewer --samples"}
"""What to ask for instead after running out of memory, by command."""


def _user_error(command: str, err: BaseException | str) -> int:
    print(f"vrnn {command}: error: {err}", file=sys.stderr)
    return EXIT_USAGE


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line for a person at a terminal (no source line)."""
    print(f"vrnn: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vrnn`` and ``python -m vrnn``; returns the exit status."""
    if argv is None:  # the console script: a person reads the warnings, not a test harness
        warnings.showwarning = _show_warning
        from vrnn.host.allocator import keep_freed_memory

        keep_freed_memory()  # a process of its own: freed buffers stay mapped (vrnn.host.allocator)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS and COMMANDS[argv[0]].passthrough:
        module, func = COMMANDS[argv[0]].passthrough.split(":")
        try:
            target = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as e:
            print(f"vrnn {argv[0]}: error: not available in this installation ({e})",
                  file=sys.stderr)
            return EXIT_USAGE
        return int(target(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    args.argv = argv
    code = _run(args)
    from vrnn.train.distributed import exit_now

    exit_now(code)  # a torchrun rank ends here, before interpreter shutdown (see exit_now)
    return code


def _run(args) -> int:
    """Run the parsed command; user errors become one line on stderr and an exit status."""
    debug = os.environ.get("VRNN_DEBUG")
    from vrnn.study.interrupt import StudyInterrupted
    from vrnn.train.loop import TrainingError

    try:
        if getattr(args, "seed", None) is not None:  # every command that takes --seed
            from vrnn.train.config import check_seed

            check_seed(args.seed)
        return int(args.func(args) or 0)
    except StudyInterrupted as e:  # a study stopped by a signal: 130 for Ctrl-C, 143 SIGTERM
        print(f"vrnn {args.command}: {e}", file=sys.stderr)
        return e.exit_status
    except TrainingError as e:
        if debug:
            raise
        print(f"vrnn {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `vrnn ... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, OSError) as e:  # user errors: DataError, CheckpointError, bad flags...
        if debug:
            raise
        return _user_error(args.command, e)
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError, the CPU allocator's
        from vrnn.host.memory import is_out_of_memory, out_of_memory_line

        if debug or not is_out_of_memory(e):
            raise
        flags = MEMORY_FLAGS.get(args.command)
        return _user_error(args.command, out_of_memory_line(e)
                           + (f"; ask for less ({flags})" if flags else ""))
    except KeyboardInterrupt:
        print(f"vrnn {args.command}: interrupted", file=sys.stderr)
        return 130
