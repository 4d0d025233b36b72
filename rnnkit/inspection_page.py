"""The HTML page of an inspection (``rnnkit.inspection``): a passage coloured character by character by
one unit's state, with the units most correlated with each property of the text.

One self-contained file: inline CSS and script, no network (a Content-Security-Policy forbids any),
so it opens anywhere, offline. The data sits in a ``<script type="application/json">`` block with
``<``, ``>`` and ``&`` escaped, and the script puts the text in with ``textContent``, so no passage
can inject markup. Only the units listed (the top ones per state and property, and any asked for)
travel with the page, one signed byte per character each (base64), which keeps a 2,000-character
page of a two-layer LSTM near 290 kB.
"""

from __future__ import annotations

import base64
import html
import json
import math

import torch

from rnnkit.inspection import DEFAULT_TOP, Inspection, UnitCorrelation

#: What each state a model may show is, for the page (others are shown by their name).
STATE_ABOUT = {
    "cell": "tanh(c<sub>t</sub>): the LSTM's cell state squashed into [-1, 1]",
    "hidden": "h<sub>t</sub>: the hidden state, what the next layer and the read-out see",
    "input_gate": "i<sub>t</sub>: how much of the new candidate enters the cell (0 to 1)",
    "forget_gate": "f<sub>t</sub>: how much of the cell is kept from the step before (0 to 1)",
    "output_gate": "o<sub>t</sub>: how much of tanh(c<sub>t</sub>) is let out into h<sub>t</sub> (0 to 1)",
    "update_gate": "z<sub>t</sub>: how much of h<sub>t-1</sub> is kept (0 to 1)",
    "reset_gate": "r<sub>t</sub>: how much of h<sub>t-1</sub> enters the candidate (0 to 1)",
    "candidate": "n<sub>t</sub>: the GRU's candidate state (-1 to 1)",
}
PROPERTY_ABOUT = {
    "inside quotes": "1 from an opening quotation mark to the closing one",
    "position in line": "characters of the line so far, over the longest line",
    "inside a word": "1 on letters, digits and an apostrophe inside a word",
    "after a sentence end": "1 from . ! or ? through the quotes and spaces after it",
    "inside brackets": "1 from an opening bracket to the one that closes it",
}

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 62em; padding: 0 1em; color: #222; }
h1 { font-size: 1.35em; margin-bottom: .2em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.meta, .note { color: #555; font-size: .92em; margin: .3em 0; }
.controls { display: flex; flex-wrap: wrap; gap: .4em 1.4em; align-items: center; margin: 1em 0 .4em; }
select { font: inherit; }
#about { margin: .3em 0; }
.legend { display: inline-block; width: 12em; height: .9em; vertical-align: middle; border: 1px solid #bbb;
  background: linear-gradient(to right, rgb(77,77,255), #fff, rgb(255,77,77)); }
#passage { font: 14px/1.6 ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; word-break: break-all;
  border: 1px solid #ccc; padding: .8em; margin: .4em 0; max-height: 30em; overflow-y: auto; }
#passage span { cursor: default; }
#status { font: 13px ui-monospace, Menlo, Consolas, monospace; min-height: 1.3em; color: #333; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { padding: .2em .7em; border-bottom: 1px solid #e3e3e3; text-align: left; }
td.r { text-align: right; font-variant-numeric: tabular-nums; }
tr.unit { cursor: pointer; } tr.unit:hover { background: #f3f3f3; } tr.chosen { background: #ffe9b3; }
.bar { display: inline-block; height: .7em; vertical-align: middle; }
"""

SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById("inspection-data").textContent);
  const chars = Array.from(data.text);
  function decode(b64) {
    const s = atob(b64), out = new Float32Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = ((s.charCodeAt(i) << 24) >> 24) / 127;
    return out;
  }
  function label(u) { return "L" + (1 + Math.floor(u / data.units)) + "." + (u % data.units); }
  function colour(v) {
    const w = Math.round(255 * (1 - 0.7 * Math.min(1, Math.abs(v))));
    return v >= 0 ? "rgb(255," + w + "," + w + ")" : "rgb(" + w + "," + w + ",255)";
  }
  const passage = document.getElementById("passage");
  passage.textContent = "";
  const spans = chars.map(function (c, i) {
    const span = document.createElement("span");
    span.textContent = c;
    span.dataset.i = i;
    passage.appendChild(span);
    return span;
  });
  const props = {};
  data.properties.forEach(function (p) { props[p.name] = decode(p.values); });
  const stateSel = document.getElementById("state"), unitSel = document.getElementById("unit");
  const propSel = document.getElementById("prop"), about = document.getElementById("about");
  let values = null;
  function current() { return data.states[stateSel.selectedIndex]; }
  function fillUnits(unit) {
    const st = current();
    unitSel.textContent = "";
    st.order.forEach(function (u) {
      const opt = document.createElement("option");
      opt.value = u;
      opt.textContent = label(u) + (st.why[u] ? "  (" + st.why[u] + ")" : "");
      unitSel.appendChild(opt);
    });
    unitSel.value = String(unit !== undefined && st.units[unit] !== undefined ? unit : st.order[0]);
  }
  function draw() {
    const st = current(), u = unitSel.value;
    values = decode(st.units[u]);
    spans.forEach(function (span, i) { span.style.backgroundColor = colour(values[i]); });
    const p = props[propSel.value];
    spans.forEach(function (span, i) {
      span.style.boxShadow = p && p[i] > 0 ? "inset 0 -3px 0 rgba(0,0,0," + (0.15 + 0.6 * p[i]).toFixed(2) + ")" : "";
    });
    about.textContent = "";
    const name = document.createElement("b"), what = document.createElement("span");
    const unit = document.createElement("b");
    name.textContent = st.name;
    what.innerHTML = st.about ? " " + st.about + ", " : " ";  // the page's own text (STATE_ABOUT)
    unit.textContent = "unit " + label(+u);
    about.append(name, what, unit);
    document.querySelectorAll("table.top").forEach(function (t) { t.hidden = t.dataset.state !== st.name; });
    document.querySelectorAll("tr.unit").forEach(function (tr) {
      tr.classList.toggle("chosen", tr.dataset.state === st.name && tr.dataset.unit === u);
    });
  }
  function remember() {  // the choice in the address (#state=cell&unit=252&prop=...), to link to or reload
    const q = new URLSearchParams({state: current().name, unit: unitSel.value, prop: propSel.value});
    history.replaceState(null, "", "#" + q.toString());
  }
  stateSel.addEventListener("change", function () { fillUnits(+unitSel.value); draw(); remember(); });
  unitSel.addEventListener("change", function () { draw(); remember(); });
  propSel.addEventListener("change", function () { draw(); remember(); });
  document.querySelectorAll("tr.unit").forEach(function (tr) {
    tr.addEventListener("click", function () {
      stateSel.value = tr.dataset.state;
      fillUnits(+tr.dataset.unit);
      draw();
      remember();
    });
  });
  const status = document.getElementById("status");
  passage.addEventListener("mouseover", function (e) {
    const i = e.target.dataset ? e.target.dataset.i : undefined;
    if (i === undefined || !values) return;
    const c = chars[i] === "\\n" ? "\\\\n" : chars[i];
    let line = "character " + i + " '" + c + "': " + label(+unitSel.value) + " " + current().name + " = " +
      values[i].toFixed(2);
    if (props[propSel.value]) line += ", " + propSel.value + " = " + props[propSel.value][i].toFixed(2);
    status.textContent = line;
  });
  const asked = new URLSearchParams(location.hash.slice(1));
  if (data.states.some(function (st) { return st.name === asked.get("state"); })) stateSel.value = asked.get("state");
  if (props[asked.get("prop")]) propSel.value = asked.get("prop");
  fillUnits(asked.has("unit") ? +asked.get("unit") : undefined);
  draw();
  document.body.dataset.ready = "1";
})();
"""


def _bytes(values: torch.Tensor) -> str:
    """(chars,) values in [-1, 1] as signed bytes (value x 127), base64."""
    q = (values.clamp(-1, 1) * 127).round().to(torch.int8)  # (chars,)
    return base64.b64encode(q.numpy().tobytes()).decode("ascii")


def _json_for_script(data: object) -> str:
    """JSON that cannot end the script block it sits in (nor open a comment or an entity)."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _r(r: float) -> str:
    return "—" if math.isnan(r) else f"{r:+.3f}"


def shown_units(inspection: Inspection, top: int, extra: list[int]) -> dict[str, dict[int, str]]:
    """The units of each state the page carries, in the order its unit list shows them: ``extra`` (the
    units asked for), then the top ``top`` for each property, the most correlated first; each with why
    it is there."""
    shown: dict[str, dict[int, str]] = {}
    for state in inspection.states:
        units: dict[int, str] = {inspection.unit(state, unit).unit: "asked for" for unit in extra}
        found = [(u, prop) for prop in inspection.properties for u in inspection.top(state, prop, top)]
        for u, prop in sorted(found, key=lambda item: -abs(item[0].r)):
            units.setdefault(u.unit, f"{prop} r={u.r:+.2f}")
        if not units:  # nothing varies: show the first unit, uncoloured by any correlation
            units[0] = ""
        shown[state] = units
    return shown


def _tables(inspection: Inspection, top: int) -> str:
    parts = []
    for state in inspection.states:
        rows = []
        for prop in inspection.properties:
            found: list[UnitCorrelation] = inspection.top(state, prop, top)
            head = f'<td rowspan="{max(1, len(found))}">{html.escape(prop)}</td>'
            if not found:
                rows.append(f'<tr>{head}<td colspan="3" class="note">does not vary over this passage</td></tr>')
            for i, u in enumerate(found):
                width = round(60 * abs(u.r))
                colour = "#e33" if u.r > 0 else "#33e"
                rows.append(
                    f'<tr class="unit" data-state="{html.escape(state)}" data-unit="{u.unit}">'
                    f'{head if i == 0 else ""}<td>{u.label}</td><td class="r">{_r(u.r)}</td>'
                    f'<td><span class="bar" style="width:{width}px;background:{colour}"></span></td></tr>'
                )
        parts.append(
            f'<table class="top" data-state="{html.escape(state)}"'
            f"{'' if state == next(iter(inspection.states)) else ' hidden'}>"
            f'<caption class="note">{html.escape(state)}: the {top} units with the largest |r| per property</caption>'
            "<tr><th>property</th><th>unit</th><th>r</th><th></th></tr>" + "".join(rows) + "</table>"
        )
    return "\n".join(parts)


def render_page(
    inspection: Inspection, *, source: str = "", top: int = DEFAULT_TOP, units: list[int] | None = None
) -> str:
    """The whole page as a string. ``source`` says where the model came from (a run directory, "the
    shipped Christie model"); ``top`` units per state and property are listed and carried, and
    ``units`` (counted over all layers) too."""
    shown = shown_units(inspection, top, list(units or []))
    states = []
    for name, stacked in inspection.states.items():
        flat = stacked.flatten(1)  # (chars, layers * units)
        states.append(
            {
                "name": name,
                "about": STATE_ABOUT.get(name, ""),
                "order": list(shown[name]),
                "why": {str(u): why for u, why in shown[name].items()},
                "units": {str(u): _bytes(flat[:, u]) for u in shown[name]},
            }
        )
    data = {
        "text": inspection.text,
        "units": inspection.units,
        "states": states,
        "properties": [{"name": k, "values": _bytes(v)} for k, v in inspection.properties.items()],
    }
    passage = inspection.passage
    first = next(iter(inspection.states))
    layers = "1 layer" if inspection.layers == 1 else f"{inspection.layers} layers"
    model = html.escape(inspection.model or "the model")
    where = f" ({html.escape(source)})" if source else ""
    chars = len(inspection.text)
    place = (
        f"{html.escape(passage.source)}, characters {passage.offset:,} to {passage.offset + len(passage.text):,}"
        if passage.source
        else "the text given"
    )
    context = f"; the {len(passage.context):,} characters before it were fed first" if passage.context else ""
    dropped = (
        f"; left out, unknown to the model: {html.escape(' '.join(repr(c) for c in inspection.dropped))}"
        if inspection.dropped
        else ""
    )
    no_cell = (
        ""
        if "cell" in inspection.states
        else '<p class="note">This model has no cell state (a GRU keeps only its hidden state): the page '
        f"shows {html.escape(first)} first, and its gates.</p>"
    )
    state_options = "".join(f'<option value="{html.escape(k)}">{html.escape(k)}</option>' for k in inspection.states)
    prop_options = '<option value="">nothing</option>' + "".join(
        f'<option value="{html.escape(k)}">{html.escape(k)}</option>' for k in inspection.properties
    )
    definitions = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(PROPERTY_ABOUT.get(k, ''))}</li>" for k in inspection.properties
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
  content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>What {model}'s units respond to</title>
<style>{STYLE}</style>
</head>
<body>
<h1>What {model}'s units respond to</h1>
<p class="meta">Model {model}{where}: {layers} of {inspection.units} units; unit L2.37 is
unit 37 of layer 2. Passage: {place} ({chars:,} characters{context}{dropped}).</p>
{no_cell}
<div class="controls">
<label>State <select id="state">{state_options}</select></label>
<label>Unit <select id="unit"></select></label>
<label>Underline where <select id="prop">{prop_options}</select></label>
<span class="note">-1 <span class="legend"></span> +1 (gates: 0 to 1)</span>
</div>
<p id="about" class="note"></p>
<pre id="passage">{html.escape(inspection.text)}</pre>
<div id="status"></div>
<noscript><p class="note">Colouring the passage needs JavaScript; the tables below do not.</p></noscript>
<h2>Units most correlated with properties of the text</h2>
{_tables(inspection, top)}
<p class="note">r is Pearson's correlation over the {chars:,} characters of the passage between a unit's
value after reading a character and the property there (Karpathy, Johnson &amp; Fei-Fei 2015,
<i>Visualizing and Understanding Recurrent Networks</i>). Click a row to colour the passage by that
unit; the address keeps the choice (#state=cell&amp;unit=252&amp;prop=inside%20quotes), to link to. A
property that does not vary over the passage has no correlation.</p>
<ul class="note">{definitions}</ul>
<script type="application/json" id="inspection-data">{_json_for_script(data)}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""
