"""`rnnkit inspect [RUN] --text FILE`: an HTML page of what a character model's units respond to."""

from __future__ import annotations

from pathlib import Path

import typer

from rnnkit.cli.common import examples_epilog, handle_errors, out_console, print_json, print_table, warn
from rnnkit.errors import UsageError

PASSAGE = "Passage"
PAGE = "Page"
INSPECT_EXAMPLES = examples_epilog(
    "rnnkit inspect --text christie_styles.txt --offset 297379 --out styles.html",
    "rnnkit inspect runs/christie --text my_book.txt --chars 5000 --unit 145",
    "rnnkit inspect --text christie_styles.txt --offset 297379 --json",
)
#: What the shipped model is called where a run directory would be named.
SHIPPED = "the shipped Christie model"


@handle_errors
def inspect(
    run: Path = typer.Argument(
        None,
        help="A run directory or weights file of a character model (default: the Christie model shipped with rnnkit).",
        show_default=False,
    ),
    text: Path = typer.Option(
        ...,
        "--text",
        help="The UTF-8 text file the passage is read from.",
        show_default=False,
        rich_help_panel=PASSAGE,
    ),
    chars: int = typer.Option(
        2000, "--chars", help="Characters of the passage (10 to 20,000).", rich_help_panel=PASSAGE
    ),
    offset: int = typer.Option(
        0,
        "--offset",
        help="Characters of the file before the passage; up to 500 of them are fed to the model first.",
        rich_help_panel=PASSAGE,
    ),
    drop_unknown: bool = typer.Option(
        False, "--drop-unknown", help="Leave out characters the model does not know.", rich_help_panel=PASSAGE
    ),
    out: Path = typer.Option(Path("inspect.html"), "--out", "-o", help="The HTML page to write.", rich_help_panel=PAGE),
    top: int = typer.Option(5, "--top", help="Units listed per state and property (1 to 20).", rich_help_panel=PAGE),
    units: list[int] = typer.Option(
        None,
        "--unit",
        metavar="N",
        help="A unit to carry in the page besides the top ones, counted over all layers (repeatable).",
        show_default=False,
        rich_help_panel=PAGE,
    ),
    as_json: bool = typer.Option(
        False, "--json", help="The top units of every state and property as JSON on stdout instead of the table."
    ),
) -> None:
    """Colour a passage by a unit's state (an LSTM's cell tanh(c_t), its gates; a GRU's hidden state) in
    an HTML page, and list the units most correlated with the text: inside quotes, position in the
    line, inside a word, after a sentence end, inside brackets (Karpathy, Johnson & Fei-Fei 2015)."""
    from rnnkit.checkpoint import atomic_write_text
    from rnnkit.inspection import MAX_TOP, inspect_text, read_passage
    from rnnkit.inspection_page import render_page
    from rnnkit.language_model import load_language_model

    if not 1 <= top <= MAX_TOP:
        raise UsageError(f"--top must be between 1 and {MAX_TOP}, got {top}")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; name the page to write, e.g. {out / 'inspect.html'}")
    passage = read_passage(text, chars=chars, offset=offset)
    model, vocab, meta = load_language_model(run)
    name = str(meta.get("model", "?"))
    inspection = inspect_text(model, vocab, passage, name=name, drop_unknown=drop_unknown)
    if inspection.dropped:
        warn(f"left out characters the model does not know: {', '.join(repr(c) for c in inspection.dropped)}")
    source = SHIPPED if run is None else str(run)
    page = render_page(inspection, source=source, top=top, units=list(units or []))
    atomic_write_text(out, page)
    state = next(iter(inspection.states))
    if as_json:
        print_json(
            {
                "page": str(out),
                "model": name,
                "checkpoint": source,
                "text": str(text),
                "offset": passage.offset,
                "chars": len(inspection.text),
                "layers": inspection.layers,
                "units_per_layer": inspection.units,
                "states": list(inspection.states),
                "top": {
                    key: {
                        prop: [
                            {"unit": u.unit, "label": u.label, "layer": u.layer, "index": u.index, "r": u.r}
                            for u in inspection.top(key, prop, top)
                        ]
                        for prop in inspection.properties
                    }
                    for key in inspection.states
                },
            }
        )
        return
    from rich.table import Table

    table = Table(
        title=f"{name}: the {state} units most correlated with the text ({len(inspection.text):,} characters)",
        caption="L2.37: unit 37 of layer 2; the page has every state",
    )
    table.add_column("property", no_wrap=True)
    table.add_column("units (Pearson r)")
    for prop in inspection.properties:
        found = inspection.top(state, prop, top)
        table.add_row(prop, ", ".join(f"{u.label} {u.r:+.2f}" for u in found) or "does not vary in the passage")
    print_table(table)
    out_console.print(f"page: {out}", markup=False)
