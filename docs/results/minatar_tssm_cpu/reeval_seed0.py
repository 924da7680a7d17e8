"""Re-evaluate finished runs with run.eval_mode=sample exactly as the trainer's final evaluation
would have (same agent, same torch RNG state: the final checkpoint is saved right before it)."""
import json
import sys
from pathlib import Path

import torch

from vawm.checkpoint import load
from vawm.config import load_config_file, save_config
from vawm.envs import env_info
from vawm.train import CKPT, Agent, evaluate_policy

for run in map(Path, sys.argv[1:]):
    cfg = load_config_file(str(run / "config.yaml"))
    cfg.run.eval_mode = "sample"
    sd = load(run / CKPT)
    agent = Agent(cfg, env_info(cfg.env, cfg.env_cfg))
    agent.load_state_dict(sd["agent"])
    torch.set_num_threads(1)
    torch.set_rng_state(sd["rng"]["torch"])
    ev = evaluate_policy(agent, cfg, torch.device("cpu"), cfg.run.eval_episodes)
    summ = json.loads((run / "summary.json").read_text())
    old = {k: summ[k] for k in ("eval_return_mean", "eval_return_std", "eval_returns")}
    summ.update(ev)
    summ["reevaluated"] = {"eval_mode": "sample", "was": {"eval_mode": "mode", **old}}
    (run / "summary.json").write_text(json.dumps(summ, indent=2))
    save_config(cfg, str(run / "config.yaml"))
    print(run, old["eval_return_mean"], "->", ev["eval_return_mean"], ev["eval_return_std"])
