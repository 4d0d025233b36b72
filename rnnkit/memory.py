"""Memory budgets and estimates: refuse a run that cannot fit before anything big is allocated.

The budget is a number of bytes: what the user gave (``train.max_memory_gb``, ``gcn --max-memory-gb``)
or, by default, half of the memory available to this process (``MemAvailable``, lowered to what a
cgroup limit or ``ulimit -v`` leaves; on a GPU, the device's free memory). Estimates are deliberately
rough (within a factor of about two): they exist to refuse a batch of a billion sequences or a
million hidden units in a second, with the numbers, instead of swapping or being killed an hour later.

This module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import weakref
from collections.abc import Iterator
from typing import Any

from rnnkit.errors import UsageError

#: Bytes a trainable parameter costs while training: the weight, its gradient and two optimiser
#: moments (Adam's; SGD with momentum needs one, plain SGD none), all float32.
BYTES_PER_PARAMETER = 16


def available_memory_bytes() -> int:
    """Memory this process can still get: MemAvailable (else physical memory), lowered to what a
    cgroup v2 limit (``memory.max`` minus ``memory.current``) and ``RLIMIT_AS`` leave."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (OSError, ValueError):
            available = 1 << 34  # 16 GiB: a guess where nothing can be asked
    for limit in (_cgroup_headroom(), _address_space_headroom()):
        if limit is not None:
            available = min(available, limit)
    return max(int(available), 0)


def _cgroup_headroom() -> int | None:
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            line = next((line for line in f if line.startswith("0::")), None)
        if line is None:
            return None
        base = "/sys/fs/cgroup" + line.strip()[3:]
        with open(os.path.join(base, "memory.max"), encoding="ascii") as f:
            raw = f.read().strip()
        if raw == "max":
            return None
        with open(os.path.join(base, "memory.current"), encoding="ascii") as f:
            current = int(f.read().strip())
        return max(int(raw) - current, 0)
    except (OSError, ValueError, StopIteration):
        return None


def _address_space_headroom() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, ValueError, StopIteration):
        size = 0
    return max(soft - size, 0)


def free_device_memory(device: Any = "cpu") -> float:
    """Bytes free on ``device`` (a torch.device or its name): the GPU's free memory, else the host's."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        import torch

        return float(torch.cuda.mem_get_info(device)[0])
    return float(available_memory_bytes())


def memory_budget(max_gb: float | None = None, device: Any = "cpu") -> float:
    """The budget in bytes: ``max_gb`` GB when given and positive, else half the free memory of ``device``."""
    if max_gb:
        return float(max_gb) * 1e9
    return free_device_memory(device) / 2


def gb(nbytes: float) -> str:
    """Bytes as GB with one decimal and thousands separators: ``1,234.5 GB``."""
    return f"{nbytes / 1e9:,.1f} GB"


# ---------------------------------------------------------------------------------------------
# Training runs


def check_training_memory(
    model_def: Any, model_config: Any, task: Any, batch_size: int, budget_bytes: float | None
) -> int:
    """Estimate the memory a training run needs and raise UsageError when it is over ``budget_bytes``
    (None or 0: half the memory available to the task's device); returns the estimate in bytes.

    Estimate = parameters x 16 bytes (weights, gradients, two optimiser moments) + ``batch_size`` x
    (activations autograd keeps per sample + the sample itself). The parameter count comes from the
    model's formula (or a build on the meta device). A model whose parameters alone are over the budget
    is refused without going further. Per-sample activations come from one forward pass on a 2-sample
    batch under a saved-tensors hook that adds up every tensor kept for the backward pass (parameters
    and views of them excluded; nothing is actually kept): on the CPU for models of up to 4M
    parameters on moderate sequences (milliseconds), else on the meta device (nothing allocated, but
    slower: only for probe batches of up to 1,024 elements per sample). Where neither applies, or the
    probe fails (a forward pass that reads values cannot run on the meta device), only the parameters
    and the batch are counted. The task's random state and torch's global generator are left as they
    were.
    """
    budget = budget_bytes if budget_bytes else memory_budget(None, task.device)
    tail = f"over the memory budget of {gb(budget)} (train.max_memory_gb; default: half the available memory)"
    try:
        parameters = int(model_def.parameter_count(model_config, **task.dims))
    except Exception:  # noqa: BLE001 - an estimate must never be what fails a run
        parameters = 0
    parameter_bytes = parameters * BYTES_PER_PARAMETER
    if parameter_bytes > budget:
        raise UsageError(
            f"the model ({parameters:,} parameters) needs about {gb(parameter_bytes)} to train (weights, "
            f"gradients and optimiser state), {tail}; lower the model size (e.g. model.hidden_size)"
        )
    activation_per_sample, batch_per_sample = _probe_per_sample(model_def, model_config, task, parameters)
    activation_bytes = batch_size * activation_per_sample
    batch_bytes = batch_size * batch_per_sample
    need = parameter_bytes + activation_bytes + batch_bytes
    if need > budget:
        parts = f"parameters {gb(parameter_bytes)}, activations {gb(activation_bytes)}, batch {gb(batch_bytes)}"
        raise UsageError(
            f"train.batch_size={batch_size} needs about {gb(need)} ({parts}), {tail}; "
            "lower train.batch_size or the model size"
        )
    return int(need)


#: The probe runs for real on the CPU when the model has at most this many parameters and the probe
#: batch at most REAL_PROBE_MAX_ELEMENTS elements per sample, with elements x parameters at most
#: REAL_PROBE_MAX_PRODUCT (so that the forward pass's own tensors stay in the tens of MB).
REAL_PROBE_MAX_PARAMETERS = 1 << 22
REAL_PROBE_MAX_ELEMENTS = 1 << 17
REAL_PROBE_MAX_PRODUCT = 1 << 34
#: Otherwise on the meta device, when the probe batch has at most this many elements per sample (the
#: meta kernels of recurrent layers cost milliseconds per time step).
META_PROBE_MAX_ELEMENTS = 1024


def _probe_per_sample(model_def: Any, model_config: Any, task: Any, parameters: int) -> tuple[float, float]:
    """(activation bytes, batch bytes) per sample, from a 2-sample probe batch; (0, 0) if none can be made."""
    import torch

    try:
        with _task_rng_kept(task), torch.random.fork_rng(devices=[]):
            x, y = task.train_batch(2)
    except Exception:  # noqa: BLE001
        return 0.0, 0.0
    tensors = [t for t in (x, y) if isinstance(t, torch.Tensor)]
    if not tensors:
        return 0.0, 0.0
    samples = max(int(tensors[0].shape[0]) if tensors[0].dim() else 1, 1)
    batch_per_sample = sum(t.numel() * t.element_size() for t in tensors) / samples
    elements = sum(t.numel() for t in tensors) / samples
    devices = []
    if (
        0 < parameters <= REAL_PROBE_MAX_PARAMETERS
        and elements <= REAL_PROBE_MAX_ELEMENTS
        and elements * parameters <= REAL_PROBE_MAX_PRODUCT
    ):
        devices.append("cpu")
    if elements <= META_PROBE_MAX_ELEMENTS:
        devices.append("meta")
    for device in devices:
        try:
            with torch.random.fork_rng(devices=[]):  # building and dropout draw from the global generator
                saved = _saved_bytes(model_def, model_config, task, x, y, torch.device(device))
        except Exception:  # noqa: BLE001 - e.g. a forward pass that calls .item(): no probe on meta
            continue
        return saved / samples, batch_per_sample
    return 0.0, batch_per_sample


@contextlib.contextmanager
def _task_rng_kept(task: Any) -> Iterator[None]:
    state = task.state_dict()
    try:
        yield
    finally:
        task.load_state_dict(state)


def _saved_bytes(model_def: Any, model_config: Any, task: Any, x: Any, y: Any, device: Any) -> int:
    """Bytes of the tensors autograd would save for one forward pass of the task's loss on ``device``.

    The hook counts each saved tensor once and keeps none of them, so the pass itself holds only what
    the forward computation holds."""
    import torch

    with torch.device(device):
        model = model_def.build(model_config, **task.dims)
    model.to(device).train()
    params = {id(p) for p in model.parameters()}
    seen: dict[int, weakref.ref] = {}
    total = 0

    def pack(t: torch.Tensor) -> None:
        nonlocal total
        if id(t) in params or (t._base is not None and id(t._base) in params):
            return None
        ref = seen.get(id(t))
        if ref is None or ref() is not t:
            seen[id(t)] = weakref.ref(t)
            total += t.numel() * t.element_size()
        return None

    def move(t: Any) -> Any:
        return t.to(device) if isinstance(t, torch.Tensor) and t.device != device else t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):
        task.loss_and_correct(model, move(x), move(y))
    return total
