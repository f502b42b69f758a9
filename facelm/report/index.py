"""reports/index.html: one self-contained page linking every stage report, figure and metric.

Stage reports (``reports/NN_name.html``) are listed with the title of their notebook;
the headline figures (``reports/figures/*.png``) are embedded as base64; the metrics of
``metrics/*.json`` form one table, their meanings taken from the metrics registry
(:mod:`facelm.report.metrics`). No external CSS, JS or fonts, so it reads offline, and
nothing in it depends on the clock, so re-running on the same inputs writes the same bytes.

    facelm index          # (the DVC stage `index`)
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from facelm.paths import project_root
from facelm.report.metrics import METRICS, REGISTRY, meaning
from facelm.report.pages import CSS, stage_description, stage_failed

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
                 "Meaning": f'<td class="muted">{esc(meaning(key))}</td>'}
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


def _stage_reports(reports: Path) -> list[str]:
    esc = html.escape
    pages = sorted(reports.glob("[0-9][0-9]_*.html"))
    if not pages:
        return ['<p class="muted">No stage reports yet: run <code>dvc repro</code>.</p>']
    rows = ["<table><thead><tr><th>Stage</th><th>What it does</th></tr></thead><tbody>"]
    for page in pages:
        failed = '<span class="failed">failed</span> ' if stage_failed(page) else ""
        rows.append(f'<tr><td><a href="{esc(page.name)}">{esc(page.stem)}</a></td>'
                    f"<td>{failed}{esc(stage_description(page))}</td></tr>")
    return rows + ["</tbody></table>"]


def _headline(metrics: list[tuple[str, str, object]], reports: Path) -> list[str]:
    """The SPEC contract's keys that the metrics files hold, in the registry's order."""
    order = [m.key for m in METRICS if m.contract]
    rows = sorted((r for r in metrics if r[1] in order), key=lambda r: order.index(r[1]))
    if not rows:
        return ['<p class="muted">None yet (metrics/*.json).</p>']
    return _metrics_table(rows, reports, stage_first=False)


def _figures(root: Path, reports: Path) -> list[str]:
    figures = sorted((reports / "figures").glob("*.png"), key=_figure_order)
    if not figures:
        return ['<p class="muted">No figures yet (reports/figures/*.png).</p>']
    owner = _stage_of_outputs(root)
    return ['<div class="figures">', *(_figure_card(f, reports, owner) for f in figures), "</div>"]


def _all_metrics(metrics: list[tuple[str, str, object]], reports: Path) -> list[str]:
    if not metrics:
        return []
    unregistered = sorted({key for _, key, _ in metrics if key not in REGISTRY})
    note = (f'<p class="muted">Not in the metrics registry: {", ".join(unregistered)}</p>'
            if unregistered else "")
    return ["<h2>All metrics</h2>",
            f"<details><summary>{len(metrics)} values from {len({r[0] for r in metrics})} "
            "metrics files, by stage</summary>", note,
            *_metrics_table(metrics, reports, stage_first=True), "</details>"]


def render_index(root: Path) -> str:
    """The text of reports/index.html for the project at ``root``."""
    reports = root / "reports"
    metrics = _read_metrics(root)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>facelm · reports</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        "<h1>facelm · reports</h1>",
        '<p class="lead">A BEGAN face generator whose 64-d latent space is mapped to 49 facial '
        "landmarks by a small MLP (L-Gen): every random face comes with its own annotation. "
        "This page is rebuilt by <code>dvc repro</code> (stage <code>index</code>).</p>",
        _run_summary(root),
        "<h2>Stage reports</h2>", *_stage_reports(reports),
        "<h2>Headline metrics</h2>", *_headline(metrics, reports),
        "<h2>Figures</h2>", *_figures(root, reports),
        *_all_metrics(metrics, reports),
        '<h2>Training curves</h2><p class="muted">Interactive charts of the DVCLive '
        "logs: <code>facelm plots</code> writes "
        "<code>reports/plots/index.html</code> (vega inlined, works offline).</p>",
        "</body>", "</html>", "",
    ]
    return "\n".join(p for p in parts if p)


def build_index(root: str | Path | None = None) -> Path:
    """Write ``reports/index.html`` for the project at ``root`` (default: the project root).

    Returns its path. Works with whatever reports, figures and metrics exist (even none).
    """
    root = Path(root) if root is not None else project_root()
    if not root.is_dir():
        raise FileNotFoundError(f"root {root} is not a folder")
    from facelm.checkpoint import atomic_write

    text = render_index(root)
    return atomic_write(root / "reports" / "index.html",
                        lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _index_cmd(args) -> int:
    print(build_index(args.root))
    return 0


def add_parser(subparsers) -> None:
    """Add the ``index`` subcommand (what the DVC stage ``index`` runs) to facelm's CLI."""
    p = subparsers.add_parser("index", help="write reports/index.html (stage reports, figures, metrics)")
    p.add_argument("--root", default=None, help="project root (default: found from the cwd)")
    p.set_defaults(func=_index_cmd)
