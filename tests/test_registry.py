"""A new objective is one class plus its registration: defined here alone, it trains one update
on every registered backbone, with its own config section, presets and ``--set`` keys."""

from typing import Literal

import pytest
import torch

from vawm.agent import Agent
from vawm.config import ConfigError, build_config, to_dict
from vawm.objectives import OBJECTIVES, Contribution, Objective, register_objective
from vawm.replay import random_batch
from vawm.settings import section
from vawm.worldmodels import BACKBONES

INFO = {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2}


@section("toy_test")
class ToyConfig:
    scale: float = 0.1
    mode: Literal["post", "prior"] = "post"


class Toy(Objective):
    """Shrinks the chosen features a little and down-weights the first step of every sequence."""

    Config = ToyConfig

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg, backbone):
        return cls(cfg.toy_test)

    def contribute(self, obs, ctx):
        feat = obs.post if self.cfg.mode == "post" else obs.prior
        w = torch.ones_like(obs.kl)
        w[:, 0] = 0.5
        return Contribution(losses={"shrink": self.cfg.scale * feat.pow(2).mean()}, weights=w,
                            metrics={"toy_test/update": torch.tensor(float(ctx.update))})


@pytest.fixture
def toy():
    register_objective("toy-test")(Toy)
    yield Toy
    OBJECTIVES.pop("toy-test")


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_registered_objective_trains_on_every_backbone(toy, backbone):
    cfg = build_config("tiny", {"backbone": backbone, "objective": "toy-test"},
                       ["toy_test.mode=prior", "toy_test.scale=0.5"])
    assert cfg.toy_test.mode == "prior" and to_dict(cfg)["toy_test"]["scale"] == 0.5
    # a TD3 behaviour learner (latent) acts in a continuous action space
    info = dict(INFO, discrete=BACKBONES[backbone].behaviour != "td")
    agent = Agent(cfg, info)
    before = [p.detach().clone() for p in agent.wm.parameters()]
    metrics = agent.train_step(random_batch(cfg, info))
    assert metrics["toy_test/shrink"] > 0 and metrics["toy_test/update"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.wm.parameters(), strict=True))


def test_registered_objective_config_is_validated(toy):
    with pytest.raises(ConfigError, match="toy_test.mode"):
        build_config("tiny", {"objective": "toy-test"}, ["toy_test.mode=both"])
    with pytest.raises(ConfigError, match="valid objectives: .*toy-test"):
        build_config("tiny", {"objective": "toy-tests"})


def test_unregistered_objective_is_gone():
    assert "toy-test" not in OBJECTIVES
    with pytest.raises(ConfigError, match="toy_test"):
        build_config("tiny", sets=["toy_test.scale=1"])
