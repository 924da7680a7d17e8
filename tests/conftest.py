import os

import torch

# Tests run beside each other on few cores: one intra-op thread avoids OpenMP oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
