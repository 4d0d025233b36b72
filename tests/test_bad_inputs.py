"""A catalogue of bad input over every command: each must end in one line on stderr and exit 1 or 2.

Each case runs the real command line (``rnnkit.cli.main``) in a child process under a memory ceiling
(RLIMIT_AS) and a time limit, and must exit with its expected code and write exactly one line on
stderr, with no "internal error" and no traceback. Starting a Python that imports torch costs ~2 s, so
the cases do not each start one: a driver process (this file run as a script) imports rnnkit, torch
and torch-geometric once and forks one child per case (two at a time), which sets the limits,
redirects stdout and stderr to files and calls ``main()``. The fixture runs the driver once for the
cases selected, and each case is its own test.

The memory ceiling is the driver's address space after those imports plus 2 GiB: torch reserves a
large virtual address space on import, so an absolute 2 GiB would fail before any case runs.

``RUNS`` are the cases of the run machinery: memory over budget, damaged or locked checkpoints,
a full disk during a save.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Seconds a case may run, and the address space it gets on top of the driver's.
CASE_SECONDS = 60
EXTRA_ADDRESS_SPACE = 2 << 30
PARALLEL = 2


@dataclass
class Case:
    """One bad invocation: ``args`` after ``rnnkit`` ({ws} is the workspace), the exit code it must
    end with and words its error line must contain."""

    id: str
    args: list[str]
    code: int
    words: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    stdout: str = ""  # a file stdout goes to instead of a capture file (e.g. /dev/full)
    hold_lock: str = ""  # a directory (under {ws}) whose .lock the driver holds while the case runs
    fsize: int = 0  # RLIMIT_FSIZE in bytes (0: unlimited): writes past it fail (EFBIG)
    header: str = ""  # the start of one progress line the command prints before it fails (else none)


def c(id: str, args: str | list[str], code: int, *words: str, **options: Any) -> Case:
    return Case(id, args.split() if isinstance(args, str) else list(args), code, list(words), **options)


LM_ARGS = (
    "model.embedding_size=8 model.hidden_size=16 train.max_steps=20 train.batch_size=8 train.eval_every=10 "
    "train.checkpoint_every=10 train.log_every=10 task.seq_len=16 --device cpu --no-progress"
)
PAL_ARGS = "train.max_steps=20 train.batch_size=16 model.hidden_size=8 task.length=5 train.checkpoint_every=10"
PAL = str(ROOT / "examples" / "palindrome-lstm.yaml")
XMAS = str(ROOT / "examples" / "christie.yaml")
BIG = "1180591620717411303424"  # 2**70

#: Commands the driver runs first, in order, to make the run directories some cases need.
SETUP = [
    ["train", PAL, *PAL_ARGS.split(), "--device", "cpu", "--no-progress", "--out-dir", "{ws}/runs", "--name", "pal"],
]

GLOBAL = [
    c("bare-unknown-option", "--nope", 2, "No such option"),
    c("bare-unknown-command", "nosuchcommand", 2, "No such command"),
    c("bare-typo-command", "trian", 2, "trian"),
    c("bare-short-option", "-x", 2),
    c("bare-help-with-value", "--help=yes", 2),
    c("bare-version-with-value", "--version=2", 2),
    c("bare-empty-command", [""], 2),
    c("bare-env-disable-plugins", "models", 2, "RNNKIT_DISABLE_PLUGINS", env={"RNNKIT_DISABLE_PLUGINS": "maybe"}),
    c("bare-env-raise-errors", "models", 2, "RNNKIT_RAISE_PLUGIN_ERRORS", env={"RNNKIT_RAISE_PLUGIN_ERRORS": "2"}),
]

TRAIN = [
    c("train-no-spec", "train", 2, "give a run spec"),
    c("train-missing-spec", "train {ws}/nope.yaml", 2, "not found"),
    c("train-directory-spec", "train {ws}", 2, "is a directory"),
    c("train-device-file-spec", "train /dev/null", 2, "not a regular file"),
    c("train-empty-spec", "train {ws}/empty.yaml", 2, "model.name"),
    c("train-list-spec", "train {ws}/list.yaml", 2, "must be a mapping"),
    c("train-scalar-spec", "train {ws}/scalar.yaml", 2, "must be a mapping"),
    c("train-unclosed-bracket", "train {ws}/unclosed.yaml", 2, "malformed YAML", "line"),
    c("train-tab-indent", "train {ws}/tabs.yaml", 2, "malformed YAML"),
    c("train-duplicate-key", "train {ws}/dup.yaml", 2, "given twice"),
    c("train-alias-bomb", "train {ws}/bomb.yaml", 2, "aliases expand", "10,000"),
    c("train-alias-bomb-mapping", "train {ws}/bomb-map.yaml", 2, "aliases expand"),
    c("train-recursive-alias", "train {ws}/recursive.yaml", 2, "recursive alias"),
    c("train-recursive-mapping-alias", "train {ws}/recursive-map.yaml", 2, "recursive alias"),
    c("train-python-tag", "train {ws}/python-tag.yaml", 2, "tags are not allowed", "python/object"),
    c("train-python-apply-tag", "train {ws}/python-apply.yaml", 2, "tags are not allowed"),
    c("train-local-tag", "train {ws}/local-tag.yaml", 2, "tags are not allowed", "!foo"),
    c("train-binary-tag", "train {ws}/binary-tag.yaml", 2, "tags are not allowed"),
    c("train-set-tag", "train {ws}/set-tag.yaml", 2, "tags are not allowed"),
    c("train-bad-date", "train {ws}/date.yaml", 2, "malformed YAML", "month"),
    c("train-deep-nesting", "train {ws}/deep.yaml", 2, "nested"),
    c("train-deep-mapping", "train {ws}/deep-map.yaml", 2, "nested"),
    c("train-thousands-of-digits", "train {ws}/digits.yaml", 2, "malformed YAML"),
    c("train-huge-spec", "train {ws}/huge.yaml", 2, "at most 256,000"),
    c("train-latin1-spec", "train {ws}/latin1.yaml", 2, "cannot read spec"),
    c("train-nul-spec", "train {ws}/nul.yaml", 2, "malformed YAML"),
    c("train-control-char-key", "train {ws}/control-key.yaml", 2, "unknown key"),
    c("train-complex-key", "train {ws}/complex-key.yaml", 2, "plain name"),
    c("train-two-documents", "train {ws}/two-docs.yaml", 2, "malformed YAML"),
    c("train-unknown-top-key", f"train {PAL} optimiser=adam", 2, "unknown key"),
    c("train-unknown-model", f"train {PAL} model.name=nope", 2, "unknown model 'nope'"),
    c("train-model-wrong-task", f"train {PAL} model.name=gcn-dense", 2, "is not a sequence-classification model"),
    c("train-unknown-task", f"train {PAL} task.name=imagenet", 2, "unknown task"),
    c("train-override-no-equals", f"train {PAL} train.lr", 2, "key.sub=value"),
    c("train-override-empty-key", f"train {PAL} =3", 2, "key.sub=value"),
    c("train-override-empty-part", f"train {PAL} train..lr=3", 2, "key.sub=value"),
    c("train-override-alias-bomb", ["train", PAL, "train.lr=&a [*a]"], 2, "recursive alias"),
    c("train-override-name-list", ["train", PAL, "name=&a [1, 2]"], 2, "must be a string"),
    c("train-override-python-tag", ["train", PAL, "train.lr=!!python/object/apply:os.system [ls]"], 2, "tags"),
    c("train-override-unknown-key", f"train {PAL} train.learning_rate=0.1", 2, "unknown key"),
    c("train-override-wrong-type", f"train {PAL} train.lr=fast", 2, "must be a number"),
    c("train-override-section-scalar", f"train {PAL} train=5", 2, "must be a mapping"),
    c("train-override-into-scalar", f"train {PAL} train.lr.x=1", 2, "not a section"),
    c("train-batch-size-zero", f"train {PAL} train.batch_size=0", 2, "greater than 0"),
    c("train-batch-size-billion", f"train {PAL} train.batch_size=1000000000", 2, "at most 1,000,000"),
    c("train-batch-size-float", f"train {PAL} train.batch_size=1.5", 2, "must be an integer"),
    c("train-length-one", f"train {PAL} task.length=1", 2, "at least 2"),
    c("train-length-huge", f"train {PAL} task.length=100000", 2, "at most 10,000"),
    c("train-seq-len-huge", f"train {XMAS} task.seq_len=1000000", 2, "at most 10,000"),
    c("train-max-steps-zero", f"train {PAL} train.max_steps=0", 2, "greater than 0"),
    c("train-max-steps-huge", f"train {PAL} train.max_steps=10000000000", 2, "at most"),
    c("train-lr-negative", f"train {PAL} train.lr=-1", 2, "greater than 0"),
    c("train-lr-nan", f"train {PAL} train.lr=.nan", 2, "finite"),
    c("train-lr-inf", f"train {PAL} train.lr=1e999", 2, "finite"),
    c("train-momentum-one", f"train {PAL} train.momentum=1", 2, "less than 1"),
    c("train-max-memory-negative", f"train {PAL} train.max_memory_gb=-1", 2, "at least 0"),
    c("train-eval-batches-huge", f"train {PAL} train.eval_batches=10000000", 2, "at most"),
    c("train-window-zero", f"train {PAL} train.early_stop.window=0", 2, "at least 1"),
    c("train-optimizer-unknown", f"train {PAL} train.optimizer=adagrad", 2, "must be one of"),
    c("train-hidden-size-word", f"train {PAL} model.hidden_size=big", 2, "must be an integer"),
    c("train-hidden-size-zero", f"train {PAL} model.hidden_size=0", 2, "greater than 0"),
    c("train-hidden-thousands-digits", ["train", PAL, "model.hidden_size=" + "9" * 5000], 2, "model.hidden_size"),
    c("train-seed-2-70", f"train {PAL} --seed {BIG}", 2, "seed", "at most"),
    c("train-seed-negative", f"train {PAL} --seed -1", 2, "seed", "at least 0"),
    c("train-seed-word", f"train {PAL} --seed abc", 2, "--seed"),
    c("train-seed-override-float", f"train {PAL} seed=1.5", 2, "must be an integer"),
    c("train-seed-in-file", "train {ws}/seed.yaml", 2, "seed", "at most"),
    c("train-name-dotdot", f"train {PAL} --name ..", 2, "plain directory name"),
    c("train-name-slash", f"train {PAL} --name a/b", 2, "plain directory name"),
    c("train-name-too-long", ["train", PAL, "--name", "n" * 300], 2, "plain directory name"),
    c("train-device-unknown", f"train {PAL} --device tpu", 2, "must be one of"),
    c("train-resume-missing", "train --resume {ws}/nope", 2, "not a run directory"),
    c("train-resume-not-a-run", "train --resume {ws}", 2, "not a run directory"),
    c("train-resume-and-spec", f"train {PAL} --resume " + "{ws}/runs/pal", 2, "not both"),
    c("train-data-dir-missing", f"train {XMAS} --data-dir " + "{ws}/nope", 2, "not a directory"),
    c("train-text-missing", f"train {XMAS} {LM_ARGS} --out-dir " + "{ws}/out --text {ws}/nope.txt", 1, "not found"),
    c("train-text-binary", f"train {XMAS} {LM_ARGS} --out-dir " + "{ws}/out --text {ws}/binary.bin", 1, "binary"),
    c("train-text-empty", f"train {XMAS} {LM_ARGS} --out-dir " + "{ws}/out --text {ws}/empty.txt", 1, "empty"),
    c("train-text-directory", f"train {XMAS} {LM_ARGS} --out-dir " + "{ws}/out --text {ws}", 1, "directory"),
    c("train-text-latin1", f"train {XMAS} {LM_ARGS} --out-dir " + "{ws}/out --text {ws}/latin1.txt", 1, "UTF-8"),
    c("train-text-device-file", f"train {XMAS} {LM_ARGS} --out-dir " + "{ws}/out --text /dev/zero", 1, "regular"),
    c("train-threads-zero", f"train {PAL} --threads 0", 2, "--threads"),
    c("train-unknown-option", f"train {PAL} --bogus", 2, "No such option"),
    c(
        "train-env-disable-plugins",
        f"train {PAL}",
        2,
        "RNNKIT_DISABLE_PLUGINS",
        env={"RNNKIT_DISABLE_PLUGINS": "maybe"},
    ),
    c(
        "train-out-of-memory",
        f"train {PAL} {PAL_ARGS} train.batch_size=1000000 task.length=2000 train.max_memory_gb=1000 --device cpu "
        "--no-progress --out-dir {ws}/out",
        1,
        "out of memory",
        "train.batch_size",
        header="training lstm on palindrome",
    ),
    c("train-out-dir-is-file", f"train {PAL} {PAL_ARGS} --device cpu --out-dir " + "{ws}/empty.txt", 1, "empty.txt"),
    c("train-out-dir-in-proc", f"train {PAL} {PAL_ARGS} --device cpu --out-dir /proc/rnnkit", 1, "/proc/rnnkit"),
]

SWEEP = [
    c("sweep-lengths-word", "sweep --lengths abc", 2, "invalid lengths"),
    c("sweep-lengths-backwards", "sweep --lengths 35-5", 2, "backwards"),
    c("sweep-lengths-step-zero", "sweep --lengths 5-35:0", 2, "step"),
    c("sweep-lengths-one", "sweep --lengths 1-5", 2, "at least 2"),
    c("sweep-lengths-comma", "sweep --lengths ,", 2, "invalid lengths"),
    c("sweep-lengths-too-many", "sweep --lengths 2-20000", 2, "10,000"),
    c("sweep-length-huge", "sweep --lengths 100000", 2, "task.length"),
    c("sweep-models-unknown", "sweep --lengths 5 --models nope", 2, "unknown model"),
    c("sweep-models-empty", ["sweep", "--lengths", "5", "--models", ""], 2, "no models"),
    c("sweep-models-graph", "sweep --lengths 5 --models gcn-dense", 2, "is not a sequence-classification model"),
    c("sweep-seeds-zero", "sweep --lengths 5 --seeds 0", 2, "--seeds"),
    c("sweep-workers-zero", "sweep --lengths 5 --workers 0", 2, "--workers"),
    c("sweep-set-wrong-type", "sweep --lengths 5 -s train.lr=fast", 2, "must be a number"),
    c("sweep-set-alias", ["sweep", "--lengths", "5", "-s", "train.lr=&x [*x]"], 2, "recursive alias"),
    c("sweep-set-tag", ["sweep", "--lengths", "5", "-s", "train.lr=!!python/name:os.system"], 2, "tags"),
    c("sweep-set-controlled", "sweep --lengths 5 -s seed=1", 2, "seed"),
    c("sweep-set-batch-billion", "sweep --lengths 5 -s train.batch_size=1000000000", 2, "at most"),
    c("sweep-set-memory-negative", "sweep --lengths 5 -s train.max_memory_gb=-1", 2, "at least 0"),
    c("sweep-set-length-controlled", "sweep --lengths 5 -s task.length=7", 2, "task.length"),
    c("sweep-spec-missing", "sweep {ws}/nope.yaml", 2, "not found"),
    c("sweep-spec-bomb", "sweep {ws}/bomb.yaml", 2, "aliases expand"),
    c("sweep-spec-tag", "sweep {ws}/python-tag.yaml", 2, "tags are not allowed"),
    c("sweep-spec-recursive", "sweep {ws}/recursive.yaml", 2, "recursive alias"),
    c("sweep-lengths-letters", "sweep --lengths 5-x", 2, "invalid lengths"),
    c("sweep-env-disable-plugins", "sweep --lengths 5", 2, "RNNKIT_DISABLE", env={"RNNKIT_DISABLE_PLUGINS": "maybe"}),
]

PLOT = [
    c("plot-no-path", "plot", 2, "Missing argument"),
    c("plot-missing", "plot {ws}/nope", 2, "does not exist"),
    c("plot-file", "plot {ws}/empty.txt", 2, "not a sweep directory"),
    c("plot-empty-dir", "plot {ws}/emptydir", 2, "not a sweep directory"),
    c("plot-garbage-results-json", "plot {ws}/gcn-garbage", 1, "results.json"),
    c("plot-unknown-option", "plot {ws} --bogus", 2, "No such option"),
]

SAMPLE = [
    c("sample-missing-checkpoint", "sample {ws}/nope", 1, "no checkpoint"),
    c("sample-palindrome-checkpoint", "sample {ws}/runs/pal", 1, "not a character language model"),
    c("sample-corrupt-weights", "sample {ws}/broken-weights", 1, "corrupt"),
    c("sample-corrupt-meta", "sample {ws}/broken-meta", 1, "corrupt"),
    c("sample-length-zero", "sample -n 0", 2, "--length", "at least 1"),
    c("sample-length-billion", "sample -n 1000000000", 2, "--length", "1,000,000"),
    c("sample-length-negative", "sample --length -5", 2, "--length"),
    c("sample-num-zero", "sample --num 0", 2, "--num"),
    c("sample-num-million", "sample --num 1000000", 2, "--num", "10,000"),
    c("sample-num-times-length", "sample --num 10000 -n 100000", 2, "20,000,000"),
    c("sample-start-times-num", ["sample", "--num", "10000", "-n", "10", "--start", "a" * 3000], 2, "--num"),
    c("sample-seed-2-70", f"sample --seed {BIG}", 2, "--seed"),
    c("sample-seed-negative", "sample --seed -1", 2, "--seed"),
    c("sample-seed-word", "sample --seed abc", 2, "--seed"),
    c("sample-temperature-negative", "sample -t -1", 2, "--temperature"),
    c("sample-temperature-nan", "sample -t nan", 2, "--temperature"),
    c("sample-temperature-inf", "sample -t inf", 2, "--temperature"),
    c("sample-temperatures-word", "sample --temperatures 0,hot", 2, "--temperatures"),
    c("sample-temperatures-empty", "sample --temperatures ,,,", 2, "--temperatures"),
    c("sample-temperatures-inf", "sample --temperatures 0,inf", 2, "--temperature"),
    c("sample-top-k-negative", "sample --top-k -1", 2, "--top-k"),
    c("sample-top-k-huge", "sample --top-k 500", 2, "--top-k"),
    c("sample-backend-unknown", "sample --backend cudnn", 2, "--backend"),
    c("sample-device-unknown", "sample --device tpu", 2, "tpu"),
    c("sample-start-unknown-char", ["sample", "--start", "€uro"], 2, "--drop-unknown"),
    c("sample-to-full-disk", "sample -n 100000 --seed 1", 1, "disk full", "standard output", stdout="/dev/full"),
    c("sample-env-disable-plugins", "sample", 2, "RNNKIT_DISABLE_PLUGINS", env={"RNNKIT_DISABLE_PLUGINS": "maybe"}),
]

COMPLETE = [
    c("complete-no-prompt", "complete", 2, "give a prompt"),
    c("complete-empty-prompt", ["complete", ""], 2, "give a prompt"),
    c("complete-prompt-and-file", "complete Poirot --prompt-file {ws}/prompt.txt", 2, "not both"),
    c("complete-prompt-file-missing", "complete --prompt-file {ws}/nope.txt", 1, "not found"),
    c("complete-prompt-file-directory", "complete --prompt-file {ws}", 1, "directory"),
    c("complete-prompt-file-20mb", "complete --prompt-file {ws}/big-prompt.txt", 2, "1,000,000"),
    c("complete-prompt-file-binary", "complete --prompt-file {ws}/binary.bin", 1, "binary"),
    c("complete-prompt-file-latin1", "complete --prompt-file {ws}/latin1.txt", 1, "UTF-8"),
    c("complete-prompt-file-device", "complete --prompt-file /dev/zero", 1, "regular file"),
    c("complete-prompt-file-empty", "complete --prompt-file {ws}/empty.txt", 2, "give a prompt"),
    c("complete-unknown-chars", ["complete", "Poirot €"], 2, "--drop-unknown"),
    c("complete-only-unknown-dropped", ["complete", "€€€", "--drop-unknown"], 2, "nothing of the prompt"),
    c("complete-length-zero", "complete Poirot -n 0", 2, "--length"),
    c("complete-length-huge", "complete Poirot -n 2000000", 2, "--length", "1,000,000"),
    c("complete-seed-2-70", f"complete Poirot --seed {BIG}", 2, "--seed"),
    c("complete-temperature-negative", "complete Poirot -t -1", 2, "--temperature"),
    c("complete-top-k-huge", "complete Poirot --top-k 1000", 2, "--top-k"),
    c("complete-palindrome-checkpoint", "complete Poirot -c {ws}/runs/pal", 1, "not a character language model"),
    c("complete-missing-checkpoint", "complete Poirot -c {ws}/nope", 1, "no checkpoint"),
    c("complete-to-full-disk", "complete Poirot -n 100 --seed 1", 1, "disk full", stdout="/dev/full"),
]

GCN_OUT = "--out {ws}/gcn-out --runs 1 --epochs 1"
GCN = [
    c("gcn-dataset-unknown", f"gcn --dataset imagenet {GCN_OUT}", 2, "dataset"),
    c("gcn-layers-zero", f"gcn --dataset karate --layers 0 {GCN_OUT}", 2, "layers", "greater than 0"),
    c("gcn-layers-million", f"gcn --dataset karate --layers 1000000 {GCN_OUT}", 2, "layers", "at most 64"),
    c("gcn-layers-word", f"gcn --dataset karate --layers abc {GCN_OUT}", 2, "--layers"),
    c("gcn-hidden-zero", f"gcn --dataset karate --hidden 0 {GCN_OUT}", 2, "hidden"),
    c("gcn-hidden-huge", f"gcn --dataset karate --hidden 100000000 {GCN_OUT}", 2, "hidden", "at most"),
    c(
        "gcn-hidden-over-budget",
        f"gcn --dataset karate --impl pyg --hidden 1000000 --max-memory-gb 0.1 {GCN_OUT}",
        2,
        "memory budget",
        "--hidden",
    ),
    c("gcn-epochs-zero", "gcn --dataset karate --epochs 0 --out {ws}/gcn-out", 2, "epochs"),
    c("gcn-epochs-huge", "gcn --dataset karate --epochs 100000000 --out {ws}/gcn-out", 2, "epochs", "at most"),
    c("gcn-runs-zero", "gcn --dataset karate --runs 0 --out {ws}/gcn-out", 2, "runs"),
    c("gcn-runs-huge", "gcn --dataset karate --runs 100000 --out {ws}/gcn-out", 2, "runs", "at most"),
    c("gcn-impl-empty", ["gcn", "--dataset", "karate", "--impl", ",", *GCN_OUT.split()], 2, "no implementation"),
    c("gcn-impl-unknown", f"gcn --dataset karate --impl dense,nope {GCN_OUT}", 2, "unknown implementation"),
    c("gcn-impl-sequence-model", f"gcn --dataset karate --impl lstm {GCN_OUT}", 2, "not a node-classification"),
    c("gcn-billion-nodes-pyg", f"gcn --dataset synthetic --nodes 1000000000 --impl pyg {GCN_OUT}", 2, "--nodes"),
    c("gcn-billion-nodes-dense", f"gcn --dataset synthetic --nodes 1000000000 --impl dense {GCN_OUT}", 2, "budget"),
    c("gcn-max-dense-gb", f"gcn --dataset synthetic --nodes 100000 --max-dense-gb 1 {GCN_OUT}", 2, "--impl pyg"),
    c(
        "gcn-max-memory-gb",
        f"gcn --dataset synthetic --nodes 100000 --impl dense --max-memory-gb 1 {GCN_OUT}",
        2,
        "--max-memory-gb",
    ),
    c("gcn-max-memory-negative", f"gcn --dataset karate --max-memory-gb -1 {GCN_OUT}", 2, "at least 0"),
    c("gcn-nodes-too-few", f"gcn --dataset synthetic --nodes 8 {GCN_OUT}", 2, "at least 83 nodes"),
    c("gcn-nodes-over-bound", f"gcn --dataset synthetic --nodes 10000000000 {GCN_OUT}", 2, "nodes", "at most"),
    c("gcn-degree-zero", f"gcn --dataset synthetic --degree 0 {GCN_OUT}", 2, "degree"),
    c("gcn-degree-huge", f"gcn --dataset synthetic --degree 1000000000 {GCN_OUT}", 2, "degree"),
    c("gcn-classes-one", f"gcn --dataset synthetic --classes 1 {GCN_OUT}", 2, "classes"),
    c("gcn-classes-huge", f"gcn --dataset synthetic --classes 100000 {GCN_OUT}", 2, "classes"),
    c("gcn-device-unknown", f"gcn --dataset karate --device tpu {GCN_OUT}", 2, "device"),
    c("gcn-threads-zero", f"gcn --dataset karate --threads 0 {GCN_OUT}", 2, "--threads"),
    c("gcn-threads-huge", f"gcn --dataset karate --threads 100000 {GCN_OUT}", 2, "--threads"),
    c("gcn-spec-bomb", f"gcn {{ws}}/bomb.yaml {GCN_OUT}", 2, "aliases expand"),
    c("gcn-spec-tag", f"gcn {{ws}}/python-tag.yaml {GCN_OUT}", 2, "tags are not allowed"),
    c("gcn-spec-unknown-key", f"gcn {{ws}}/gcn-unknown.yaml {GCN_OUT}", 2, "unknown key"),
    c("gcn-spec-graph-seed", f"gcn {{ws}}/gcn-seed.yaml {GCN_OUT}", 2, "graph_seed"),
    c("gcn-spec-features-zero", f"gcn {{ws}}/gcn-features.yaml {GCN_OUT}", 2, "features"),
    c("gcn-partial-planetoid", f"gcn --dataset cora --data-dir {{ws}}/planetoid-partial {GCN_OUT}", 1, "lacks"),
    c(
        "gcn-out-of-memory",
        f"gcn --dataset synthetic --nodes 50000000 --impl pyg --max-memory-gb 1000 {GCN_OUT}",
        1,
        "out of memory",
        "--nodes",
    ),
    c("gcn-env-disable-plugins", f"gcn --dataset karate {GCN_OUT}", 2, "RNNKIT", env={"RNNKIT_DISABLE_PLUGINS": "x"}),
]

MODELS = [
    c("models-set-word", "models -s hidden_size=big", 2, "must be an integer"),
    c("models-set-unknown", "models -s nope=1", 2, "unknown key"),
    c("models-set-alias", ["models", "-s", "hidden_size=&x [*x]"], 2, "recursive alias"),
    c("models-set-tag", ["models", "-s", "hidden_size=!!python/object:os.system {}"], 2, "tags are not allowed"),
    c("models-set-no-equals", "models -s hidden_size", 2, "key.sub=value"),
    c("models-set-negative", "models -s hidden_size=-1", 2, "greater than 0"),
    c("models-input-size-zero", "models --input-size 0", 2, "--input-size"),
    c("models-num-classes-word", "models --num-classes abc", 2, "--num-classes"),
    c("models-unknown-option", "models --bogus", 2, "No such option"),
]

CASES = GLOBAL + TRAIN + SWEEP + PLOT + SAMPLE + COMPLETE + GCN + MODELS

#: The run machinery: memory budget, damaged and locked checkpoints, a full disk during a save.
RUNS = [
    c("run-train-batch-over-memory", f"train {PAL} train.batch_size=1000000 task.length=10000", 2, "memory budget"),
    c("run-train-hidden-over-memory", f"train {PAL} model.hidden_size=1000000", 2, "memory budget"),
    c("run-train-batch-billion", f"train {PAL} train.batch_size=1000000000", 2, "batch_size"),
    c("run-resume-truncated-state", "train --resume {ws}/runs/pal-truncated train.max_steps=40", 1, "state"),
    c("run-resume-garbage-state", "train --resume {ws}/runs/pal-garbage train.max_steps=40", 1, "state"),
    c(
        "run-resume-locked",
        "train --resume {ws}/runs/pal-locked train.max_steps=40",
        1,
        "process",
        hold_lock="runs/pal-locked",
    ),
    c("run-sweep-lengths-100-million", "sweep --lengths 2-100000000", 2, "lengths"),
    c("run-sweep-hidden-over-memory", f"sweep --lengths 5 -s model.hidden_size={BIG}", 2, "memory budget"),
    c(
        "run-disk-full-during-save",
        f"train {PAL} {PAL_ARGS} --device cpu --no-progress --out-dir " + "{ws}/full",
        1,
        "while writing",
        "full/palindrome-lstm",
        fsize=2048,
        header="training lstm on palindrome",
    ),
]
SELECTED = CASES + RUNS


# ---------------------------------------------------------------------------------------------
# The workspace the cases read


def make_workspace(ws: Path) -> None:
    """Every file a case names under {ws}."""
    files: dict[str, str | bytes] = {
        "empty.yaml": "",
        "list.yaml": "- a\n- b\n",
        "scalar.yaml": "42\n",
        "unclosed.yaml": "model: {name: lstm\ntask: [1, 2\n",
        "tabs.yaml": "model:\n\tname: lstm\n",
        "dup.yaml": "model: {name: lstm}\ntrain: {lr: 0.1}\ntrain: {lr: 0.2}\n",
        "bomb.yaml": "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n"
        + "".join(f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)),
        "bomb-map.yaml": "a: &a {x: 1, y: 1, z: 1, w: 1}\n"
        + "".join(
            f"{b}: &{b} {{{', '.join(f'k{i}: *{a}' for i in range(10))}}}\n"
            for a, b in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "recursive.yaml": "model: &a [*a]\n",
        "recursive-map.yaml": "model: &m {name: lstm, again: *m}\n",
        "python-tag.yaml": "model: !!python/object:os.system {}\n",
        "python-apply.yaml": "model:\n  name: !!python/object/apply:os.system ['echo pwned']\n",
        "local-tag.yaml": "model: !foo {name: lstm}\n",
        "binary-tag.yaml": "name: !!binary aGVsbG8=\n",
        "set-tag.yaml": "model: !!set {a, b}\n",
        "date.yaml": "model: {name: lstm}\nname: 2024-13-45\n",
        "deep.yaml": "[" * 3000 + "]" * 3000 + "\n",
        "deep-map.yaml": "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "x\n",
        "digits.yaml": "model: {name: lstm}\nseed: " + "9" * 5000 + "\n",
        "huge.yaml": "# padding\n" * 200_000,
        "latin1.yaml": "model: {name: lstm}\nname: caf\xe9\n".encode("latin-1"),
        "nul.yaml": b"model: {name: lstm}\n\x00\x00\n",
        "control-key.yaml": '"mo\\ndel": {name: lstm}\n',
        "complex-key.yaml": "? [a, b]\n: 1\n",
        "two-docs.yaml": "model: {name: lstm}\n---\nmodel: {name: rnn}\n",
        "seed.yaml": "model: {name: lstm}\nseed: 1180591620717411303424\n",
        "gcn-unknown.yaml": "dataset: karate\nhiden: 3\n",
        "gcn-seed.yaml": "dataset: karate\ngraph_seed: 1180591620717411303424\n",
        "gcn-features.yaml": "dataset: synthetic\nfeatures: 0\n",
        "empty.txt": "",
        "binary.bin": bytes(range(256)) * 100,
        "latin1.txt": ("caf\xe9 " * 100).encode("latin-1"),
        "prompt.txt": "Poirot said\n",
        "gcn-garbage/results.json": "{ not json",
        "planetoid-partial/planetoid/Cora/raw/ind.cora.x": b"junk",
    }
    for name, content in files.items():
        path = ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    with (ws / "big-prompt.txt").open("w", encoding="utf-8") as f:  # 20 MB of English
        f.write("Poirot said that the little grey cells would find the answer. " * 320_000)
    (ws / "emptydir").mkdir()


def after_setup(ws: Path) -> None:
    """Run directories made from the setup runs: broken checkpoints of the palindrome run."""
    pal = ws / "runs" / "pal"
    if not pal.is_dir():
        return
    meta = next(pal.rglob("meta.json"), None)
    weights = next(pal.rglob("model.safetensors"), None)
    for name, target, content in (("broken-weights", "model.safetensors", b"not safetensors"),):
        d = ws / name
        d.mkdir()
        (d / target).write_bytes(content)
        if meta is not None:
            (d / "meta.json").write_text(_lm_meta(meta))
    d = ws / "broken-meta"
    d.mkdir()
    if weights is not None:
        shutil.copy(weights, d / "model.safetensors")
    (d / "meta.json").write_text("{ not json")
    for suffix in ("truncated", "garbage", "locked"):
        shutil.copytree(pal, ws / "runs" / f"pal-{suffix}", symlinks=True)
        for state in (ws / "runs" / f"pal-{suffix}").rglob("state.pt"):
            if state.is_symlink():
                continue
            data = state.read_bytes()
            if suffix == "truncated":
                state.write_bytes(data[: len(data) // 3])
            elif suffix == "garbage":
                state.write_bytes(b"garbage " * 100)


def _lm_meta(meta_path: Path) -> str:
    """The palindrome run's metadata made to look like a character model's, so that the weights are read."""
    meta = json.loads(meta_path.read_text())
    meta.update({"model_task": "char-lm", "model": "charlstm", "vocabulary": list("abc"), "model_config": {}})
    return json.dumps(meta)


# ---------------------------------------------------------------------------------------------
# The driver: run as `python tests/test_bad_inputs.py PLAN.json RESULTS.json`


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


def _run_child(argv: list[str], ws: Path, cwd: Path, case: dict[str, Any], ceiling: int, out: Path, err: Path) -> int:
    """Fork a child that runs ``rnnkit *argv``; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        import resource
        import signal

        import torch

        import rnnkit.registry

        resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
        if case.get("fsize"):
            resource.setrlimit(resource.RLIMIT_FSIZE, (case["fsize"], case["fsize"]))
        signal.alarm(CASE_SECONDS)
        stdout_path = case.get("stdout") or str(out)
        fd_out = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fd_err = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd_out, 1)
        os.dup2(fd_err, 2)
        cwd.mkdir(parents=True, exist_ok=True)
        os.chdir(cwd)
        if case.get("env"):
            os.environ.update(case["env"])
            rnnkit.registry._default = None  # read the environment again
        torch.set_num_threads(1)
        sys.argv = ["rnnkit", *argv]
        from rnnkit.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - what a real interpreter would print
            import traceback

            traceback.print_exc()
            code = 1
        try:
            sys.stdout.flush()
        except BaseException:  # noqa: BLE001 - the interpreter would report it at exit
            import traceback

            traceback.print_exc()
            code = code or 1
        sys.stderr.flush()
    finally:
        os._exit(code)


#: Failing commands run once in the driver, so that what they import lazily is imported before the forks.
WARM_UP = [
    ["train", PAL, "train.lr=fast"],
    ["sweep", "--lengths", "x"],
    ["sample", "--length", "0"],
    ["complete", "x", "--length", "0"],
    ["gcn", "--layers", "0"],
    ["models", "-s", "nope=1"],
    ["plot", "/nonexistent"],
]


def _warm_up() -> None:
    import contextlib
    import io
    import signal

    from rnnkit.cli import main

    handler = signal.getsignal(signal.SIGINT)
    for argv in WARM_UP:
        sys.argv = ["rnnkit", *argv]
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            try:
                main()
            except SystemExit:
                pass
    signal.signal(signal.SIGINT, handler)  # main() ignores Ctrl-C once a command is over


def drive(plan_path: Path, results_path: Path) -> None:
    import fcntl

    import torch  # noqa: F401
    import torch_geometric  # noqa: F401

    import rnnkit.cli  # noqa: F401 - imported once, before the forks
    import rnnkit.gcn  # noqa: F401
    import rnnkit.language_model  # noqa: F401
    import rnnkit.runner  # noqa: F401
    import rnnkit.sampling  # noqa: F401
    import rnnkit.tasks  # noqa: F401
    from rnnkit.registry import default_registry

    default_registry().load_all()  # entry points read and every model imported once, before the forks
    _warm_up()

    plan = json.loads(plan_path.read_text())
    ws = Path(plan["workspace"])
    vm = _vm_size()
    ceiling = vm + EXTRA_ADDRESS_SPACE
    logs = ws / "logs"
    logs.mkdir(exist_ok=True)

    def expand(args: list[str]) -> list[str]:
        return [a.replace("{ws}", str(ws)) for a in args]

    def run_one(key: str, case: dict[str, Any]) -> int:
        return _run_child(
            expand(case["args"]), ws, ws / "cases" / key, case, ceiling, logs / f"{key}.out", logs / f"{key}.err"
        )

    results: dict[str, Any] = {"_meta": {"vm_size": vm, "ceiling": ceiling}}
    for i, argv in enumerate(plan["setup"]):
        pid = run_one(f"setup-{i}", {"args": argv})
        _, status = os.waitpid(pid, 0)
        results[f"_setup-{i}"] = {"code": os.waitstatus_to_exitcode(status), "stderr": _read(logs / f"setup-{i}.err")}
    after_setup(ws)
    queue = list(plan["cases"])
    running: dict[int, tuple[dict[str, Any], float, int | None]] = {}
    while queue or running:
        while queue and len(running) < PARALLEL:
            case = queue.pop(0)
            lock_fd = None
            if case.get("hold_lock"):
                lock_dir = ws / case["hold_lock"]
                lock_dir.mkdir(parents=True, exist_ok=True)
                lock_fd = os.open(lock_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            running[run_one(case["id"], case)] = (case, time.monotonic(), lock_fd)
        pid, status = os.wait()
        case, start, lock_fd = running.pop(pid)
        if lock_fd is not None:
            os.close(lock_fd)
        results[case["id"]] = {
            "code": os.waitstatus_to_exitcode(status),
            "seconds": round(time.monotonic() - start, 2),
            "stdout": _read(logs / f"{case['id']}.out")[-2000:] if not case.get("stdout") else "",
            "stderr": _read(logs / f"{case['id']}.err")[-20000:],
        }
    results_path.write_text(json.dumps(results, indent=1))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# The tests


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> dict[str, Any]:
    wanted = {
        item.callspec.params["case"].id
        for item in request.session.items
        if item.module is sys.modules[__name__] and hasattr(item, "callspec") and "case" in item.callspec.params
    }
    cases = [case for case in SELECTED if case.id in wanted] or SELECTED
    ws = tmp_path_factory.mktemp("bad-inputs")
    make_workspace(ws)
    plan = {"workspace": str(ws), "setup": SETUP, "cases": [asdict(case) for case in cases]}
    (ws / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RNNKIT_DEBUG": "", "NO_COLOR": "1", "TERM": "dumb"}
    for name in ("RNNKIT_DISABLE_PLUGINS", "RNNKIT_RAISE_PLUGIN_ERRORS", "COLUMNS"):
        env.pop(name, None)
    limit = 120 + CASE_SECONDS * len(cases) // PARALLEL
    proc = subprocess.run(
        [sys.executable, __file__, str(ws / "plan.json"), str(ws / "results.json")],
        capture_output=True,
        text=True,
        timeout=limit,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    data = json.loads((ws / "results.json").read_text())
    for key, setup in data.items():
        if key.startswith("_setup"):
            assert setup["code"] == 0, setup
    return data


def test_catalogue_size():
    assert len(CASES) >= 150
    assert len({case.id for case in SELECTED}) == len(SELECTED)
    commands = {case.args[0] if case.args else "" for case in CASES}
    assert {"train", "sweep", "plot", "sample", "complete", "gcn", "models"} <= commands


@pytest.mark.parametrize("case", SELECTED, ids=[case.id for case in SELECTED])
def test_bad_input_is_one_line(case: Case, results: dict[str, Any]) -> None:
    result = results[case.id]
    stderr = result["stderr"]
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr
    assert result["code"] == case.code, result
    if case.header:
        assert len(lines) == 2 and lines[0].startswith(case.header), stderr
        lines = lines[1:]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in case.words:
        assert word in lines[0], (word, lines[0])


# ---------------------------------------------------------------------------------------------
# The same rules, checked directly (no child process)


def test_error_lines_for_memory_disk_and_files():
    import errno

    from rnnkit.cli.common import error_line
    from rnnkit.errors import SpecError

    message, code = error_line(MemoryError(), "sample")
    assert code == 1 and message.startswith("out of memory: MemoryError") and "--num or --length" in message
    torch_oom = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
        "allocate 8000000000 bytes. Error code 12 (Cannot allocate memory)"
    )
    assert error_line(torch_oom, "train") == (
        "out of memory: could not allocate 8.0 GB more (lower train.batch_size or the model size)",
        1,
    )
    cuda_oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text")
    assert error_line(cuda_oom, "gcn")[0].startswith("out of memory: CUDA out of memory")
    full = OSError(errno.ENOSPC, "No space left on device", "runs/x/model.safetensors")
    assert error_line(full) == ("disk full while writing runs/x/model.safetensors (No space left on device)", 1)
    quota = OSError(errno.EDQUOT, "Disk quota exceeded", "runs/x/state.pt")
    assert error_line(quota)[0].startswith("disk quota exceeded while writing runs/x/state.pt")
    assert error_line(OSError(errno.EFBIG, "File too large"))[0] == "file too large (File too large)"
    denied = PermissionError(errno.EACCES, "Permission denied", "/etc/shadow")
    assert error_line(denied) == ("cannot use /etc/shadow: Permission denied", 1)
    assert error_line(SpecError("a\nb")) == ("a\\nb", 2)
    assert error_line(ValueError("x\ny"))[0].startswith("internal error: ValueError: x (set")


@pytest.mark.parametrize(
    "value,on", [("1", True), ("TRUE", True), (" yes ", True), ("", False), ("0", False), ("No", False)]
)
def test_plugin_flags_accept_yes_and_no(monkeypatch, value, on):
    from rnnkit.registry import _env_flag

    monkeypatch.setenv("RNNKIT_DISABLE_PLUGINS", value)
    assert _env_flag("RNNKIT_DISABLE_PLUGINS") is on


@pytest.mark.parametrize("name", ["RNNKIT_DISABLE_PLUGINS", "RNNKIT_RAISE_PLUGIN_ERRORS"])
def test_plugin_flags_refuse_anything_else(monkeypatch, name):
    from rnnkit.errors import UsageError
    from rnnkit.registry import Registry

    monkeypatch.setenv(name, "maybe")
    with pytest.raises(UsageError, match=f"{name}='maybe' is not understood"):
        Registry.from_entry_points()


def test_gcn_memory_is_estimated_for_every_implementation():
    from rnnkit.errors import UsageError
    from rnnkit.gcn import GCNSpec, check_memory, impl_estimate

    spec = GCNSpec(impl="dense,pyg", hidden=16)
    dense = impl_estimate(spec, "dense", nodes=100_000, edges=1_000_000, features=32, classes=4)
    pyg = impl_estimate(spec, "pyg", nodes=100_000, edges=1_000_000, features=32, classes=4)
    assert dense.adjacency == 8e10 and pyg.adjacency == 0
    assert pyg.activations > dense.activations > 0  # messages along every edge
    assert 0 < pyg.total < 1e9 and pyg.graph == dense.graph
    start = time.perf_counter()
    with pytest.raises(UsageError) as info:  # a billion nodes: refused from the sizes alone
        check_memory(GCNSpec(dataset="synthetic", impl="pyg"), 1_000_000_000, budget_gb=10)
    assert time.perf_counter() - start < 1
    assert "1,000,000,000 nodes" in str(info.value) and "lower --nodes" in str(info.value)
    with pytest.raises(UsageError, match="--hidden"):  # a huge layer on a tiny graph names --hidden
        check_memory(GCNSpec(impl="pyg", hidden=1_000_000), 34, budget_gb=0.1, num_edges=156, num_features=34)
    with pytest.raises(UsageError, match="--max-memory-gb"):
        check_memory(GCNSpec(impl="dense", max_dense_gb=1), 100_000)  # the former option still counts


def test_gcn_refuses_a_huge_synthetic_graph_before_generating_it(monkeypatch):
    import rnnkit.data.graphs as graphs
    from rnnkit.errors import UsageError
    from rnnkit.gcn import GCNSpec, check_comparison

    def never(*args, **kwargs):
        raise AssertionError("the graph was generated")

    monkeypatch.setattr(graphs, "stochastic_block_model", never)
    with pytest.raises(UsageError, match="memory budget"):
        check_comparison(GCNSpec(dataset="synthetic", nodes=1_000_000_000, impl="pyg", device="cpu"))


def test_ctrl_c_is_ignored_once_the_command_is_over():
    code = (
        "import signal, sys\n"
        "sys.argv = ['rnnkit', '--nope']\n"
        "from rnnkit.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print(code, signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout.split() == ["2", "True"], proc.stderr


if __name__ == "__main__":
    drive(Path(sys.argv[1]), Path(sys.argv[2]))
