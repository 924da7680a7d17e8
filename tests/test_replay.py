"""Sequence replay: windows stay inside one stream, ring order, persistence."""

import numpy as np
import pytest
import torch

from vawm.replay import Replay


def _fill(r: Replay, n: int, E: int):
    for t in range(n):
        r.add({"obs": np.full((E, 2), t, np.float32) + np.arange(E)[:, None] * 1000,
               "action": np.zeros((E, 1), np.float32), "reward": np.full(E, t, np.float32),
               "is_first": np.full(E, t == 0), "is_last": np.zeros(E, bool),
               "is_terminal": np.zeros(E, bool)})


def test_windows_are_contiguous_within_a_stream():
    r = Replay(capacity=100, num_envs=2, obs_shape=(2,), obs_dtype=np.float32, act_dim=1, seq_len=5)
    _fill(r, 30, 2)
    b = r.sample(64)
    o = b["obs"][..., 0]
    assert b["obs"].shape == (64, 5, 2)
    assert torch.all(o[:, 1:] - o[:, :-1] == 1)         # consecutive steps of one env
    assert set((o[:, 0] // 1000).tolist()) == {0.0, 1.0}  # both streams get sampled


def test_ring_buffer_keeps_newest_in_order():
    r = Replay(capacity=10, num_envs=1, obs_shape=(2,), obs_dtype=np.float32, act_dim=1, seq_len=4)
    _fill(r, 25, 1)                                      # capacity 10: steps 15..24 remain
    b = r.sample(200)
    o = b["obs"][..., 0]
    assert o.min() >= 15 and o.max() <= 24
    assert torch.all(o[:, 1:] - o[:, :-1] == 1)         # never wraps through the write head


def test_state_dict_round_trip_continues_identically():
    r1 = Replay(capacity=50, num_envs=2, obs_shape=(2,), obs_dtype=np.float32, act_dim=1, seq_len=3,
                seed=3)
    _fill(r1, 20, 2)
    r1.sample(4)
    sd = r1.state_dict()
    r2 = Replay(capacity=50, num_envs=2, obs_shape=(2,), obs_dtype=np.float32, act_dim=1, seq_len=3)
    r2.load_state_dict(sd)
    a, b = r1.sample(8), r2.sample(8)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _fill_from(r: Replay, start: int, n: int, E: int):
    for t in range(start, start + n):
        r.add({"obs": np.full((E, 2), t, np.float32) + np.arange(E)[:, None] * 1000,
               "action": np.full((E, 1), t % 3, np.float32), "reward": np.full(E, t, np.float32),
               "is_first": np.full(E, t % 17 == 0), "is_last": np.zeros(E, bool),
               "is_terminal": np.full(E, t % 23 == 0)})


@pytest.mark.parametrize("cap, chunk, saves", [
    (50, 8, [5, 20, 43, 44, 90, 200]),     # ring wraps many times; chunks pruned
    (12, 32, [7, 40, 41, 100]),            # chunk larger than the ring: pieces cut at the window
    (64, 16, [16, 32, 48]),                # saves exactly at chunk boundaries
])
def test_chunked_persistence_restores_the_exact_ring(tmp_path, cap, chunk, saves):
    """Checkpoint (tail + counters) + chunk files rebuild the same ring, sampler and all."""
    kw = dict(capacity=cap, num_envs=2, obs_shape=(2,), obs_dtype=np.float32, act_dim=1, seq_len=3)
    r = Replay(**kw, seed=5, chunk_dir=tmp_path, chunk=chunk)
    done = 0
    for n in saves:
        _fill_from(r, done, n - done, 2)
        done = n
        r.sample(4)
        sd = r.state_dict()
        r.prune()
        files = sorted(tmp_path.glob("chunk_*.pt"))
        assert all(int(f.stem.split("_")[1]) >= max(0, n - r.cap) // chunk for f in files)
        assert len(sd["tail"]["data"]["obs"][0]) < chunk      # the checkpoint holds a tail only
        back = Replay(**kw, chunk_dir=tmp_path, chunk=chunk)
        back.load_state_dict(sd)
        for k in r.data:
            assert np.array_equal(back.data[k], r.data[k]), k
        assert np.array_equal(back.pos, r.pos) and np.array_equal(back.filled, r.filled)
        a, b = r.sample(16), back.sample(16)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_chunks_after_the_checkpoint_are_discarded_on_load(tmp_path):
    kw = dict(capacity=100, num_envs=1, obs_shape=(2,), obs_dtype=np.float32, act_dim=1, seq_len=3)
    r = Replay(**kw, chunk_dir=tmp_path, chunk=10)
    _fill_from(r, 0, 25, 1)
    sd = r.state_dict()                    # chunks 0, 1 on disk; tail 20..24
    _fill_from(r, 25, 20, 1)
    r.state_dict()                         # a later save wrote chunks 2, 3 before a crash
    assert len(list(tmp_path.glob("chunk_*.pt"))) == 4
    back = Replay(**kw, chunk_dir=tmp_path, chunk=10)
    back.load_state_dict(sd)
    assert sorted(p.name for p in tmp_path.glob("chunk_*.pt")) == ["chunk_0000000.pt",
                                                                   "chunk_0000001.pt"]
    assert back.total == 25 and back.data["obs"][0, 24, 0] == 24 and back.data["obs"][0, 25, 0] == 0


def test_whole_buffer_checkpoints_still_load_into_a_chunked_replay(tmp_path):
    kw = dict(capacity=30, num_envs=1, obs_shape=(2,), obs_dtype=np.float32, act_dim=1, seq_len=3)
    old = Replay(**kw)                     # the older format: the buffer inside the checkpoint
    _fill_from(old, 0, 47, 1)
    new = Replay(**kw, chunk_dir=tmp_path, chunk=8)
    new.load_state_dict(old.state_dict())
    _fill_from(old, 47, 30, 1)
    _fill_from(new, 47, 30, 1)
    again = Replay(**kw, chunk_dir=tmp_path, chunk=8)
    again.load_state_dict(new.state_dict())
    assert np.array_equal(again.data["obs"], old.data["obs"])
