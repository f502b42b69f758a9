"""Run one pipeline stage: validate params, execute its notebook with papermill, export HTML.

``dvc.yaml`` calls ``python -m facelm stage NAME`` for every stage, so each one checks the
parameters before any work, runs ``notebooks/NAME.ipynb`` with the ``python3`` kernel from
the project root, and leaves ``reports/NAME.ipynb`` and ``reports/NAME.html``.
"""
from __future__ import annotations

import time
from pathlib import Path

from facelm.config import load_params
from facelm.paths import project_root


TEMPLATES = Path(__file__).parent / "templates"


def export_html(notebook: Path, html: Path) -> None:
    """Convert an executed notebook to a self-contained HTML page (figures embedded as base64).

    The page loads nothing from the network, and stderr (progress bars, warnings) is left
    out of it; the executed notebook beside it keeps everything.
    """
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="facelm_report", extra_template_basedirs=[str(TEMPLATES)])
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    body, _ = exporter.from_notebook_node(nb)
    tmp = html.with_name(html.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(html)


def run_stage(name: str, params_file: str = "params.yaml", root: Path | None = None,
              log_output: bool = True) -> Path:
    """Execute ``notebooks/{name}.ipynb`` into ``reports/`` and return the HTML report's path.

    Parameters are validated first, so a bad value stops the stage before any work. When
    the notebook fails, its partial report is still written (to show where), then the
    error is raised.
    """
    import papermill

    import os

    root = root or project_root()
    params = load_params(root / params_file)  # raises ParamsError with a one-line message
    if params.threads:
        # the kernel inherits these; torch and OpenCV size their thread pools from them,
        # and oversubscribed cores make small convolutions many times slower
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(params.threads)
    source = root / "notebooks" / f"{name}.ipynb"
    if not source.is_file():
        known = sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        raise FileNotFoundError(f"no stage notebook {source}; stages: {', '.join(known)}")
    reports = root / "reports"
    reports.mkdir(exist_ok=True)  # papermill does not create the output folder
    executed, html = reports / f"{name}.ipynb", reports / f"{name}.html"
    start = time.time()
    try:
        papermill.execute_notebook(
            str(source), str(executed), parameters={"params_file": params_file},
            kernel_name="python3", cwd=str(root), progress_bar=False, log_output=log_output,
        )
    finally:
        if executed.is_file():
            export_html(executed, html)
    print(f"stage {name}: {time.time() - start:.1f} s, report {html.relative_to(root)}")
    return html
