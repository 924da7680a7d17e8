"""``run.cuda_graph`` (vawm.graphs) on CPU: what can be checked without a GPU.

* The update a graph would capture synchronises with nothing on the host: it runs with every
  synchronising ``Tensor`` method (and ``torch.tensor``, a host-to-device copy on CUDA) raising.
* The bookkeeping around capture (warm-up calls, static batch buffers, outputs overwritten by
  each replay, one graph per phase) gives bit-identical training to the eager update: a stand-in
  graph records the update once and re-runs it on the captured buffers at each replay.
* Configs the capture cannot handle are refused with one line.

Not checked here (needs CUDA, not measured in this repository yet): the capture itself.
"""

from __future__ import annotations

import contextlib
import sys

import pytest
import torch

from vawm.agent import Agent
from vawm.config import ConfigError, build_config
from vawm.graphs import GraphedStep
from vawm.replay import random_batch

INFO = {"vector": {"obs_kind": "vector", "obs_shape": (4,), "discrete": True, "action_dim": 2},
        "image": {"obs_kind": "image", "obs_shape": (3, 16, 16), "discrete": True,
                  "action_dim": 3},
        "continuous": {"obs_kind": "vector", "obs_shape": (5,), "discrete": False,
                       "action_dim": 2}}
SYNCING = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy")


@contextlib.contextmanager
def no_host_sync():
    """Every Tensor method that waits for the device, and host-data tensor creation, raise."""
    saved = {n: getattr(torch.Tensor, n) for n in SYNCING}
    tensor = torch.tensor

    def refuse(name):
        original = saved.get(name.removeprefix("Tensor."), tensor)

        def f(*args, **kwargs):
            # Adam reads its step count on the host on CPU; on CUDA, run.cuda_graph makes it
            # capturable=True (step counts on the device), which CPU tensors do not support
            if "torch/optim/" in sys._getframe(1).f_code.co_filename.replace("\\", "/"):
                return original(*args, **kwargs)
            raise AssertionError(f"host synchronisation inside the captured update: {name}")
        return f
    try:
        for n in SYNCING:
            setattr(torch.Tensor, n, refuse(f"Tensor.{n}"))
        torch.tensor = refuse("torch.tensor")
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)
        torch.tensor = tensor


class StandInGraph:
    """Captures by running ``fn`` once with host synchronisation forbidden; replays by running
    it again on the captured batch buffers and writing into the captured outputs (as a CUDA
    graph's replay overwrites its static outputs)."""
    captures = 0

    def capture(self, fn, static):
        StandInGraph.captures += 1
        self.fn, self.static = fn, static
        with no_host_sync():
            self.out = fn(static)
        return self.out

    def replay(self):
        with no_host_sync():
            new = self.fn(self.static)
        for k, v in new.items():
            self.out[k].copy_(v)


def _agent(backbone="rssm", objective="none", kind="vector", *sets):
    cfg = build_config("tiny", {"backbone": backbone, "objective": objective}, list(sets))
    torch.manual_seed(0)
    return cfg, Agent(cfg, INFO[kind])


def _graphed(agent: Agent, warmup: int = 2) -> Agent:
    agent.graphed = GraphedStep(agent.update_tensors, lambda: agent.objective.phase(agent.updates),
                                warmup=warmup, graph_factory=StandInGraph)
    return agent


CASES = [("rssm", "none", "vector"), ("rssm", "none", "image"), ("tssm", "none", "vector"),
         ("rssm", "var", "continuous"), ("rssm", "gather", "vector")]


@pytest.mark.parametrize("backbone,objective,kind", CASES)
def test_graphed_updates_equal_eager_updates_bit_for_bit(backbone, objective, kind):
    """Warm-up, capture and replays train exactly as the eager update does (same batches, same
    RNG), including across var's warm-up phase change (a second capture)."""
    sets = ["var.warmup=4"] if objective == "var" else []
    if objective == "gather":                     # run.onehot_gather's path under capture
        objective, sets = "none", ["run.onehot_gather=on"]
    cfg, eager = _agent(backbone, objective, kind, *sets)
    _, graphed = _agent(backbone, objective, kind, *sets)
    _graphed(graphed)
    batches = [random_batch(cfg, INFO[kind]) for _ in range(9)]
    StandInGraph.captures = 0
    for i, b in enumerate(batches):
        torch.manual_seed(100 + i)
        m_eager = eager.train_step({k: v.clone() for k, v in b.items()})
        torch.manual_seed(100 + i)
        m_graph = graphed.train_step({k: v.clone() for k, v in b.items()})
        assert m_eager.keys() == m_graph.keys()
        assert m_eager == m_graph, (i, {k: (m_eager[k], m_graph[k]) for k in m_eager
                                        if m_eager[k] != m_graph[k]})
    for pe, pg in zip(eager.state_dict().values(), graphed.state_dict().values(), strict=True):
        assert torch.equal(pe, pg)
    # captures: one per phase after its 2 warm-up calls (var: before and after its warm-up at 4)
    assert StandInGraph.captures == (2 if objective == "var" else 1)
    assert graphed.updates == 9


def test_replays_write_the_batch_into_the_captured_buffers():
    """A replay must read this call's batch, not the one it was captured on."""
    calls = []

    def fn(batch):
        calls.append(batch)
        return {"sum": batch["x"].sum()}
    step = GraphedStep(fn, lambda: None, warmup=1, graph_factory=StandInGraph)
    outs = [float(step({"x": torch.full((3,), float(i))})["sum"]) for i in range(4)]
    assert outs == [0.0, 3.0, 6.0, 9.0]
    assert calls[1] is calls[2] is calls[3]       # the captured buffers, refilled


@pytest.mark.parametrize("gather", ["off", "on"])
def test_the_update_synchronises_nowhere(gather):
    """Run without the stand-in: the eager update (minus its non-finite check) under the guard
    (also with run.onehot_gather's gather path and its index cache)."""
    cfg, agent = _agent("rssm", "none", "vector", f"run.onehot_gather={gather}")
    batch = random_batch(cfg, INFO["vector"])
    agent.train_step(batch)
    agent.graphed = object()              # the graphed path: no eager non-finite check
    with no_host_sync():
        agent.update_tensors(batch)
    with pytest.raises(AssertionError, match="host synchronisation"), no_host_sync():
        torch.zeros(2).sum().item()       # the guard catches what it should


@pytest.mark.parametrize("sets,match", [
    (["objective=tempo"], "cannot capture the objective 'tempo'"),
    (["backbone=vae-lstm"], "cannot capture the backbone 'vae-lstm'"),
    (["backbone=latent"], "cannot capture the backbone 'latent'"),
    (["optim.kind=laprop"], "captures Adam without learning-rate warm-up"),
    (["optim.warmup=10"], "captures Adam without learning-rate warm-up"),
    (["run.compile=true"], "exclude each other"),
])
def test_configs_it_cannot_capture_are_refused(sets, match):
    top = {s.split("=")[0]: s.split("=")[1] for s in sets if "." not in s.split("=")[0]}
    rest = [s for s in sets if "." in s.split("=")[0]]
    with pytest.raises(ConfigError, match=match):
        build_config("tiny", top, ["run.cuda_graph=true", *rest])


def test_a_cpu_run_with_cuda_graph_exits_2(tmp_path, capsys):
    from vawm.cli import main
    rc = main(["train", "--preset", "tiny", "--set", "run.cuda_graph=true", "--set",
               "run.device=cpu", "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert rc == 2
    assert "needs a CUDA device" in capsys.readouterr().err
