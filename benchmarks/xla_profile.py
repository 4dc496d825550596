"""Where a compiled XLA program spends its time: per-op (thunk) durations from a `jax.profiler`
trace, attributed to the model code through the HLO metadata, and grouped by kind of work.

    costs = profile(compiled, *args)               # runs `compiled(*args)` under the profiler
    print(format_top(costs, 25)); print(format_kinds(costs))

Durations are wall-clock intervals of each op, summed over threads and calls, so their total can
exceed the step time (ops run in parallel) and shares are what to compare. XLA:CPU reports one
event per op; other backends may report none, in which case the tables are empty.
"""
import collections
import dataclasses
import glob
import gzip
import json
import re
import shutil
import tempfile

import jax

_NOT_OPS = ("$", "end:", "Thunk", "Common", "Pjit", "Alloc", "Handle", "Parse", "Python", "Wait",
            "Threadpool", "Slinky")


@dataclasses.dataclass
class OpCosts:
    micros: collections.Counter   # op (HLO instruction) name -> microseconds per call
    source: dict                  # op name -> JAX op_name path (e.g. '.../model_26/proto/cv2/...')
    kind: dict                    # op name -> kind of work (see `_kind`)


def _computations(hlo: str) -> dict:
    comps, current = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if header and not line.startswith(" "):
            current = header.group(1)
            comps[current] = []
        elif current is not None:
            comps[current].append(line)
    return comps


def _kind(text: str, op_name: str) -> str:
    """conv-fwd / conv-input-grad / conv-weight-grad / matmul / transpose / reduce / ... of an op."""
    text = re.sub(r"metadata=\{[^}]*\}", "", text)
    if " convolution(" in text:
        window = re.search(r"window=\{size=(\d+)x(\d+)", text)
        if window and int(window.group(1)) * int(window.group(2)) > 49:
            return "conv weight-grad"
        return "conv input-grad" if "transpose(" in op_name else "conv forward"
    for pattern, kind in ((r" dot\(", "matmul"), (r" reduce-window\(", "reduce-window"),
                          (r" reduce\(", "reduce"), (r" (transpose|copy)\(", "transpose/copy"),
                          (r" (pad|slice|concatenate|dynamic-slice|dynamic-update-slice)\(", "pad/slice/concat"),
                          (r" (exponential|log|log-plus-one|tanh|erf|atan2|rsqrt|sqrt|power)\(",
                           "elementwise (transcendental)")):
        if re.search(pattern, text):
            return kind
    return "elementwise"


def attribute(hlo: str) -> tuple[dict, dict]:
    """-> (op name -> op_name path, op name -> kind) for every instruction of an HLO module.

    An op without metadata (e.g. a fusion XLA built for a weight gradient) takes its first
    operand's path, prefixed '<-'."""
    comps = _computations(hlo)
    source, operands, kind = {}, {}, {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ [\w\-]+\(([^)]*)\)", line)
        if not m:
            continue
        name = m.group(1)
        operands[name] = re.findall(r"%([\w.\-]+)", m.group(2))
        called = re.search(r"calls=%?([\w.\-]+)", line)
        body = "\n".join(comps.get(called.group(1), [])) if called else ""
        op = re.search(r'op_name="([^"]*)"', line) or re.search(r'op_name="([^"]*)"', body)
        if op:
            source[name] = op.group(1)
        kind[name] = body or line
    for name in list(operands):
        seen, current = 0, name
        while current not in source and operands.get(current) and seen < 5:
            current, seen = operands[current][0], seen + 1
        if name not in source and current in source:
            source[name] = "<-" + source[current]
    return source, {k: _kind(text, source.get(k, "")) for k, text in kind.items()}


def profile(compiled, *args, calls: int = 1) -> OpCosts:
    """Runs `compiled(*args)` `calls` times under `jax.profiler` -> per-op microseconds per call."""
    source, kind = attribute(compiled.as_text())
    directory = tempfile.mkdtemp()
    try:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(compiled(*args))
        traces = glob.glob(f"{directory}/**/*.trace.json.gz", recursive=True)
        events = json.load(gzip.open(traces[-1]))["traceEvents"] if traces else []
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    micros = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in kind and not e["name"].startswith(_NOT_OPS):
            micros[e["name"]] += e.get("dur", 0) / calls
    return OpCosts(micros, source, kind)


def _layer(path: str) -> str:
    """'.../jvp(LMSFA)/model_26/proto/cv2/conv/...' -> 'model_26/proto/cv2' (+ ' (bwd)')."""
    m = re.search(r"(model_\d+(?:/[a-z_]+\d*){0,2})", path)
    where = m.group(1) if m else ("loss" if "loss" in path or "cond" in path else "other")
    return where + (" (bwd)" if "transpose(" in path else "")


def format_top(costs: OpCosts, top: int = 25) -> str:
    """The `top` costliest ops: share of the total, ms, kind, model layer."""
    total = sum(costs.micros.values()) or 1
    lines = [f"{'share':>6} {'ms':>8}  {'kind':<28} where (layer or op path)"]
    for name, us in costs.micros.most_common(top):
        lines.append(f"{100 * us / total:5.1f}% {us / 1e3:8.1f}  {costs.kind.get(name, '?'):<28} "
                     f"{_layer(costs.source.get(name, ''))}")
    return "\n".join(lines)


def format_kinds(costs: OpCosts) -> str:
    """Shares of the total op time by kind of work."""
    total = sum(costs.micros.values()) or 1
    by_kind = collections.Counter()
    for name, us in costs.micros.items():
        by_kind[costs.kind.get(name, "?")] += us
    return "\n".join(f"{100 * us / total:5.1f}%  {kind}" for kind, us in by_kind.most_common())
