"""The ``vawm`` command: train, eval, sweep, report, garnet, presets.

Bad input (unknown flag, config key, env id, preset, missing checkpoint) prints one line naming
the bad value and the valid choices and exits with code 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(USAGE_ERROR)


def _fail(msg: str) -> int:
    sys.stderr.write(f"vawm: error: {msg}\n")
    return USAGE_ERROR


def _train_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vawm train", description="Train a world-model agent (defaults: rssm on "
                "gym:CartPole-v1 with the cpu-cartpole preset; other backbones: cpu).")
    p.add_argument("--env", help="suite:task id, e.g. gym:CartPole-v1, dmc:walker-walk, "
                   "dmc-pixels:walker-walk, atari100k:Pong, minatar:breakout")
    p.add_argument("--backbone", help="world model: " + " | ".join(_registered("BACKBONES")))
    p.add_argument("--objective", help="value-aware objective: "
                   + " | ".join(_registered("OBJECTIVES")))
    p.add_argument("--preset", help="comma-separated presets, applied in order (see `vawm presets`)")
    p.add_argument("--steps", type=int, help="environment-step budget (frames: policy steps x repeat)")
    p.add_argument("--seed", type=int)
    p.add_argument("--run-dir",
                   help="run directory (default: runs/<env>-<backbone>-<objective>-s<seed>-<time>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set rssm.deter=512 (repeatable)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true",
                   help="print the fully resolved config as YAML and exit (same as `vawm config`)")
    return p


def _registered(name: str) -> list[str]:
    if name == "BACKBONES":
        from vawm.worldmodels import BACKBONES as reg
    else:
        from vawm.objectives import OBJECTIVES as reg
    return list(reg)


def cmd_train(argv: list[str]) -> int:
    args = _train_parser().parse_args(argv)
    from vawm.checkpoint import CheckpointError
    from vawm.checkpoint import exists as ckpt_exists
    from vawm.config import ConfigError, apply_dict, build_config, load_config_file, to_dict
    from vawm.envs import UnknownEnvError, parse_env_id
    from vawm.train import CKPT, NonFiniteLossError, RunInterrupted, Trainer

    try:
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / "config.yaml").exists():
                return _fail(f"cannot resume {run_dir}: no config.yaml there "
                             "(not a vawm run directory)")
            others = [k for k in ("env", "backbone", "objective", "preset", "seed", "run_dir")
                      if getattr(args, k) is not None] + (["set"] if args.set else [])
            if others:
                flags = ", ".join("--" + o.replace("_", "-") for o in others)
                return _fail(f"--resume takes its config from {run_dir}/config.yaml; drop {flags} "
                             "(only --steps may change)")
            cfg = load_config_file(str(run_dir / "config.yaml"))
            if args.steps is not None:
                apply_dict(cfg, {"steps": args.steps})
            if args.print_config:
                return _print_config(to_dict(cfg))
            if not ckpt_exists(run_dir / CKPT):
                print(f"vawm: no checkpoint in {run_dir} yet; starting it from its config", file=sys.stderr)
        else:
            overrides = {k: getattr(args, k) for k in ("env", "backbone", "objective", "steps", "seed")
                         if getattr(args, k) is not None}
            cfg = build_config(args.preset, overrides, args.set)
            parse_env_id(cfg.env)
            if args.print_config:
                return _print_config(to_dict(cfg))
            run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / (
                f"{cfg.env.replace(':', '-').replace('/', '-')}-{cfg.backbone}-{cfg.objective}"
                f"-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
            if (run_dir / "config.yaml").exists():
                return _fail(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                             "or choose another --run-dir")
        trainer = Trainer(cfg, run_dir, progress=not args.no_progress)
        print(f"vawm: training {cfg.backbone}+{cfg.objective} on {cfg.env} (preset {cfg.preset}, "
              f"seed {cfg.seed}, {cfg.steps} env steps) -> {run_dir}", file=sys.stderr)
        summary = trainer.train(resume=bool(args.resume))
    except (ConfigError, UnknownEnvError, CheckpointError) as e:
        return _fail(str(e))
    except NonFiniteLossError as e:
        sys.stderr.write(f"vawm: error: {e}\n")
        return 1
    except RunInterrupted as e:
        sys.stderr.write(f"\nvawm: {e}; continue with: vawm train --resume {run_dir}\n")
        return 128 + e.signum
    except KeyboardInterrupt:
        sys.stderr.write(f"\nvawm: interrupted; continue with: vawm train --resume {run_dir}\n")
        return 130
    print(f"final evaluation return: {summary['eval_return_mean']:.1f} ± "
          f"{summary['eval_return_std']:.1f} over {summary['eval_episodes']} episodes "
          f"({summary['env_steps']} env steps, {summary['updates']} updates, "
          f"{summary['wall_clock_s']:.0f} s)")
    print(f"run directory: {run_dir}")
    return 0


def _print_config(data: dict) -> int:
    import yaml
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    return 0


def cmd_config(argv: list[str]) -> int:
    """``vawm config [train flags]``: the resolved config of a ``vawm train`` command line."""
    return cmd_train([*argv, "--print-config"])


def cmd_eval(argv: list[str]) -> int:
    p = _Parser(prog="vawm eval", description="Score the checkpoint of a run directory.")
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--mode", choices=("sample", "mode"),
                   help="how the policy acts (default: the run's run.eval_mode)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    import json

    from vawm.acting import evaluate_policy
    from vawm.agent import Agent, resolve_device
    from vawm.checkpoint import CheckpointError
    from vawm.checkpoint import load_latest as load_ckpt
    from vawm.config import ConfigError, load_config_file
    from vawm.envs import UnknownEnvError, action_repeat, env_info
    from vawm.train import CKPT

    run_dir = Path(args.run_dir)
    try:
        if not (run_dir / "config.yaml").exists():
            return _fail(f"{run_dir} is not a vawm run directory (no config.yaml)")
        cfg = load_config_file(str(run_dir / "config.yaml"))
        if args.mode:
            cfg.run.eval_mode = args.mode
        sd = load_ckpt(run_dir / CKPT)
        device = resolve_device(args.device)
        agent = Agent(cfg, env_info(cfg.env, cfg.env_cfg)).to(device)
        agent.load_state_dict(sd["agent"])
        ev = evaluate_policy(agent, cfg, device, args.episodes)
    except (ConfigError, UnknownEnvError, CheckpointError) as e:
        return _fail(str(e))
    ev.update(env=cfg.env, updates=int(sd["updates"]),
              env_steps=int(sd["policy_steps"]) * action_repeat(cfg.env, cfg.env_cfg),
              eval_mode=cfg.run.eval_mode)
    (run_dir / "eval.json").write_text(json.dumps(ev, indent=2))
    print(f"evaluation return: {ev['eval_return_mean']:.1f} ± {ev['eval_return_std']:.1f} over "
          f"{ev['eval_episodes']} episodes ({run_dir}/eval.json)")
    return 0


def cmd_presets(argv: list[str]) -> int:
    from vawm.config import load_presets
    for name, body in load_presets().items():
        doc = (body or {}).get("doc", "")
        print(f"{name:12s} {doc}".rstrip())
    return 0


def _delegate(module: str, attr: str = "main"):
    def run(argv: list[str]) -> int:
        import importlib
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            return _fail(f"this command needs {e.name}; install it (see README)")
        return int(getattr(mod, attr)(argv) or 0)
    return run


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "sweep": _delegate("vawm.sweep"),
    "report": _delegate("vawm.report.cli"),
    "garnet": _delegate("vawm.garnet.cli"),
    "imagine": _delegate("vawm.imagine"),
    "presets": cmd_presets,
    "config": cmd_config,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        if not argv:
            argv = ["train"]  # the main job: `vawm` alone trains the default
        else:
            print("usage: vawm {" + ",".join(COMMANDS) + "} ...\n\n"
                  "  train    train an agent (default: rssm on gym:CartPole-v1, cpu-cartpole preset)\n"
                  "  eval     score a run's checkpoint\n"
                  "  sweep    run a grid of runs (locally or on a Ray cluster)\n"
                  "  report   tables and figures in the papers' layout\n"
                  "  garnet   the finite-MDP calibration lab\n"
                  "  imagine  a world model's imagined trajectories and value saliency\n"
                  "  presets  list config presets\n"
                  "  config   print the resolved config of a train command line (presets, --set)")
            return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "--version":
        from vawm import __version__
        print(__version__)
        return 0
    if cmd not in COMMANDS:
        return _fail(f"unknown command {cmd!r}; valid commands: {', '.join(COMMANDS)}")
    try:
        return COMMANDS[cmd](rest)
    except BrokenPipeError:          # `vawm sweep ... --dry-run | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no error at exit flush
        return 141                   # 128 + SIGPIPE, as a shell tool killed by the pipe


if __name__ == "__main__":
    sys.exit(main())
