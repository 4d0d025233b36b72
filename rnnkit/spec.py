"""Run specs: YAML files plus dotted command-line overrides, validated against typed dataclasses.

A spec has four parts: run settings (name, seed, device, output), ``task`` (chosen by ``task.name``),
``model`` (chosen by ``model.name``, its fields are that model's config dataclass) and ``train``; an
optional ``log`` section turns on dashboards (TensorBoard, Weights & Biases), which change nothing in
the training. Every key is checked against the dataclass that owns it: unknown keys are rejected with
the valid keys listed, values must have the declared type (ints are accepted for floats, ``1e-3`` is read as
a float), and numeric fields may declare bounds (``metadata={"gt": 0}``, and ``"le"`` upper bounds far
beyond any real use). Errors name the dotted key and, for keys that come from the file, its line; they
are always one line.

YAML is read as data only (``parse_yaml_text``, for files and override values alike): at most 256 KB,
YAML's own types only (any other tag, such as ``!!python/object``, is refused), anchors and aliases
allowed while their expansion adds at most 10,000 nodes and no alias sits inside its own anchor, and
at most 20 levels of nesting; all checked on the composed node graph before any object is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rnnkit.config import ConfigBuilder, clip, describe, one_line
from rnnkit.errors import SpecError
from rnnkit.registry import get_model
from rnnkit.tasks import TASK_TYPES


@dataclass
class EarlyStopConfig:
    """Stop once the mean accuracy of the last ``window`` training batches (each fresh data) reaches
    ``threshold``; 0 disables."""

    threshold: float = field(default=0.995, metadata={"ge": 0, "le": 1})
    window: int = field(default=50, metadata={"ge": 1, "le": 1_000_000})  # batches averaged


@dataclass
class PlateauConfig:
    """Stop a run whose best windowed accuracy has not improved by ``min_delta`` in ``patience``
    steps (0 disables); such a run is recorded with status ``plateau``."""

    patience: int = field(default=2000, metadata={"ge": 0})
    min_delta: float = field(default=0.01, metadata={"ge": 0})


@dataclass
class TrainConfig:
    """Optimiser, clipping, schedule and stopping rules. The defaults are the palindrome study's:
    RMSprop at 1e-3, batches of 128, gradients clipped at norm 10 (a task may bring its own, see
    ``Task.train_defaults``)."""

    optimizer: Literal["sgd", "momentum", "rmsprop", "adam"] = "rmsprop"
    lr: float = field(default=1e-3, metadata={"gt": 0})
    momentum: float = field(default=0.9, metadata={"ge": 0, "lt": 1})
    weight_decay: float = field(default=0.0, metadata={"ge": 0})
    # at most a million sequences a step; whether a batch fits in memory is checked against max_memory_gb
    batch_size: int = field(default=128, metadata={"gt": 0, "le": 1_000_000})
    max_steps: int = field(default=10_000, metadata={"gt": 0, "le": 1_000_000_000})
    max_norm: float = field(default=10.0, metadata={"ge": 0})
    schedule: Literal["constant", "step", "exponential", "cosine"] = "constant"
    lr_decay_every: int = field(default=5000, metadata={"gt": 0})
    lr_gamma: float = field(default=0.96, metadata={"gt": 0, "le": 1})
    log_every: int = field(default=50, metadata={"gt": 0})
    eval_every: int = field(default=0, metadata={"ge": 0})  # 0: only at the end
    eval_batches: int = field(default=10, metadata={"gt": 0, "le": 100_000})
    # characters of held-out text an evaluation reads (text tasks; logged as eval_chars); 0: all of it.
    # 1M: the bpc within about 0.006 (standard error), ~6 s on one CPU thread; a book's 10% is all read
    eval_chars: int = field(default=1_000_000, metadata={"ge": 0})
    checkpoint_every: int = field(default=0, metadata={"ge": 0})  # 0: only at the end
    sample_every: int = field(default=0, metadata={"ge": 0})  # 0: never (tasks that generate text)
    sample_length: int = field(default=30, metadata={"gt": 0, "le": 100_000})  # characters per training sample
    max_memory_gb: float = field(default=0.0, metadata={"ge": 0})  # 0: half of the available memory
    # fp32, or bf16 autocast for forward passes (weights, gradients and optimiser state stay float32)
    precision: Literal["fp32", "bf16"] = "fp32"
    # gradient flow through time (rnnkit.gradient_flow) at the start and after every evaluation, into
    # gradients.jsonl; changes nothing in the training (sweeps turn it on where the task measures it)
    record_gradients: bool = False
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    plateau: PlateauConfig = field(default_factory=PlateauConfig)


@dataclass
class LogConfig:
    """Dashboards a run logs to besides metrics.jsonl (``rnnkit.dashboards``): TensorBoard event files
    in the run directory (``pip install "rnnkit[tensorboard]"``) and Weights & Biases (``rnnkit[wandb]``).
    They change nothing in the training."""

    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "rnnkit"


#: Settings that change what a run records, not what it trains, as (section, key): never part of a
#: sweep run's hash (``rnnkit.sweep.spec_hash``) and never a difference that stops a resume
#: (``rnnkit.runner.spec_differences``), like the ``log`` section.
RECORDING_SETTINGS = (("train", "record_gradients"),)


@dataclass
class RunSpec:
    """A fully resolved run: every field typed and filled."""

    name: str
    seed: int
    device: str
    out_dir: str
    task: Any  # the task's config dataclass
    task_name: str
    model: Any  # the model's config dataclass
    model_name: str
    train: TrainConfig
    log: LogConfig = field(default_factory=LogConfig)
    #: the spec file it was read from, if any (its folder's git commit goes into the run's provenance)
    source: str | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain data, loadable again with ``resolve_spec``. ``log`` is there only
        when a dashboard is on, so a spec that logs nothing reads (and hashes) as before it existed."""
        data = {
            "name": self.name,
            "seed": self.seed,
            "device": self.device,
            "out_dir": self.out_dir,
            "task": {"name": self.task_name, **dataclasses.asdict(self.task)},
            "model": {"name": self.model_name, **dataclasses.asdict(self.model)},
            "train": dataclasses.asdict(self.train),
        }
        if self.log != LogConfig():
            data["log"] = dataclasses.asdict(self.log)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


#: Seeds are what torch.manual_seed accepts (tasks also seed a second generator at seed + 1,000,003).
MAX_SEED = 2**63 - 1


@dataclass
class _RunSettings:
    name: str = "run"
    seed: int = field(default=0, metadata={"ge": 0, "le": MAX_SEED})
    device: Literal["auto", "cpu", "cuda"] = "auto"
    out_dir: str = "runs"


TOP_LEVEL_KEYS = ("name", "seed", "device", "out_dir", "task", "model", "train", "log")


# ---------------------------------------------------------------------------------------------
# Loading and overriding


#: Largest spec file read (a real one is a few KB; PyYAML reads ~100 KB a second); larger ones are
#: refused before being read.
MAX_SPEC_BYTES = 256_000
#: How much aliases may add to a document, in nodes, once expanded (a "billion laughs" file of a few
#: hundred bytes expands to billions), and how deep a document may nest.
MAX_ALIAS_NODES = 10_000
MAX_DEPTH = 20
#: The only tags a spec may carry (implicitly or written out): YAML's core types, dates and merge keys.
ALLOWED_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp", "merge")
)
_SATURATE = 1 << 40


def load_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse a spec file; returns the mapping and the line of every dotted key.

    Spec files are data: at most ``MAX_SPEC_BYTES``, no tags beyond YAML's own types (no
    ``!!python/object``), and anchors and aliases only as long as expanding them adds at most
    ``MAX_ALIAS_NODES`` nodes, with no alias inside its own anchor. All of this is checked on the
    composed node graph, before any Python object is built.
    """
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path} is a directory, not a spec file")
    if not path.exists():
        raise SpecError(f"spec file not found: {path}")
    if not path.is_file():
        raise SpecError(f"spec {path} is not a regular file")
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"spec {path} is {size:,} bytes; a spec file may be at most {MAX_SPEC_BYTES:,}")
        with path.open("rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(f"spec {path} is over {MAX_SPEC_BYTES:,} bytes, the most a spec file may be")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SpecError(f"cannot read spec {path}: {reason}") from exc
    data, node = parse_yaml_text(text, f"{path}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"spec {path} must be a mapping of keys to values, not a {type(data).__name__}")
    lines: dict[str, int] = {}
    _reject_duplicate_keys(node, "")
    _collect_lines(node, "", lines)
    return data, lines


def parse_yaml_text(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """Safely parse one YAML document: (the data, its root node). ``where`` names the source in errors.

    Raises SpecError for malformed YAML, tags other than YAML's own types, aliases that expand too far
    or into themselves, and documents nested more than ``MAX_DEPTH`` deep.
    """
    depth = _flow_depth(text)
    if depth > MAX_DEPTH:  # before the scanner, whose cost grows with the nesting of every token
        raise SpecError(f"{where} is nested more than {MAX_DEPTH} levels deep ({depth:,} brackets)")
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters: a ReaderError for control characters
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_node_graph(node, where)
        return loader.construct_document(node), node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        context = getattr(exc, "context_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        if context is not None and mark is not None and context.line != mark.line:
            at += f" (in what starts on line {context.line + 1})"
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
        raise SpecError(one_line(f"malformed YAML in {where}{at}: {problem}")) from exc
    except RecursionError:
        raise SpecError(f"{where} is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a value YAML's constructors reject (2024-13-45)
        raise SpecError(one_line(f"malformed YAML in {where}: {clip(str(exc))}")) from exc
    finally:
        if loader is not None:
            loader.dispose()


def _flow_depth(text: str) -> int:
    """The deepest nesting of [ and { in ``text``, outside quotes and comments (a quick over-estimate
    of YAML's flow nesting, checked before parsing)."""
    deepest = depth = 0
    for line in text.splitlines():
        quote = ""
        for i, ch in enumerate(line):
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in "'\"" and (i == 0 or line[i - 1] in " \t[{,:"):
                quote = ch
            elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
                break
            elif ch in "[{":
                depth += 1
                deepest = max(deepest, depth)
            elif ch in "]}":
                depth = max(depth - 1, 0)
    return deepest


def _check_node_graph(root: yaml.Node, where: str) -> None:
    """Tags, nesting depth, alias cycles and alias expansion of a composed document, without recursion."""

    def fail(node: yaml.Node, message: str) -> SpecError:
        return SpecError(one_line(f"{where} line {node.start_mark.line + 1}: {message}"))

    expanded: dict[int, int] = {}  # node id -> nodes once every alias below it is expanded (saturating)
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                children += (key, value)
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if done:
            on_path.discard(id(node))
            expanded[id(node)] = min(1 + sum(expanded[id(c)] for c in children), _SATURATE)
            continue
        if id(node) in expanded:
            continue  # an alias of a node already checked
        if node.tag not in ALLOWED_TAGS:
            raise fail(node, f"tags are not allowed ({node.tag.replace('tag:yaml.org,2002:', '!!')})")
        if depth > MAX_DEPTH:
            raise fail(node, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, yaml.MappingNode):
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    raise fail(key, "a key must be a plain name, not a list or a mapping")
        on_path.add(id(node))
        stack.append((node, depth, True))
        for child in children:
            if id(child) in on_path:
                raise fail(child, "an alias refers to the anchor it is inside of (a recursive alias)")
            if id(child) not in expanded:
                stack.append((child, depth + 1, False))
    added = expanded[id(root)] - len(expanded)
    if added > MAX_ALIAS_NODES:
        shown = f"{added:,}" if added < _SATURATE else "billions of"
        raise SpecError(
            f"{where}: its aliases expand to {shown} more nodes, over the {MAX_ALIAS_NODES:,} allowed "
            "(an alias bomb?); write the values out or use fewer aliases"
        )


def _reject_duplicate_keys(node: yaml.Node | None, prefix: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise SpecError(one_line(f"{prefix}{key}: given twice (lines {seen[key]} and {line}); keep one"))
            seen[key] = line
            _reject_duplicate_keys(value_node, f"{prefix}{key}.")


def _collect_lines(node: yaml.Node | None, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            _collect_lines(value_node, key + ".", lines)


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", value parsed as YAML), so ``true``, ``3``, ``[1, 2]`` keep their types.

    The value is parsed as safely as a spec file (no tags, bounded aliases); text that is not valid
    YAML is taken as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise SpecError(one_line(f"override '{clip(text)}' is not of the form key.sub=value"))
    if not raw.strip():
        return key, ""
    try:
        value, _ = parse_yaml_text(raw, f"override {key}")
    except SpecError as exc:
        if "malformed YAML" in str(exc):
            return key, raw
        raise
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | list[tuple[str, Any]]) -> dict[str, Any]:
    """A copy of ``data`` with each dotted override set (keys are checked later, in validation)."""
    result = _deep_copy(data)
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        set_dotted(result, key, value)
    return result


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise SpecError(f"cannot set '{key}': '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        for sub, sub_value in value.items():  # a section merges into the section it overrides
            set_dotted(node[last], str(sub), sub_value)
    else:
        node[last] = value


def _merged(defaults: dict[str, Any], given: Any) -> Any:
    """``given`` (a spec section) over a task's ``defaults``, nested sections merged key by key; a
    section that is not a mapping is left for the validator to refuse."""
    if not isinstance(given, dict):
        return given if given is not None or not defaults else _deep_copy(defaults)
    merged = _deep_copy(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


# ---------------------------------------------------------------------------------------------
# Validation


def _section_name(data: dict[str, Any], section: str, validator: ConfigBuilder, default: str | None) -> str:
    block = data.get(section)
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise validator.error(section, f"must be a mapping, got {describe(block)}")
    name = block.get("name", default)
    if name is None or name == "":
        raise validator.error(f"{section}.name", "is required (a registered name)")
    if not isinstance(name, str):
        raise validator.error(f"{section}.name", f"must be a string, got {describe(name)}")
    return name


def resolve_spec(
    data: dict[str, Any],
    overrides: list[str] | list[tuple[str, Any]] = (),
    *,
    lines: dict[str, int] | None = None,
    source: str | None = None,
    default_name: str = "run",
) -> RunSpec:
    """Validate ``data`` (with ``overrides`` applied) into a RunSpec, loading the named model."""
    overrides = list(overrides)
    data = apply_overrides(data, overrides)
    overridden = {(parse_override(o)[0] if isinstance(o, str) else o[0]) for o in overrides}
    validator = ConfigBuilder(lines, source, overridden)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise validator.unknown("", str(key), list(TOP_LEVEL_KEYS))
    settings = validator.build(
        _RunSettings, {k: data[k] for k in ("name", "seed", "device", "out_dir") if k in data}, ""
    )
    if "name" not in data:
        settings.name = default_name
    if not settings.name or "/" in settings.name or settings.name in (".", "..") or len(settings.name) > 200:
        raise validator.error("name", f"must be a plain directory name, got {clip(repr(settings.name), 80)}")

    tasks = TASK_TYPES
    task_name = _section_name(data, "task", validator, "palindrome")
    if task_name not in tasks:
        raise validator.error("task.name", f"unknown task '{task_name}'. Available: {', '.join(tasks)}")
    task_type = tasks[task_name]
    task = validator.build(task_type.config_type, data.get("task"), "task.", skip=("name",))

    model_name = _section_name(data, "model", validator, None)
    model_def = get_model(model_name, task_type.kind)
    model_values = dict(data.get("model") or {})
    if "model.name" in overridden:
        # another model was asked for on the command line: the file's settings that belong to the
        # file's model only are left out; everything given on the command line is still checked
        fields = model_def.config_fields()
        model_values = {
            k: v for k, v in model_values.items() if k == "name" or k in fields or f"model.{k}" in overridden
        }
    model = validator.build(model_def.config, model_values, "model.", skip=("name",))
    train = validator.build(TrainConfig, _merged(task_type.train_defaults, data.get("train")), "train.")
    log = validator.build(LogConfig, data.get("log"), "log.")
    if not log.wandb_project.strip():
        raise validator.error("log.wandb_project", "must not be empty")
    return RunSpec(
        settings.name,
        settings.seed,
        settings.device,
        settings.out_dir,
        task,
        task_name,
        model,
        model_name,
        train,
        log,
        source,
    )


def load_spec(path: str | Path, overrides: list[str] | list[tuple[str, Any]] = ()) -> RunSpec:
    """Read, override and validate the spec file at ``path``."""
    data, lines = load_yaml(path)
    return resolve_spec(data, overrides, lines=lines, source=str(path), default_name=Path(path).stem)
