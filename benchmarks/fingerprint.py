"""Bit-level fingerprints of short fp32 CPU training runs, to check that a refactor changes nothing.

    python benchmarks/fingerprint.py --out /tmp/before.json          # on the old commit
    python benchmarks/fingerprint.py --compare /tmp/before.json      # on the new one

Trains every backbone x objective (and a continuous-action and an image variant) for a short
tiny-preset run in one thread and hashes every tensor of the agent's state dict (SHA-256 of the
raw bytes). ``--compare`` prints which combinations differ and exits 1 if any does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile

import torch

# (label, backbone, preset, env, extra --set overrides)
CASES = [
    ("rssm", "rssm", "tiny", "gym:CartPole-v1", []),
    ("rssm-cont", "rssm", "tiny", "gym:Pendulum-v1", []),
    ("rssm-image", "rssm", "tiny", "minatar:breakout", ["env_cfg.minatar_obs=image"]),
    ("rssm-2025", "rssm", "tiny2025", "gym:CartPole-v1", []),
    ("tssm", "tssm", "storm-tiny", "gym:CartPole-v1", []),
    ("vae-lstm", "vae-lstm", "vae-lstm-tiny", "gym:CartPole-v1", []),
]
OBJECTIVES = ["none", "var", "tempo", "dream-critic"]


def fingerprint(backbone: str, preset: str, env: str, objective: str, sets: list[str],
                steps: int, ignore: tuple[str, ...] = ()) -> str:
    from vawm.config import build_config
    from vawm.train import Trainer
    cfg = build_config(preset, {"backbone": backbone, "objective": objective, "env": env,
                                "steps": steps, "seed": 3},
                       ["run.prefill=40", "run.eval_episodes=1", "run.threads=1", *sets])
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, d, progress=False)
        tr.train()
        h = hashlib.sha256()
        _hash(h, {k: v for k, v in tr.agent.state_dict().items() if k not in ignore})
        return f"{h.hexdigest()[:16]} updates={tr.agent.updates}"


def _hash(h, x) -> None:
    if isinstance(x, dict):
        for k in sorted(x):
            h.update(str(k).encode())
            _hash(h, x[k])
    elif isinstance(x, torch.Tensor):
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
    else:
        h.update(repr(x).encode())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="write the fingerprints to this JSON file")
    p.add_argument("--compare", help="compare with fingerprints written earlier by --out")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--ignore", nargs="*", default=[],
                   help="state-dict keys to leave out (entries a refactor removed on purpose)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    got = {}
    for label, backbone, preset, env, sets in CASES:
        for obj in OBJECTIVES:
            key = f"{label}+{obj}"
            got[key] = fingerprint(backbone, preset, env, obj, sets, args.steps, tuple(args.ignore))
            print(f"{key:28s} {got[key]}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(got, f, indent=1)
    if args.compare:
        with open(args.compare) as f:
            ref = json.load(f)
        bad = [k for k in ref if got.get(k) != ref[k]]
        print("identical" if not bad else "DIFFERENT: " + ", ".join(bad))
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
