"""``vawm garnet``: the calibration lab of Voelcker et al. 2025 (Garnet sweep + cliff-walk policy iteration).

Writes into --out: results.csv (every seed x setting), config.json, garnet_value_error.png,
garnet_model.png, cliff.png and summary.md. Bad flag values print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vawm.garnet.experiment import (
    DEFAULT_LOSSES,
    EXPERIMENTS,
    CliffSettings,
    GarnetSettings,
    SweepConfig,
    groups,
    run_sweep,
)
from vawm.garnet.train import LOSS_HELP, TrainConfig, parse_loss

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(USAGE_ERROR)


def _list(cast: Callable, check: Callable[[object], bool], what: str) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            vals = tuple(cast(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, "
                                             f"got {text!r}") from None
        if not vals or not all(check(v) for v in vals):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, "
                                             f"got {text!r}")
        return vals
    return parse


def _num(cast: Callable, check: Callable[[object], bool], what: str) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not check(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


def _losses(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    for name in names:
        try:
            parse_loss(name)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {LOSS_HELP}")
    return names


def _experiments(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in names if x not in EXPERIMENTS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"unknown experiment(s) {bad or text!r}; choose from "
                                         f"{', '.join(EXPERIMENTS)}")
    return names


POS_INT = _num(int, lambda v: v >= 1, "an integer >= 1")
POS_FLOAT = _num(float, lambda v: v > 0, "a number > 0")
GAMMA = _num(float, lambda v: 0 <= v < 1, "a discount in [0, 1)")
_G, _C, _T = GarnetSettings(), CliffSettings(), TrainConfig()   # defaults


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vawm garnet", description="The Garnet lab of Voelcker et al. 2025: "
                "value error of MLE, IterVAML, (m,b)-VAML (MuZero) and calibrated CVAML "
                "against temperature and model rank, and greedy policy iteration on a 5x5 "
                "stochastic cliff-walk. Defaults are those of docs/garnet.md.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--experiments", type=_experiments, default=EXPERIMENTS,
                   help="comma list of: garnet, cliff")
    p.add_argument("--seeds", type=POS_INT, default=10, help="number of seeds")
    p.add_argument("--seed-start", type=_num(int, lambda v: v >= 0, "an integer >= 0"),
                   default=0, help="first seed (seeds are seed-start .. seed-start+seeds-1)")
    p.add_argument("--losses", type=_losses, default=DEFAULT_LOSSES, help=LOSS_HELP)
    p.add_argument("--samples", type=POS_INT, default=_T.n_samples,
                   help="model samples n of the sample-based losses (calibrated: n >= 2)")
    p.add_argument("--workers", type=POS_INT, default=2,
                   help="worker processes (one thread each); 1 = run in this process")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    t = p.add_argument_group("training (shared)")
    t.add_argument("--steps", type=POS_INT, default=_T.steps, help="Garnet: gradient steps")
    t.add_argument("--lr-model", type=POS_FLOAT, default=_T.lr_model, help="Adam, model")
    t.add_argument("--lr-value", type=POS_FLOAT, default=_T.lr_value, help="Adam, value")
    t.add_argument("--adam-eps", type=POS_FLOAT, default=_T.eps,
                   help="Adam's epsilon (1e-8: drifts along flat minima, docs/garnet.md)")
    t.add_argument("--init-std", type=POS_FLOAT, default=_T.init_std,
                   help="std of the N(0, s^2) initial entries of A and B")
    t.add_argument("--target-every", type=POS_INT, default=_T.target_every,
                   help="copy the value to its target network every this many steps")
    t.add_argument("--grads", choices=("fused", "autograd"), default=_T.grads,
                   help="hand-written M=1 gradients or autograd (same numbers)")
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="training precision (MDPs and metrics are float64)")
    t.add_argument("--raw-rewards", action="store_true",
                   help="learn on the rewards as they are, not divided by max |r|")
    g = p.add_argument_group("Garnet (Voelcker et al. 2025 §5, App. B)")
    g.add_argument("--states", type=_num(int, lambda v: v >= 2, "an integer >= 2"),
                   default=_G.states, help="number of states n")
    g.add_argument("--successors", type=POS_INT, default=_G.successors,
                   help="successors k per state (<= states)")
    g.add_argument("--actions", type=POS_INT, default=_G.actions,
                   help="actions; the fixed policy picks one per state at random")
    g.add_argument("--gamma", type=GAMMA, default=_G.gamma, help="discount")
    g.add_argument("--reward", choices=("normal", "uniform"), default=_G.reward,
                   help="r(s,a) ~ N(0,1) or U[0,1]")
    g.add_argument("--temps", type=_list(float, lambda v: v > 0, "temperatures > 0"),
                   default=_G.temps, help="softmax temperatures tau")
    g.add_argument("--ranks", type=_list(int, lambda v: v >= 1, "ranks >= 1"), default=_G.ranks,
                   help="model ranks r (r = states is full rank)")
    c = p.add_argument_group("cliff-walk (Voelcker et al. 2025 App. _C.5)")
    c.add_argument("--cliff-size", type=_num(int, lambda v: v >= 3, "an integer >= 3"),
                   default=_C.size, help="grid side")
    c.add_argument("--cliff-probs", type=_list(float, lambda v: 0 <= v <= 1,
                                               "probabilities in [0, 1]"),
                   default=_C.probs, help="probabilities p of the intended move")
    c.add_argument("--cliff-ranks", type=_list(int, lambda v: v >= 1, "ranks >= 1"),
                   default=_C.ranks, help="model ranks")
    c.add_argument("--cliff-gamma", type=GAMMA, default=_C.gamma, help="discount")
    c.add_argument("--cliff-iterations", type=POS_INT, default=_C.iterations,
                   help="policy-iteration steps")
    c.add_argument("--cliff-steps", type=POS_INT, default=_C.steps,
                   help="gradient steps per policy evaluation")
    c.add_argument("--cliff-improve", choices=("model", "true"), default=_C.improve,
                   help="greedy step with the learned model or the true kernel")
    c.add_argument("--cliff-adam-eps", type=POS_FLOAT, default=_C.eps,
                   help="Adam's epsilon of the policy-evaluation phases")
    return p


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    return SweepConfig(
        seeds=tuple(range(args.seed_start, args.seed_start + args.seeds)),
        losses=args.losses, experiments=args.experiments, dtype=args.dtype,
        scale_rewards=not args.raw_rewards,
        train=TrainConfig(steps=args.steps, lr_model=args.lr_model, lr_value=args.lr_value,
                          init_std=args.init_std, target_every=args.target_every, eps=args.adam_eps,
                          n_samples=args.samples, grads=args.grads),
        garnet=GarnetSettings(states=args.states, successors=args.successors,
                              actions=args.actions, gamma=args.gamma, reward=args.reward,
                              temps=args.temps, ranks=args.ranks),
        cliff=CliffSettings(size=args.cliff_size, probs=args.cliff_probs,
                            ranks=args.cliff_ranks, gamma=args.cliff_gamma,
                            iterations=args.cliff_iterations, steps=args.cliff_steps,
                            improve=args.cliff_improve, eps=args.cliff_adam_eps))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.successors > args.states:
        parser.error(f"argument --successors: must be <= --states ({args.states}), "
                     f"got {args.successors}")
    if args.samples < 2 and any(parse_loss(x).calibrated for x in args.losses):
        parser.error("argument --samples: calibrated losses need --samples >= 2")
    cfg = config_from_args(args)
    # imported here so that `--help` and flag errors stay fast
    from tqdm import tqdm

    from vawm.garnet.plots import plot_sweep
    from vawm.garnet.summary import summary_markdown, write_csv

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = groups(cfg)
    start = time.perf_counter()
    with tqdm(total=len(todo), desc="vawm garnet", unit="group", disable=args.no_progress,
              file=sys.stderr) as bar:
        def done(g) -> None:
            bar.set_postfix_str(f"{g.experiment} {g.loss} r{g.rank}")
            bar.update(1)
        rows = run_sweep(cfg, workers=args.workers, on_done=done)
    wall = time.perf_counter() - start
    write_csv(out / "results.csv", rows)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(cfg, rows, wall, args.workers))
    figures = [] if args.no_plots else plot_sweep(cfg, rows, out)
    print(f"vawm garnet: {len(rows)} rows from {len(todo)} groups in {wall:.1f} s -> {out} "
          f"(results.csv, summary.md{''.join(', ' + f.name for f in figures)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
