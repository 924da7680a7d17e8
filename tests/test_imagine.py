"""``vawm imagine``: open-loop imagination lines up with the real trajectory, the saliency math,
and the command on tiny pixel and vector runs."""

import json

import numpy as np
import pytest
import torch

from vawm.agent import Agent
from vawm.cli import main
from vawm.config import build_config
from vawm.envs import env_info
from vawm.imagine import collect, grid_view, to_rgb, value_saliency
from vawm.state import tree_map
from vawm.train import Trainer
from vawm.worldmodels.base import ReplayActions


def test_value_saliency_is_decoder_jvp_along_value_gradient():
    torch.manual_seed(0)
    W = torch.randn(6, 3)                      # linear decoder: J = W
    a = torch.randn(3)
    decode = lambda f: f @ W.T                 # noqa: E731
    value = lambda f: (f * a).sum(-1) + 0.5 * (f ** 2).sum(-1)   # noqa: E731  dV/df = a + f
    feat = torch.randn(4, 3)
    expected = ((a + feat) @ W.T).abs()
    assert torch.allclose(value_saliency(decode, value, feat), expected, atol=1e-5)


def test_saliency_of_a_nonlinear_decoder_matches_finite_differences():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))
    critic = torch.nn.Linear(3, 1)
    value = lambda f: critic(f).squeeze(-1)    # noqa: E731
    feat = torch.randn(2, 3, dtype=torch.float64)
    net, critic = net.double(), critic.double()
    g = critic.weight[0].detach()
    eps = 1e-6
    fd = ((net(feat + eps * g) - net(feat - eps * g)) / (2 * eps)).abs()
    assert torch.allclose(value_saliency(net, value, feat), fd, atol=1e-6)


def test_open_loop_replays_actions_in_order():
    acts = torch.arange(3.0)[:, None, None].expand(3, 2, 1)
    pol = ReplayActions(acts)
    got = [pol(torch.zeros(2, 4))[0, 0].item() for _ in range(4)]
    assert got == [0.0, 1.0, 2.0, 2.0]          # past the end: the last action again


def test_to_rgb_colours_object_channels():
    x = np.zeros((4, 2, 2), np.uint8)
    x[2, 0, 1] = 255
    img = to_rgb(x)
    assert img.shape == (2, 2, 3) and img[0, 1].max() > 0 and img[0, 0].max() == 0
    assert to_rgb(np.full((1, 2, 2), 255, np.uint8)).min() == 1.0


@pytest.mark.parametrize("backbone, preset", [("rssm", "tiny"), ("vae-lstm", "vae-lstm-tiny"),
                                              ("tssm", "storm-tiny")])
def test_first_imagined_step_is_the_filtered_recurrent_state(backbone, preset):
    """Imagining one step from s_t with the real a_t gives the same recurrent state h_{t+1} as
    filtering the real sequence: catches any off-by-one between actions and states. For tssm this
    holds where the imagination window is the whole history (t0 = context): elsewhere the
    filtered h attends to the full sequence and the window only to its last ``context`` tokens."""
    cfg = build_config(preset, {"backbone": backbone, "env": "gym:CartPole-v1"})
    torch.manual_seed(0)
    agent = Agent(cfg, env_info(cfg.env, cfg.env_cfg)).eval()
    traj = collect(agent, cfg, torch.device("cpu"), 12, seed=3, policy="random")
    assert len(traj["obs"]) == 12 and traj["is_first"][0] and not traj["is_first"][1:].any()
    batch = {k: torch.as_tensor(v)[None] for k, v in traj.items()}
    with torch.no_grad():
        ob = agent.wm.observe(batch)
        for t0 in ((cfg.tssm.context,) if backbone == "tssm" else (3, 7)):
            im = agent.wm.imagine(tree_map(lambda x, t0=t0: x[torch.tensor([t0])], ob.start),
                                  ReplayActions(batch["action"][0, t0:t0 + 2, None]), 1)
            h = {"rssm": lambda: slice(0, cfg.rssm.deter),
                 "vae-lstm": lambda: slice(cfg.vae_lstm.latent, None),
                 "tssm": lambda: slice(agent.wm.zdim, None)}[backbone]()
            assert torch.allclose(im.feat[0, 0], ob.post[0, t0], atol=1e-5)
            assert torch.allclose(im.feat[1, 0, h], ob.post[0, t0 + 1, h], atol=1e-4)


def _tiny_run(path, objective="none", env="minatar:breakout"):
    cfg = build_config("tiny", {"env": env, "objective": objective, "steps": 100},
                       ["env_cfg.minatar_obs=image", "run.prefill=40", "run.eval_episodes=1"])
    Trainer(cfg, path, progress=False).train()
    return path


def test_imagine_command_on_tiny_pixel_runs(tmp_path, capsys):
    a = _tiny_run(tmp_path / "none")
    b = _tiny_run(tmp_path / "var", "var")
    out = tmp_path / "pics"
    rc = main(["imagine", str(a), str(b), "--out", str(out), "--policy", "random",
               "--context", "3", "--horizon", "6"])
    assert rc == 0, capsys.readouterr().err
    for name in ("imagine.png", "imagine_error.png"):
        assert (out / name).stat().st_size > 1000
    res = json.loads((out / "imagine.json").read_text())
    assert res["image"] and res["context"] == 3 and [r["label"] for r in res["runs"]] == ["rssm", "rssm+var"]
    H = res["horizon"]
    assert 1 <= H <= 6 and len(res["real_reward"]) == H
    for r in res["runs"]:
        assert len(r["mse_context"]) == 3 and len(r["mse_imagined"]) == H == len(r["reward_pred"])
        assert all(np.isfinite(r["mse_imagined"])) and len(r["value"]) == 3 + H


def test_imagine_command_errors(tmp_path, capsys):
    assert main(["imagine", str(tmp_path / "nope")]) == 2
    assert "not a vawm run directory" in capsys.readouterr().err
    a = _tiny_run(tmp_path / "a")
    b = _tiny_run(tmp_path / "b", env="minatar:space_invaders")
    assert main(["imagine", str(a), str(b)]) == 2
    assert "different envs" in capsys.readouterr().err
    for name in ("latest.pt", "latest.previous.pt"):    # no checkpoint at all
        (a / "checkpoints" / name).unlink(missing_ok=True)
    assert main(["imagine", str(a)]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_minatar_vectors_are_drawn_as_their_grid():
    from vawm.envs import make_env
    env = make_env("minatar:breakout", 0)
    obs, _ = env.reset(seed=0)
    state = env.unwrapped.game.state() if hasattr(env.unwrapped, "game") else None
    img = grid_view("minatar:breakout", obs[None])
    assert img.shape == (1, 4, 10, 10) and set(np.unique(img)) <= {0.0, 255.0}
    if state is not None:
        assert np.array_equal(img[0] > 0, state.transpose(2, 0, 1))
    assert grid_view("gym:CartPole-v1", np.zeros((3, 4))) is None
