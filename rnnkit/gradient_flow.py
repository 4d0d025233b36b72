"""Gradient flow through time: how much of the last step's loss gradient reaches the state of each step.

A sequence classifier is scored on its last step only (the palindrome task: the last digit). What
training can learn about step t is carried by ∂L/∂s_t, the gradient of that loss against the state s_t
after step t: the state the recurrence carries to the next step, the one its memory travels in (the
vanilla RNN's h_t, the LSTM's cell c_t; a model shows them through ``rnnkit.kinds.StepStates``). The
first palindrome digit enters at step 1, so where ‖∂L/∂s_1‖ is many orders of magnitude below
‖∂L/∂s_T‖, the gradient that would teach the model to keep it is lost under the rest: the vanishing
gradient.

Theory the measurement is tested against (tests/test_gradient_flow.py):

- vanilla RNN, h_t = tanh(W_hh h_{t-1} + W_hx x_t + b): ∂L/∂h_{t-1} = W_hh^T diag(1 - h_t²) ∂L/∂h_t.
  With W_hh = a·I and small inputs (tanh's linear regime, 1 - h_t² ≈ 1) the ratio
  ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ is a^(T-1): it vanishes for a < 1 and explodes for a > 1, exponentially in T.
- LSTM, c_t = f_t c_{t-1} + i_t g_t: ∂L/∂c_{t-1} = f_t ∂L/∂c_t plus what reaches c_{t-1} through
  h_{t-1} and the gates. With those recurrent weights at zero the ratio is the product of the forget
  gates, σ(b_f)^(T-1): forget gates saturated at 1 keep it at 1 for any T.

``measure`` computes the norms on a batch; a task that has a measurement (``Task.measures_gradient_flow``)
runs it on a fixed batch of its own (``Task.gradient_flow``). With ``train.record_gradients`` the run
records one at its start (step 0) and one after every evaluation (so at the end of training), each a line
of ``gradients.jsonl`` in the run directory::

    {"step": 0, "loss": 2.30, "norms": [‖∂L/∂s_1‖, ..., ‖∂L/∂s_T‖]}

appended and flushed like metrics.jsonl (a resumed run first drops the records past its checkpoint).
The norms are Frobenius norms over the batch, L the batch's mean loss. The measurement draws nothing
from the run's random generators and leaves the parameters' gradients alone, so a run trains exactly
alike with it on or off; it costs one forward and backward pass over one batch (the LSTM's through the
step-by-step autograd path) per record. ``rnnkit plot RUN --gradients`` draws the norms against t,
``rnnkit plot SWEEP --gradients`` the ratio ‖∂L/∂s_1‖ / ‖∂L/∂s_T‖ against the sequence length.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnkit.kinds import StepStates
from rnnkit.rundir import read_jsonl

#: The file of a run's gradient-flow records (``train.record_gradients``).
GRADIENTS_FILE = "gradients.jsonl"


@dataclass(frozen=True)
class GradientFlow:
    """One measurement: ``norms[t-1]`` = ‖∂L/∂s_t‖ for t = 1 ... T, and the loss L they are of."""

    norms: list[float]
    loss: float

    @property
    def ratio(self) -> float:
        """‖∂L/∂s_1‖ / ‖∂L/∂s_T‖ (see ``flow_ratio``)."""
        return flow_ratio(self.norms)

    def record(self, step: int) -> dict[str, Any]:
        """The gradients.jsonl line of this measurement taken at training step ``step``."""
        return {"step": step, "loss": self.loss, "norms": list(self.norms)}


def shows_states(model: Any) -> bool:
    """Whether ``model`` declares its per-step states (``rnnkit.kinds.StepStates``), which the
    measurement differentiates against."""
    return isinstance(model, StepStates)


def measure(model: torch.nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> GradientFlow:
    """‖∂L/∂s_t‖ for every step t of ``x`` (batch, seq, ...), L = ``loss_fn(logits)``, in eval mode and in
    float32 whatever autocast is around; the parameters' ``.grad`` and the model's mode are left as
    they were. The model must declare ``step_states`` (``shows_states``)."""
    if not shows_states(model):
        raise TypeError(f"{type(model).__name__} declares no step_states(x) (rnnkit.kinds.StepStates)")
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            logits, states = model.step_states(x)  # (batch, classes), T x (batch, ...)
            states = list(states)
            loss = loss_fn(logits.float())
            grads = torch.autograd.grad(loss, states) if states else ()
    finally:
        model.train(was_training)
    # in float64: the squares of a vanished gradient (1e-20) underflow float32
    norms = [float(torch.linalg.vector_norm(g.detach().double())) for g in grads]
    return GradientFlow(norms, float(loss.detach()))


def flow_ratio(norms: list[float]) -> float:
    """‖∂L/∂s_1‖ / ‖∂L/∂s_T‖: how much of the gradient at the last step reaches the first (1 for one
    step); NaN where the last norm is zero or a norm is not finite."""
    if not norms or not all(isinstance(n, int | float) and math.isfinite(n) for n in norms) or norms[-1] <= 0:
        return math.nan
    return norms[0] / norms[-1]


def read_gradients(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir``'s gradients.jsonl in order (none if it has none); a line a kill cut
    short, or one without a step and a list of norms, is skipped."""
    records, _ = read_jsonl(Path(run_dir) / GRADIENTS_FILE)
    complete = []
    for record in records:
        if isinstance(record.get("step"), int) and isinstance(record.get("norms"), list) and record["norms"]:
            record["norms"] = [float(n) if isinstance(n, int | float) else math.nan for n in record["norms"]]
            complete.append(record)
    return complete


def start_and_end(records: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The record at initialisation (step 0) and the last one (the end of training for a finished
    run), each None where there is none; the last is None too when it is the one at step 0."""
    start = next((r for r in records if r["step"] == 0), None)
    end = records[-1] if records and records[-1]["step"] > 0 else None
    return start, end
