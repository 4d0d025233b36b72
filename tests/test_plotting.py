"""The figures say what they show: labels, ticks, legends, notes and titles of the matplotlib Figures
that rnnkit returns (sweep, run, runs overlaid, GCN comparison), and `rnnkit plot` over several runs."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

from rnnkit.errors import UsageError
from rnnkit.plotting import RunCurves, gcn_figure, plot_paths, runs_figure, settings_text, sweep_figure
from rnnkit.runner import train_run
from rnnkit.spec import resolve_spec
from tests.helpers import assert_one_line_error, run, tiny_spec

LENGTHS = [5, 10, 15, 20, 25, 30, 35]


def drawn(fig):
    fig.savefig(io.BytesIO(), format="png")  # lays out and sets the tick labels
    return fig


def texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.texts)


def sweep_rows(seeds: int, lengths=LENGTHS) -> list[dict]:
    rows = []
    for model in ("rnn", "lstm"):
        for length in lengths:
            for seed in range(seeds):
                value = 1.0 if model == "lstm" or length <= 10 else max(0.1, 1.2 - length / 30 + 0.15 * (seed - 2))
                rows.append({"model": model, "length": length, "seed": seed, "status": "x", "best_accuracy": value})
    return rows


def test_the_sweep_figure_explains_itself():
    fig = drawn(sweep_figure(sweep_rows(5), ["model", "length"], title="seeds5: best accuracy against length"))
    ax = fig.axes[0]
    assert [int(t) for t in ax.get_xticks()] == LENGTHS  # integer ticks at the lengths swept
    assert all(label.get_text() == str(n) for label, n in zip(ax.get_xticklabels(), LENGTHS, strict=True))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["rnn", "lstm"] and "chance (0.1)" in labels
    assert "95% CI of the mean, n = 5 seeds" in labels
    rnn, lstm = ax.get_lines()[:2]
    assert rnn.get_marker() != lstm.get_marker() and rnn.get_linestyle() != lstm.get_linestyle()
    # both visible where they overlap (T = 5, 10: both 1.0): offset along x, symmetric around the length
    assert rnn.get_xdata()[0] < 5 < lstm.get_xdata()[0]
    assert rnn.get_xdata()[0] + lstm.get_xdata()[0] == pytest.approx(10)
    for band in ax.collections:  # the band of an accuracy stays within [0, 1]
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() >= 0 and ys.max() <= 1
    note = texts(fig)
    assert "95% confidence interval of the mean (Student t), n = 5 seeds" in note
    assert "best accuracy: the best mean accuracy over an early-stop window" in note
    assert "offset" in note
    assert ax.get_xlabel() == "palindrome length T" and ax.get_ylabel() == "best accuracy"


def test_a_one_seed_sweep_says_it_has_no_band_and_many_lengths_get_integer_ticks():
    fig = drawn(sweep_figure(sweep_rows(1, list(range(5, 36))), ["model", "length"]))
    ax = fig.axes[0]
    ticks = [t for t in ax.get_xticks() if 5 <= t <= 35]
    assert ticks and all(float(t).is_integer() for t in ticks) and len(ticks) <= 16
    assert "one seed per point: no band" in texts(fig)
    assert not any("CI" in t.get_text() for t in ax.get_legend().get_texts())


def test_a_log_grid_gets_plain_tick_labels():
    rows = [{"lr": lr, "seed": 0, "eval_loss": 1 / (1 + math.log10(lr) + 5)} for lr in (1e-4, 1e-3, 1e-2, 1e-1)]
    fig = drawn(sweep_figure(rows, ["lr"], x="lr", metric="eval_loss"))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert {"0.0001", "0.001", "0.01", "0.1"} <= set(shown)
    assert "best accuracy:" not in texts(fig)  # defined only where drawn


def gcn_summary(runs: int) -> dict:
    def result(impl: str, accs: list[float], ms: float, mb: float) -> dict:
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs)) if len(accs) > 1 else 0.0
        return {
            "impl": impl,
            "test_accuracy_mean": mean,
            "test_accuracy_std": std,
            "epoch_ms_median": ms,
            "peak_memory_mb": mb,
            "device": "cpu",
            "runs": [{"seed": s, "test_accuracy": a} for s, a in enumerate(accs)],
        }

    accs = [0.81 + 0.002 * (s % 5) for s in range(runs)]
    return {
        "dataset": "cora",
        "nodes": 2708,
        "edges": 10556,
        "spec": {"runs": runs, "epochs": 200},
        "results": [result("dense", accs, 88.5, 133.0), result("pyg", accs, 74.3, 59.0)],
    }


def test_the_gcn_figure_zooms_to_the_data_and_labels_its_error_bars():
    fig = drawn(gcn_figure(gcn_summary(10)))
    ax_acc, ax_time, ax_mem = fig.axes
    low, high = ax_acc.get_ylim()
    assert 75 < low < 81 and 81.8 < high < 90  # zoomed, not from 0
    labels = [t.get_text() for t in ax_acc.get_legend().get_texts()]
    assert labels == ["mean ± std over n = 10 runs", "single runs"]
    assert [ax.get_title() for ax in fig.axes] == [
        "test accuracy at the best validation epoch",
        "time per training epoch (median)",
        "peak memory",
    ]
    title = fig.get_suptitle()
    assert "200 epochs" in title and "cpu" in title and "n = 10" in title and "10,556 edges" in title
    assert [t.get_text() for t in ax_time.get_xticklabels()] == ["dense", "pyg"]
    assert "peak memory: one measurement per implementation" in texts(fig)


def test_a_single_gcn_run_has_no_error_bar_and_no_plus_minus_zero():
    fig = drawn(gcn_figure(gcn_summary(1)))
    ax_acc = fig.axes[0]
    assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == ["one run: no error bar"]
    annotations = [t.get_text() for t in ax_acc.texts]
    assert annotations == ["81.0%", "81.0%"] and not any("±" in a for a in annotations)
    assert "one run per implementation" in fig.get_suptitle()


def classification_records() -> list[dict]:
    records = []
    for step in range(50, 1001, 50):
        records.append({"step": step, "loss": 2.3 * 0.995**step, "accuracy": min(1, step / 900), "lr": 1e-3})
        if step % 250 == 0:
            records.append({"step": step, "eval_loss": 2.5 * 0.995**step, "eval_accuracy": min(1, step / 1000)})
    return records


CONFIG = {
    "name": "palindrome-lstm",
    "task": {"name": "palindrome", "length": 20},
    "model": {"name": "lstm", "hidden_size": 128},
    "train": {"optimizer": "rmsprop", "lr": 0.001, "batch_size": 128},
}


def test_a_run_figure_shows_training_and_validation_loss_on_a_readable_log_axis():
    curves = RunCurves("palindrome-lstm", classification_records(), CONFIG, {"status": "solved", "steps": 418})
    fig = drawn(runs_figure([curves]))
    ax_loss, ax_acc = fig.axes
    assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == ["training", "validation"]
    assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == ["training", "validation"]
    assert ax_loss.get_yscale() == "log"
    labels = [t.get_text() for t in ax_loss.get_yticklabels() if t.get_text()]
    assert labels and all("$" not in label and "^" not in label for label in labels)  # 0.05, 0.1 ... not 10^-1
    assert {"0.1", "1"} <= set(labels)
    title = fig.get_suptitle()
    assert "palindrome-lstm" in title and "lstm hidden 128" in title and "palindrome T=20" in title
    assert "rmsprop lr 0.001, batch 128" in title and "solved at step 418" in title


def test_a_text_run_figure_has_bits_per_character():
    records = [{"step": s, "loss": 3 - s / 100, "accuracy": s / 300} for s in range(10, 101, 10)]
    records += [{"step": s, "eval_loss": 3 - s / 120, "eval_bpc": (3 - s / 120) / math.log(2)} for s in (50, 100)]
    config = {
        "task": {"name": "text", "text": "/data/book.txt", "seq_len": 100},
        "model": {"name": "charlstm", "hidden_size": 128, "layers": 2},
        "train": {"optimizer": "adam", "lr": 0.002, "batch_size": 32},
    }
    fig = drawn(runs_figure([RunCurves("christie", records, config)]))
    assert [ax.get_title() for ax in fig.axes] == ["loss", "bits per character", "accuracy"]
    bpc = fig.axes[1]
    training, validation = bpc.get_lines()[:2]
    assert training.get_ydata()[0] == pytest.approx((3 - 0.1) / math.log(2))  # the training loss in bits
    assert list(validation.get_xdata()) == [50, 100]
    assert (
        "charlstm hidden 128, layers 2 · text book.txt, windows of 100 · adam lr 0.002, batch 32" in fig.get_suptitle()
    )


def test_runs_overlaid_have_one_colour_each_and_say_which_is_which():
    a = RunCurves("rnn-20", classification_records(), {**CONFIG, "model": {"name": "rnn", "hidden_size": 128}})
    b = RunCurves("lstm-20", classification_records(), CONFIG)
    fig = drawn(runs_figure([a, b]))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0].startswith("rnn-20: rnn hidden 128") and legend[1].startswith("lstm-20: lstm hidden 128")
    assert "validation" in legend and fig.get_suptitle() == "rnn-20 vs lstm-20"
    colours = {line.get_color() for line in fig.axes[0].get_lines()}
    assert len(colours) == 2


def test_settings_text_of_a_graph_run_leaves_out_the_batch():
    config = {
        "task": {"name": "graph", "dataset": "cora"},
        "model": {"name": "gcn-dense", "hidden_size": 16, "layers": 2},
        "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 1},
    }
    assert settings_text(config, {"status": "max_steps", "steps": 200}) == (
        "gcn-dense hidden 16, layers 2 · graph cora · adam lr 0.01 · max_steps, 200 steps"
    )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("overlay")
    dirs = []
    for model in ("rnn", "lstm"):
        spec = resolve_spec(
            tiny_spec({"name": model, "model.name": model, "out_dir": str(root), "train.eval_every": 10})
        )
        dirs.append(Path(train_run(spec)["run_dir"]))
    return dirs


def test_plot_overlays_runs_from_the_command_line(two_runs, tmp_path):
    result = run("plot", *map(str, two_runs))
    assert result.exit_code == 0, result.output
    written = Path(result.stdout.strip())
    assert written == two_runs[0].parent.absolute() / "rnn_vs_lstm.png" and written.stat().st_size > 1000
    svg = tmp_path / "both.svg"
    assert run("plot", *map(str, two_runs), "-o", str(svg)).exit_code == 0 and svg.read_text().startswith("<?xml")
    assert_one_line_error(run("plot", *map(str, two_runs), "--x", "length"), 2, "--x and --metric")
    assert_one_line_error(run("plot", str(two_runs[0]), str(tmp_path)), 2, "only runs can be overlaid")
    assert_one_line_error(run("plot", str(two_runs[0]), str(tmp_path / "gone")), 2, "does not exist")
    with pytest.raises(UsageError):
        plot_paths([])


def test_plot_of_one_run_has_its_settings_in_the_title(two_runs):
    result = run("plot", str(two_runs[1]))
    assert result.exit_code == 0, result.output
    curves = RunCurves.read(two_runs[1])
    fig = runs_figure([curves])
    assert "lstm hidden 16 · palindrome T=5 · rmsprop lr 0.01, batch 32" in fig.get_suptitle()
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["training", "validation"]
