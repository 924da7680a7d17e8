"""``vawm`` with test hooks, for tests that need a run to die or pause at a given point.

    python tests/hooked_vawm.py train ...        # same arguments as ``vawm``

Environment variables (read once here, never by the package):
  VAWM_TEST_KILL_AT_STEP=N            SIGKILL the process after the first step with >= N agent
                                      steps (summed over envs): a ``kill -9`` between checkpoints
  VAWM_TEST_PAUSE_AFTER_CHECKPOINT=S  sleep S seconds after every periodic checkpoint
"""

import os
import signal
import sys
import time

from vawm.cli import main
from vawm.train import Trainer

KILL_AT = int(os.environ.get("VAWM_TEST_KILL_AT_STEP", "-1"))
PAUSE = float(os.environ.get("VAWM_TEST_PAUSE_AFTER_CHECKPOINT", "0"))

if KILL_AT >= 0:
    def _kill(self):
        if self.policy_steps >= KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
    Trainer.on_step = _kill
if PAUSE > 0:
    Trainer.on_checkpoint = lambda self: time.sleep(PAUSE)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
