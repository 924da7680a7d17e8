"""The Garnet lab (Voelcker et al. 2025 §5, App. B, C.5): calibrated value-aware model learning on finite
MDPs.

    mdp.py         Garnet MDPs, exact and iterative policy evaluation
    models.py      low-rank / full-rank softmax models, deterministic (argmax) models
    losses.py      MLE, IterVAML, (m,b)-VAML (MuZero) and CVAML: sample and expected forms
    train.py       batched joint training of model and value
    cliff.py       5x5 stochastic cliff-walk, greedy policy iteration
    experiment.py  the sweeps (Voelcker et al. 2025 Fig. 2 and App. C.5)
    summary.py     CSV, aggregates with 95% CIs, markdown summary
    plots.py       figures
    cli.py         ``vawm garnet``
"""

from vawm.garnet.mdp import Garnet, exact_values, make_garnet, policy_evaluation
from vawm.garnet.train import LossSpec, Task, TrainConfig, parse_loss, train

__all__ = ["Garnet", "LossSpec", "Task", "TrainConfig", "exact_values", "make_garnet",
           "parse_loss", "policy_evaluation", "train"]
