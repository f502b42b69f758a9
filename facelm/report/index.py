"""reports/index.html: one self-contained page linking every stage report, figure and metric.

Stage reports (``reports/NN_name.html``) are listed with the title of their notebook;
the headline figures (``reports/figures/*.png``) are embedded as base64; the metrics of
``metrics/*.json`` form one table. No external CSS, JS or fonts, so it reads offline, and
nothing in it depends on the clock, so re-running on the same inputs writes the same bytes.

    python -m facelm index          # (the DVC stage `index`)
    python -m facelm.report.index [ROOT]
"""
from __future__ import annotations

import base64
import html
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

from facelm.paths import project_root

# Paper figures first, in the paper's order; other PNGs follow by name.
FIGURES = {
    "fig3_random_faces": "Fig. 3 · random BEGAN faces",
    "fig4_inversion": "Fig. 4 · faces and their inversions G(z_r)",
    "fig5_annotated": "Fig. 5 · data-set faces with their 49 landmarks",
    "fig8_random_landmarks": "Fig. 8 · random z: generated faces with L-Gen landmarks",
    "fig9_interpolation": "Fig. 9 · a face, its mirror image and the path between their latents",
    "lgen_ced": "L-Gen · cumulative error distribution (NME)",
    "detector_ced": "Landmark detector · cumulative error distribution (NME)",
    "consistency_ced": "Consistency · L-Gen(z) against the detector run on G(z)",
    "augmentation_nme_vs_k": "Augmentation · detector NME against K real faces, with and without synthetic ones",
}
# SPEC "Metrics contract": what each key means (other keys are shown without a meaning).
METRICS = {
    "began_M_final": "BEGAN convergence measure M, mean over the last 1 % of steps",
    "began_steps": "BEGAN optimiser steps taken",
    "inversion_l1_train": "inversion: mean per-pixel L1 of G(z_r) vs x, training faces",
    "inversion_l1_heldout": "inversion: the same on held-out faces the GAN never saw",
    "lgen_params": "L-Gen trainable parameters (53,986 for 49 points)",
    "lgen_nme_train": "L-Gen NME vs the annotations, training pairs",
    "lgen_nme_heldout": "L-Gen NME on held-out faces (z from inversion)",
    "interp_smoothness": "Fig. 9 path: max / mean landmark step between neighbours (1 = even)",
    "detector_nme_heldout": "landmark detector's own NME on held-out faces",
    "consistency_nme": "NME between L-Gen(z) and the detector run on G(z)",
    "aug_nme_real_only": "detector trained on real faces only: NME on a real test set",
    "aug_nme_real_plus_synth": "the same detector trained on real + latent-augmented faces",
}
_STAGE_PREFIX = re.compile(r"^\s*\d+\s*[·.:\-–—]\s*")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 72rem; padding: 1.5rem; color: #1f2328; background: #fff;
       line-height: 1.45; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .6rem; padding-bottom: .2rem; border-bottom: 1px solid #d1d9e0; }
p.lead { color: #59636e; margin: 0 0 .6rem; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e6eaef; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88em;
       background: #f6f8fa; padding: .05rem .25rem; border-radius: 3px; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
.muted { color: #59636e; }
.failed { color: #fff; background: #cf222e; border-radius: 3px; padding: 0 .35rem; font-size: .8rem;
          font-weight: 600; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(30rem, 1fr)); gap: 1.2rem; }
figure { margin: 0; border: 1px solid #d1d9e0; border-radius: 6px; padding: .6rem; background: #fff; }
figure.wide { grid-column: 1 / -1; }
figure img { width: 100%; height: auto; display: block; image-rendering: auto; }
figcaption { font-size: .9rem; margin-top: .4rem; }
details > summary { cursor: pointer; color: #59636e; margin-bottom: .5rem; }
"""


class _ReportText(HTMLParser):
    """The first ``<h1>`` of an nbconvert page (its anchor ``¶`` dropped) and its ``<title>``."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title, self.h1 = "", ""
        self._in = None  # "title" | "h1" | None
        self._skip = 0   # depth inside <a class="anchor-link"> within the h1

    def handle_starttag(self, tag, attrs):
        if tag == "title" and not self.title:
            self._in = "title"
        elif tag == "h1" and not self.h1:
            self._in = "h1"
        elif self._in == "h1" and tag == "a" and "anchor-link" in (dict(attrs).get("class") or ""):
            self._skip += 1

    def handle_endtag(self, tag):
        if self._in == "h1" and tag == "a" and self._skip:
            self._skip -= 1
        elif tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in == "h1" and not self._skip:
            self.h1 += data


def stage_description(report: Path) -> str:
    """A one-line description of a stage report: its first heading without the ``NN ·`` prefix."""
    parser = _ReportText()
    text = report.read_text(encoding="utf-8", errors="replace")
    # the heading sits after nbconvert's inline CSS; stop parsing once it is found
    for start in range(0, len(text), 200_000):
        parser.feed(text[start:start + 200_000])
        if parser.h1:
            break
    line = " ".join((parser.h1 or parser.title or report.stem).split()).rstrip("¶ ")
    return _STAGE_PREFIX.sub("", line) or report.stem


def stage_failed(report: Path) -> bool:
    """Whether papermill stopped this report's notebook on an error (it still writes the page)."""
    return "papermill-error-cell" in report.read_text(encoding="utf-8", errors="replace")


def _stage_of_outputs(root: Path) -> dict[str, str]:
    """Map each output path declared in dvc.yaml to the stage that writes it."""
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.is_file():
        return {}
    import yaml

    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    owner = {}
    for name, stage in stages.items():
        for entry in (stage.get("outs") or []) + (stage.get("metrics") or []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            owner[str(path)] = name
    return owner


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _format(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; (0, 0) when it is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return 0, 0
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _figure_order(path: Path) -> tuple:
    names = list(FIGURES)
    return (names.index(path.stem) if path.stem in names else len(names), path.name)


def _run_summary(root: Path) -> str:
    """Top-level scalar parameters (dataset, image size, seed) so a reader knows which run this is."""
    params = root / "params.yaml"
    if not params.is_file():
        return ""
    import yaml

    data = yaml.safe_load(params.read_text()) or {}
    items = [f"<code>{html.escape(str(k))}: {html.escape(str(v))}</code>"
             for k, v in data.items() if not isinstance(v, (dict, list))]
    return f'<p class="muted">Parameters: {" ".join(items)}</p>' if items else ""


def _stage_link(reports: Path, stage: str) -> str:
    esc = html.escape
    if (reports / f"{stage}.html").is_file():
        return f'<a href="{esc(stage)}.html">{esc(stage)}</a>'
    return esc(stage)


def _read_metrics(root: Path) -> list[tuple[str, str, object]]:
    """``(stage, key, value)`` for every value in ``metrics/*.json`` (nested dicts flattened)."""
    rows = []
    for path in sorted((root / "metrics").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            rows.append((path.stem, "(unreadable)", str(err)))
            continue
        flat = _flatten(data) if isinstance(data, dict) else {"value": data}
        rows += [(path.stem, key, value) for key, value in flat.items()]
    return rows


def _metrics_table(rows, reports: Path, stage_first: bool) -> list[str]:
    esc = html.escape
    head = ["Stage", "Metric", "Value", "Meaning"] if stage_first else ["Metric", "Value", "Meaning", "Stage"]
    out = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for stage, key, value in rows:
        cells = {"Stage": f"<td>{_stage_link(reports, stage)}</td>",
                 "Metric": f"<td><code>{esc(key)}</code></td>",
                 "Value": f'<td class="num">{esc(_format(value))}</td>',
                 "Meaning": f'<td class="muted">{esc(METRICS.get(key, ""))}</td>'}
        out.append("<tr>" + "".join(cells[h] for h in head) + "</tr>")
    return out + ["</tbody></table>"]


def _figure_card(fig: Path, reports: Path, owner: dict[str, str]) -> str:
    esc = html.escape
    caption = FIGURES.get(fig.stem, fig.stem.replace("_", " "))
    stage = owner.get(f"reports/figures/{fig.name}")
    source = f" · from {_stage_link(reports, stage)}" if stage else ""
    data = fig.read_bytes()
    width, height = _png_size(data)
    wide = ' class="wide"' if height and width > 2.5 * height else ""  # strips get a whole row
    return (f'<figure id="{esc(fig.stem)}"{wide}><a href="figures/{esc(fig.name)}">'
            f'<img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" alt="{esc(caption)}"></a>'
            f"<figcaption>{esc(caption)}{source} "
            f'<span class="muted">(<code>figures/{esc(fig.name)}</code>)</span></figcaption></figure>')


def render_index(root: Path) -> str:
    """The text of reports/index.html for the project at ``root``."""
    reports, esc = root / "reports", html.escape
    stage_reports = sorted(reports.glob("[0-9][0-9]_*.html"))
    figures = sorted((reports / "figures").glob("*.png"), key=_figure_order)
    metrics = _read_metrics(root)
    order = list(METRICS)
    headline = sorted((r for r in metrics if r[1] in METRICS), key=lambda r: order.index(r[1]))

    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>facelm · reports</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        "<h1>facelm · reports</h1>",
        '<p class="lead">A BEGAN face generator whose 64-d latent space is mapped to 49 facial '
        "landmarks by a small MLP (L-Gen): every random face comes with its own annotation. "
        "This page is rebuilt by <code>dvc repro</code> (stage <code>index</code>).</p>",
        _run_summary(root),
        "<h2>Stage reports</h2>",
    ]
    if stage_reports:
        parts.append("<table><thead><tr><th>Stage</th><th>What it does</th></tr></thead><tbody>")
        for page in stage_reports:
            failed = '<span class="failed">failed</span> ' if stage_failed(page) else ""
            parts.append(f'<tr><td><a href="{esc(page.name)}">{esc(page.stem)}</a></td>'
                         f"<td>{failed}{esc(stage_description(page))}</td></tr>")
        parts.append("</tbody></table>")
    else:
        parts.append('<p class="muted">No stage reports yet: run <code>dvc repro</code>.</p>')

    parts.append("<h2>Headline metrics</h2>")
    if headline:
        parts += _metrics_table(headline, reports, stage_first=False)
    else:
        parts.append('<p class="muted">None yet (metrics/*.json).</p>')

    parts.append("<h2>Figures</h2>")
    if figures:
        owner = _stage_of_outputs(root)
        parts += ['<div class="figures">', *(_figure_card(f, reports, owner) for f in figures), "</div>"]
    else:
        parts.append('<p class="muted">No figures yet (reports/figures/*.png).</p>')

    if metrics:
        parts += ["<h2>All metrics</h2>",
                  f"<details><summary>{len(metrics)} values from {len({r[0] for r in metrics})} "
                  "metrics files, by stage</summary>",
                  *_metrics_table(metrics, reports, stage_first=True), "</details>"]

    parts.append('<h2>Training curves</h2><p class="muted">Interactive charts of the DVCLive '
                 "logs: <code>python -m facelm plots</code> writes "
                 "<code>reports/plots/index.html</code> (vega inlined, works offline).</p>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(p for p in parts if p)


def build_index(root: str | Path | None = None) -> Path:
    """Write ``reports/index.html`` for the project at ``root`` (default: the project root).

    Returns its path. Works with whatever reports, figures and metrics exist (even none).
    """
    root = Path(root) if root is not None else project_root()
    if not root.is_dir():
        raise FileNotFoundError(f"root {root} is not a folder")
    out = root / "reports" / "index.html"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_index(root), encoding="utf-8")
    tmp.replace(out)
    return out


def _index_cmd(args) -> int:
    print(build_index(args.root))
    return 0


def add_parser(subparsers) -> None:
    """Add the ``index`` subcommand (what the DVC stage ``index`` runs) to facelm's CLI."""
    p = subparsers.add_parser("index", help="write reports/index.html (stage reports, figures, metrics)")
    p.add_argument("--root", default=None, help="project root (default: found from the cwd)")
    p.set_defaults(func=_index_cmd)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m facelm.report.index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", default=None, help="project root (default: from the cwd)")
    try:
        print(build_index(parser.parse_args(argv).root))
    except FileNotFoundError as err:
        print(f"facelm.report.index: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
