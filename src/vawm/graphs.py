"""``run.cuda_graph``: the whole update captured once as a CUDA graph and replayed.

One update of the agent (world-model forward and backward, the objective, imagination, actor and
critic, all three optimiser steps, the slow critic and the return normaliser) launches several
thousand small kernels; at DreamerV3's sizes on a GPU the update is bound by their launch
overhead, not by arithmetic. ``torch.cuda.graph`` records the kernels of one update once and
replays them as one launch (PyTorch's "whole-network capture"; DreamerV3's JAX code gets the same
from ``jax.jit`` of its whole train step).

What capture needs, and where it is kept:

* No host synchronisation inside the update (no ``.item()``, no ``if tensor``, no host-to-device
  copy of Python data): :meth:`vawm.agent.Agent.update_tensors` returns tensors only, and the
  non-finite-loss check moves after the replay. ``tests/test_graphs.py`` runs the update with
  every synchronising ``Tensor`` method made to raise.
* Static shapes and addresses: the batch is copied into buffers captured once
  (:class:`GraphedStep`), the outputs are the captured tensors, overwritten by every replay.
* Python values fixed per graph: an update's Python-side branches (DreamerV3's optimisers have
  none; ``var``'s warm-up indicator has one) are its *phase*; :class:`GraphedStep` keeps one graph
  per phase and captures a new one when the phase changes (``var``: twice in a run).
* Optimiser state on the device with tensor step counts: Adam with ``capturable=True``.

Components whose update depends on the update count in other ways (an annealed KL weight, MPC, a
learning-rate warm-up) or that synchronise (TEMPO's meta step) are refused with a config error
(``Backbone.graph_safe``, ``Objective.graph_safe``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch import Tensor

Batch = dict[str, Tensor]


class GraphedStep:
    """Replays ``fn(batch) -> dict[str, Tensor]`` from a captured graph per ``phase()``.

    The first ``warmup`` calls of each phase run ``fn`` eagerly on a side stream (they are real
    updates; CUDA needs them before capture so that lazily built state — optimiser moments,
    cuBLAS handles, the autograd engine's streams — exists). The next call captures ``fn`` on a
    copy of its batch and every later call copies its batch into the captured buffers and
    replays. The captured call is itself an update: its result is returned as from any other.
    Every call of a replayed graph returns the same dict object, overwritten by the replay. A
    ``graph_factory`` other than CUDA's, whose graphs have ``capture(fn, batch) -> outputs`` and
    ``replay()``, runs the same bookkeeping on CPU (the tests' stand-in).
    """

    def __init__(self, fn: Callable[[Batch], dict[str, Tensor]], phase: Callable[[], Hashable],
                 warmup: int = 3, graph_factory: Callable | None = None):
        self.fn, self.phase, self.warmup = fn, phase, warmup
        self.cuda = graph_factory is None
        self.graph_factory = graph_factory or torch.cuda.CUDAGraph
        self.calls: dict[Hashable, int] = {}       # eager calls per phase
        self.graphs: dict[Hashable, tuple] = {}     # phase -> (graph, static batch, outputs)

    def __call__(self, batch: Batch) -> dict[str, Tensor]:
        key = self.phase()
        if key in self.graphs:
            graph, static, out = self.graphs[key]
            for k, v in batch.items():
                static[k].copy_(v, non_blocking=True)
            graph.replay()
            return out
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] <= self.warmup:
            return self._side(lambda: self.fn(batch))
        static = {k: v.clone() for k, v in batch.items()}
        graph = self.graph_factory()
        out = self._side(lambda: self._capture(graph, static))
        self.graphs[key] = (graph, static, out)
        return out

    def _capture(self, graph, static: Batch) -> dict[str, Tensor]:
        if not self.cuda:
            return graph.capture(self.fn, static)
        with torch.cuda.graph(graph):
            return self.fn(static)

    def _side(self, run: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """Run on a side stream, as ``torch.cuda.graphs`` asks of warm-up and capture."""
        if not self.cuda:
            return run()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            out = run()
        torch.cuda.current_stream().wait_stream(s)
        return out
