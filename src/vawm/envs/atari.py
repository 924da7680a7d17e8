"""``atari100k:<Game>`` (the 26 Atari 100k games) and ``atari:<Game>`` (any ROM bundled
with ale-py), on ``ale_py.ALEInterface`` with the frame loop written out here.

Protocol (README "Environments"; every choice is an ``EnvConfig`` field):
- action repeat ``cfg.action_repeat`` (default 4) raw frames per agent step, rewards
  summed; the observation is the element-wise max of the last two frames
  (``max_pool``), area-resized to ``cfg.size`` (default 64x64 RGB, [C, H, W] uint8);
- ``sticky_actions`` = ALE's repeat_action_probability (default 0);
- reset plays a uniform random number of no-op frames in [0, ``noop_max``];
- ``info["life_loss"]`` is True on the step where the lives counter drops (training
  envs with ``life_loss_signal`` only); the episode goes on until game over;
- ``max_episode_frames`` caps an episode in raw frames (no-op frames included); reaching
  it ends the step early with ``truncated`` (``terminated`` with ``time_limit_terminal``, as
  DreamerV3's Atari wrapper marks it);
- ``minimal_action_set`` selects the game's minimal action set (else all 18).

If an episode ends before a step's last frame, the observation is the final frame alone.
The reset observation is the frame after the no-ops (no pooling).
"""

from __future__ import annotations

import gymnasium
import numpy as np

from vawm.envs.base import EnvConfig
from vawm.envs.common import SuiteEnv, image_obs, image_space

SUITES = ("atari100k", "atari")

ATARI_100K: tuple[str, ...] = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing",
    "Breakout", "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Frostbite",
    "Gopher", "Hero", "Jamesbond", "Kangaroo", "Krull", "KungFuMaster", "MsPacman", "Pong",
    "PrivateEye", "Qbert", "RoadRunner", "Seaquest", "UpNDown",
)  # fmt: skip


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def _camel(rom_id: str) -> str:
    return "".join(part.title() for part in rom_id.split("_"))


def _all_roms() -> dict[str, str]:
    """normalised name -> ALE ROM id, for every ROM bundled with ale-py."""
    from ale_py import roms

    return {_key(r): r for r in roms.get_all_rom_ids()}


def tasks(suite: str) -> tuple[str, ...]:
    """Game names (CamelCase); atari100k: the 26 games, atari: every bundled ROM."""
    if suite == "atari100k":
        return ATARI_100K
    return tuple(sorted(_camel(r) for r in _all_roms().values()))


def canonical_task(suite: str, task: str) -> str | None:
    """CamelCase game name for any spelling (``pong``, ``ms_pacman``, ``MsPacman``)."""
    if suite == "atari100k":
        return {_key(g): g for g in ATARI_100K}.get(_key(task))
    rom = _all_roms().get(_key(task))
    return _camel(rom) if rom else None


def rom_id(game: str) -> str:
    """ALE ROM id of a CamelCase game name (``MsPacman`` -> ``ms_pacman``)."""
    return _all_roms()[_key(game)]


class AtariEnv(SuiteEnv):
    """One ALE game with the frame loop above. ``self.ale`` is the ALEInterface."""

    def __init__(self, game: str, seed: int, cfg: EnvConfig, training: bool) -> None:
        import ale_py
        from ale_py import roms

        super().__init__(seed)
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale = ale_py.ALEInterface()
        self._sticky = float(cfg.sticky_actions)
        self.ale.setFloat("repeat_action_probability", self._sticky)
        self._rom = roms.get_rom_path(rom_id(game))
        self._ale_seed: int | None = None
        self._acted = False  # emulator stepped since the last loadROM
        self._load(seed)
        actions = (
            self.ale.getMinimalActionSet()
            if cfg.minimal_action_set
            else self.ale.getLegalActionSet()
        )
        self.actions = list(actions)
        self._noop = ale_py.Action.NOOP
        self._repeat = cfg.action_repeat
        self._noop_max = cfg.noop_max
        self._max_frames = cfg.max_episode_frames
        self._cap_terminal = cfg.time_limit_terminal
        self._max_pool = cfg.max_pool
        self._signal_life_loss = bool(cfg.life_loss_signal and training)
        self._grayscale, self._size = bool(cfg.grayscale), tuple(cfg.size)
        h, w = self.ale.getScreenDims()
        self._buf = np.zeros((2, h, w) if self._grayscale else (2, h, w, 3), np.uint8)
        self.observation_space = image_space(self._size, self._grayscale)
        self.action_space = gymnasium.spaces.Discrete(len(self.actions))
        self.action_space.seed(seed)
        self._frames = 0  # raw frames this episode, no-ops included
        self._lives = 0

    def _load(self, seed: int) -> None:
        # ALE draws random numbers only for sticky actions; without them a reload (slow)
        # would change nothing, as reset_game restarts the console deterministically.
        # With them, reload unless the emulator is fresh from a load with this very seed.
        ale_seed = int(np.random.SeedSequence(seed).generate_state(1)[0] % 2**31)
        fresh = ale_seed == self._ale_seed and not self._acted
        if self._ale_seed is None or (self._sticky > 0 and not fresh):
            self.ale.setInt("random_seed", ale_seed)
            self.ale.loadROM(self._rom)  # (re)starts the emulator and its RNG
            self._ale_seed, self._acted = ale_seed, False

    def _grab(self, slot: int) -> None:
        if self._grayscale:
            self.ale.getScreenGrayscale(self._buf[slot])
        else:
            self.ale.getScreenRGB(self._buf[slot])

    def _obs(self, frame: np.ndarray) -> np.ndarray:
        return image_obs(frame, self._size, grayscale=False)  # already gray if configured

    @property
    def episode_frames(self) -> int:
        """Raw emulator frames since the last reset, no-op frames included."""
        return self._frames

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seed = self._reset_seed(seed)
        super().reset(seed=seed)
        if seed is not None:
            self._load(seed)
        self.ale.reset_game()
        self._frames = 0
        self._acted = True
        noops = int(self.np_random.integers(0, self._noop_max + 1)) if self._noop_max > 0 else 0
        for _ in range(noops):
            self.ale.act(self._noop)
            self._frames += 1
            if self.ale.game_over():
                self.ale.reset_game()
                self._frames = 0
        self._lives = self.ale.lives()
        self._grab(1)
        info = {"lives": self._lives, "life_loss": False, "noops": noops, "frames": self._frames}
        return self._obs(self._buf[1].copy()), info

    def step(self, action):
        a = self.actions[int(action)]
        reward, terminated, truncated = 0.0, False, False
        last = self._repeat - 1
        for i in range(self._repeat):
            reward += self.ale.act(a)
            self._frames += 1
            terminated = self.ale.game_over()
            truncated = not terminated and 0 < self._max_frames <= self._frames
            if truncated and self._cap_terminal:          # DreamerV3: the cap is terminal
                terminated, truncated = True, False
            if i == last - 1:
                self._grab(0)
            if terminated or truncated or i == last:
                self._grab(1)
                break
        if self._max_pool and self._repeat > 1 and i == last:
            frame = np.maximum(self._buf[0], self._buf[1])
        else:
            frame = self._buf[1].copy()
        lives = self.ale.lives()
        life_loss = self._signal_life_loss and lives < self._lives
        self._lives = lives
        info = {"lives": lives, "life_loss": bool(life_loss), "frames": self._frames}
        return self._obs(frame), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> np.ndarray:
        """The current raw RGB screen, uint8 [210, 160, 3]."""
        return self.ale.getScreenRGB()


def make(suite: str, task: str, seed: int, cfg: EnvConfig, training: bool) -> gymnasium.Env:
    """Build the game ``task`` (canonical CamelCase name)."""
    return AtariEnv(task, seed, cfg, training)
