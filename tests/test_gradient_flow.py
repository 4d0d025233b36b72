"""The gradient flow through time (rnnkit.gradient_flow): the measurement against theory, the
per-step-states contract, recording in a run (unchanged training, resume without duplicates), sweeps
recording it by default without renaming runs, and the figures of `rnnkit plot --gradients`."""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from rnnkit.data.palindrome import PalindromeConfig, PalindromeTask
from rnnkit.errors import KindNotSupportedError, RnnkitWarning, UsageError
from rnnkit.gradient_flow import GRADIENTS_FILE, flow_ratio, read_gradients, shows_states, start_and_end
from rnnkit.models.lstm import LSTM
from rnnkit.models.rnn import VanillaRNN
from rnnkit.plotting import gradient_rows, gradient_sweep_figure, gradients_figure
from rnnkit.registry import ModelDef, Registry
from rnnkit.runner import gradient_recorders, spec_differences, train_run
from rnnkit.spec import resolve_spec
from rnnkit.sweep import SweepPlan
from rnnkit.testing import check_model
from tests.helpers import assert_one_line_error, run, tiny_spec

CPU = torch.device("cpu")


def task(steps: int, seed: int = 0) -> PalindromeTask:
    """A palindrome task whose inputs have ``steps`` steps (length steps + 1)."""
    return PalindromeTask(PalindromeConfig(length=steps + 1), CPU, seed)


# -- theory -------------------------------------------------------------------------------------


@pytest.mark.parametrize("a", [0.5, 0.9, 1.1])
@pytest.mark.parametrize("steps", [5, 12, 20])
def test_a_linear_rnn_passes_back_a_to_the_power_of_the_distance(a, steps):
    """W_hh = a·I and inputs scaled into tanh's linear regime: ‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ = a^(T-t) for every
    t, so the ratio of the first to the last is a^(T-1) (within 1%: tanh' = 1 - h² is 1 - O(1e-5) here)."""
    torch.manual_seed(0)
    model = VanillaRNN(10, 16, 10)
    with torch.no_grad():
        model.W_hh.copy_(a * torch.eye(16))
        model.W_hx.mul_(1e-3)
        model.b_h.zero_()
    flow = task(steps).gradient_flow(model, 64)
    assert len(flow.norms) == steps
    assert flow.ratio == pytest.approx(a ** (steps - 1), rel=1e-2)
    for t, norm in enumerate(flow.norms, 1):
        assert norm / flow.norms[-1] == pytest.approx(a ** (steps - t), rel=1e-2)


@pytest.mark.parametrize("forget_bias", [0.0, 2.0, 20.0])
def test_an_lstm_cell_passes_back_the_product_of_its_forget_gates(forget_bias):
    """With no recurrent weights and forget gates blind to the input, ∂L/∂c_{t-1} = f ∂L/∂c_t: the ratio
    is σ(b_f)^(T-1): 0.5^19 for a bias of 0, and 1 for forget gates saturated at 1 (bias 20)."""
    torch.manual_seed(0)
    steps, hidden = 20, 16
    model = LSTM(10, hidden, 10, forget_bias=forget_bias)
    with torch.no_grad():
        model.W_gh.zero_()
        model.W_gx[hidden : 2 * hidden].zero_()  # the forget gates' input weights
    flow = task(steps).gradient_flow(model, 64)
    expected = (1 / (1 + math.exp(-forget_bias))) ** (steps - 1)
    assert flow.ratio == pytest.approx(expected, rel=1e-2)
    if forget_bias == 20.0:
        assert flow.ratio == pytest.approx(1.0, abs=1e-3)
        assert max(flow.norms) / min(flow.norms) == pytest.approx(1.0, abs=1e-3)  # flat over every step


def test_the_fused_lstm_measures_what_the_autograd_one_does():
    """impl=fused hides its steps in LSTMFunction: step_states runs the same weights step by step, so
    both implementations give the forward's logits and the same norms."""
    torch.manual_seed(0)
    fused = LSTM(10, 16, 10, impl="fused")
    readable = LSTM(10, 16, 10, impl="autograd")
    readable.load_state_dict(fused.state_dict())
    x, _ = task(9).train_batch(8)
    logits, states = fused.step_states(x)
    assert len(states) == 9 and tuple(states[0].shape) == (8, 16)
    torch.testing.assert_close(logits, fused(x), rtol=1e-5, atol=1e-6)
    a, b = task(9).gradient_flow(fused, 32), task(9).gradient_flow(readable, 32)
    assert a.norms == pytest.approx(b.norms, rel=1e-6)


def test_the_measurement_leaves_the_model_and_the_random_state_alone():
    model = VanillaRNN(10, 8, 10)
    model.train()
    t = task(6)
    before = torch.get_rng_state(), t.state_dict()
    first = t.gradient_flow(model, 16)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(before[0], torch.get_rng_state())
    assert all(torch.equal(v, t.state_dict()[k]) for k, v in before[1].items())
    assert t.gradient_flow(model, 16).norms == first.norms  # the same fixed batch every time
    assert task(6, seed=1).gradient_flow(model, 16).norms != first.norms  # another run, another batch


def test_ratio_of_norms():
    assert flow_ratio([0.5, 1.0, 2.0]) == 0.25
    assert flow_ratio([3.0]) == 1.0
    assert math.isnan(flow_ratio([1.0, 0.0])) and math.isnan(flow_ratio([math.nan, 1.0])) and math.isnan(flow_ratio([]))


# -- the contract -------------------------------------------------------------------------------


def test_the_builtin_sequence_models_show_their_states_and_pass_the_contract():
    for name in ("rnn", "lstm"):
        assert check_model(name) == ["sequence-classification"]
    assert shows_states(VanillaRNN(3, 4, 2)) and shows_states(LSTM(3, 4, 2))


@dataclass
class _NoConfig:
    pass


class _Copies(torch.nn.Module):
    """A model whose step_states returns copies of its states: the gradient would never reach them."""

    def __init__(self, input_size: int, num_classes: int) -> None:
        super().__init__()
        self.rnn = VanillaRNN(input_size, 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)

    def step_states(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits, states = self.rnn.step_states(x)
        return logits, [s.detach().clone().requires_grad_() for s in states]


def test_check_model_catches_states_that_are_copies():
    registry = Registry()
    registry.add(
        ModelDef(
            name="copies",
            description="",
            kinds=("sequence-classification",),
            config=_NoConfig,
            build=lambda config, *, input_size, num_classes: _Copies(input_size, num_classes),
        )
    )
    with pytest.raises(AssertionError, match="copies: step_states.*not in the graph of the logits"):
        check_model("copies", registry)


def test_a_model_without_states_trains_and_records_nothing_with_one_warning(tmp_path):
    spec = resolve_spec(tiny_spec({"train.record_gradients": True}))
    plain = torch.nn.GRU(10, 4)  # a sequence model that does not declare step_states
    with pytest.warns(RnnkitWarning, match="no gradients recorded: model 'lstm' declares no step_states"):
        assert gradient_recorders(spec, tmp_path, task(4), plain) == []
    with pytest.raises(KindNotSupportedError, match="declares no step_states"):
        task(4).gradient_flow(plain, 4)
    with pytest.raises(UsageError, match="no gradient-flow measurement"):
        super(PalindromeTask, task(4)).gradient_flow(plain, 4)  # the Task default


def test_a_plugin_model_without_states_gets_one_warning_line_from_the_cli(tmp_path):
    pytest.importorskip("rnnkit_gru")
    spec_file = tmp_path / "gru.yaml"
    spec_file.write_text(json.dumps(tiny_spec({"model.name": "gru", "train.max_steps": 5})), encoding="utf-8")
    result = run("train", str(spec_file), "train.record_gradients=true", "--out-dir", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "record_gradients" in line]
    assert warned == [
        "warning: train.record_gradients: no gradients recorded: model 'gru' declares no "
        "step_states(x) (rnnkit.kinds.StepStates)"
    ]
    assert not (tmp_path / "tiny" / GRADIENTS_FILE).exists()


# -- recording in a run -------------------------------------------------------------------------


def _train(tmp_path: Path, name: str, **overrides) -> Path:
    base = {"train.eval_every": 10, "train.max_steps": 30, "train.early_stop.threshold": 0, "model.name": "rnn"}
    spec = resolve_spec(tiny_spec({**base, **overrides, "name": name, "out_dir": str(tmp_path)}))
    return Path(train_run(spec)["run_dir"])


def _without_time(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "elapsed"} for line in path.read_text().splitlines()]


def test_a_run_records_at_its_start_and_each_evaluation_and_trains_exactly_alike(tmp_path):
    on = _train(tmp_path, "on", **{"train.record_gradients": True})
    off = _train(tmp_path, "off")
    records = read_gradients(on)
    assert [r["step"] for r in records] == [0, 10, 20, 30]
    assert all(len(r["norms"]) == 4 and all(n > 0 for n in r["norms"]) for r in records)  # length 5: 4 steps
    assert not (off / GRADIENTS_FILE).exists()
    assert _without_time(on / "metrics.jsonl") == _without_time(off / "metrics.jsonl")
    start, end = start_and_end(records)
    assert start["step"] == 0 and end["step"] == 30


def test_a_resumed_run_drops_records_past_its_checkpoint_and_duplicates_none(tmp_path):
    whole = _train(tmp_path, "whole", **{"train.record_gradients": True, "train.max_steps": 40})
    part = _train(tmp_path, "part", **{"train.record_gradients": True, "train.max_steps": 20})
    with open(part / GRADIENTS_FILE, "a", encoding="utf-8") as f:  # what a kill after step 20 left behind
        f.write(json.dumps({"step": 30, "loss": 1.0, "norms": [1.0, 1.0, 1.0, 1.0]}) + "\n" + '{"step": 4')
    spec = resolve_spec(
        tiny_spec(
            {
                "train.eval_every": 10,
                "train.max_steps": 40,
                "train.early_stop.threshold": 0,
                "model.name": "rnn",
                "train.record_gradients": True,
                "name": "part",
                "out_dir": str(tmp_path),
            }
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RnnkitWarning)  # the unreadable line, reported
        train_run(spec, part, resume=True)
    resumed, uninterrupted = read_gradients(part), read_gradients(whole)
    assert [r["step"] for r in resumed] == [0, 10, 20, 30, 40]
    assert [r["norms"] for r in resumed] == [r["norms"] for r in uninterrupted]


# -- sweeps -------------------------------------------------------------------------------------


def test_sweeps_record_by_default_where_models_show_states_without_renaming_runs(tmp_path):
    def plan(*overrides: str, models=("rnn", "lstm")) -> list:
        return SweepPlan(models=list(models), lengths=[5], out=tmp_path, overrides=list(overrides)).run_specs()

    default, off = plan(), plan("train.record_gradients=false")
    assert [r.spec.train.record_gradients for r in default] == [True, True]
    assert [r.spec.train.record_gradients for r in off] == [False, False]
    pinned = ["model=rnn_length=5_seed=0_b55e1832", "model=lstm_length=5_seed=0_d77d8ec9"]
    assert [r.spec.name for r in default] == [r.spec.name for r in off] == pinned
    # a run recorded either way is the same run: found finished, never "a run of another spec"
    assert spec_differences(off[0].spec.to_dict(), default[0].spec.to_dict()) == []
    assert spec_differences(off[0].spec.to_dict(), plan("train.lr=0.5")[0].spec.to_dict()) != []


def test_sweeps_leave_recording_off_for_a_plugin_model_without_states(tmp_path):
    pytest.importorskip("rnnkit_gru")
    (gru,) = SweepPlan(models=["gru"], lengths=[5], out=tmp_path).run_specs()
    assert gru.spec.train.record_gradients is False  # no step_states: no warning from every run


# -- figures ------------------------------------------------------------------------------------


def _records() -> list[dict]:
    return [
        {"step": s, "loss": 1.0, "norms": [0.1 * 0.5 ** (9 - t) * (1 + s / 100) for t in range(10)]}
        for s in range(0, 300, 20)
    ]


def test_the_run_figure_draws_norms_on_a_log_axis_one_curve_per_record():
    fig = gradients_figure(_records(), "r", {"model": {"name": "rnn"}, "task": {"name": "palindrome", "length": 11}})
    fig.savefig(io.BytesIO(), format="png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel().startswith("‖∂L/∂h_t‖")
    lines = ax.get_lines()
    assert len(lines) == 10  # 15 records: 10 shown, the first and the last among them
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0] == "step 0 (initialisation): ratio 0.002" and labels[-1].startswith("step 280 (last record)")
    assert list(lines[0].get_xdata()) == list(range(1, 11))
    notes = "\n".join(t.get_text() for t in fig.texts)
    assert "10 of 15 records shown" in notes and "a^(T-1)" in notes


def test_the_sweep_figure_draws_ratios_at_start_and_end_against_length(tmp_path):
    rows = []
    for model, a in (("rnn", 0.5), ("lstm", 0.95)):
        for length in (5, 10, 15):
            for seed in (0, 1):
                name = f"model={model}_length={length}_seed={seed}_x"
                (tmp_path / name).mkdir()
                norms = [a ** (length - 1 - t) for t in range(length - 1)]
                lines = [{"step": 0, "loss": 2.3, "norms": norms}, {"step": 50, "loss": 0.1, "norms": norms[::-1]}]
                (tmp_path / name / GRADIENTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines))
                status = "solved" if model == "lstm" else "plateau"
                rows.append({"model": model, "length": length, "seed": seed, "status": status, "run_dir": name})
    rows.append({"model": "rnn", "length": 20, "seed": 0, "status": "failed", "run_dir": "missing"})
    with_ratios = gradient_rows(tmp_path, rows)
    assert with_ratios[0]["gradient_ratio_start"] == pytest.approx(0.5**3)
    assert with_ratios[0]["gradient_ratio_end"] == pytest.approx(2.0**3)
    assert with_ratios[-1]["gradient_ratio_start"] is None
    fig = gradient_sweep_figure(with_ratios, ["model", "length"])
    fig.savefig(io.BytesIO(), format="png")
    start, end = fig.axes[:2]
    assert [ax.get_title() for ax in (start, end)] == ["at initialisation (step 0)", "at the end of training"]
    assert start.get_yscale() == "log"
    rnn_line = start.get_lines()[0]
    assert list(rnn_line.get_xdata()) == [5, 10, 15]
    assert list(rnn_line.get_ydata()) == pytest.approx([0.5**3, 0.5**8, 0.5**13])  # geometric mean of seeds
    labels = [t.get_text() for t in end.get_legend().get_texts()]
    assert labels[:2] == ["rnn", "lstm"] and "a run, solved" in labels
    assert "1 runs without gradient records" in "\n".join(t.get_text() for t in fig.texts)
    with pytest.raises(UsageError, match="no run of this sweep recorded"):
        gradient_sweep_figure(with_ratios[-1:], ["model", "length"])


def test_plot_gradients_from_the_command_line(tmp_path):
    run_dir = _train(tmp_path, "g", **{"train.record_gradients": True})
    result = run("plot", str(run_dir), "--gradients")
    assert result.exit_code == 0, result.output
    assert (run_dir / "gradients.png").stat().st_size > 10_000
    plain = _train(tmp_path, "plain")
    assert_one_line_error(run("plot", str(plain), "--gradients"), 2, "no gradient records", "record_gradients=true")
    assert_one_line_error(run("plot", str(run_dir), str(plain), "--gradients"), 2, "one run or one sweep")
