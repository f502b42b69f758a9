"""Run one pipeline stage: validate params, execute its notebook with papermill, export HTML.

``dvc.yaml`` calls ``python -m facelm stage NAME`` for every stage, so each one checks the parameters
before any work, runs ``notebooks/NAME.ipynb`` with the ``python3`` kernel from the project
root, and leaves ``reports/NAME.ipynb`` and ``reports/NAME.html``.

A notebook that stops on a user-facing error (bad parameters, a missing input file, a
refused value: see :data:`USER_ERRORS`) raised by facelm itself becomes a one-line
:class:`StageError` (``facelm stage`` prints it and exits with status 2); the traceback stays
in the executed notebook and its HTML report. Any other error is a bug: papermill's
``PapermillExecutionError`` is raised as it is.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from facelm.config import load_params
from facelm.paths import project_root

TEMPLATES = Path(__file__).parent / "templates"
PACKAGE = Path(__file__).resolve().parents[1]  # the facelm package folder
# exception names (as the kernel reports them) whose facelm messages are meant for the user
USER_ERRORS = frozenset({"ParamsError", "FileNotFoundError", "NotADirectoryError", "ValueError",
                         "UnknownMetricError"})
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# a frame line of IPython's traceback ("File /x/y.py:12, in f()") or Python's ('File "/x/y.py", line 12')
_FRAME = re.compile(r'^\s*File "?(.+?\.py)"?(?::\d+|, line \d+)')


class StageError(RuntimeError):
    """A stage notebook stopped on a user-facing error; the message is one line (the CLI
    prints it and exits with status 2)."""


def export_html(notebook: Path, html: Path) -> None:
    """Convert an executed notebook to a self-contained HTML page (figures embedded as base64).

    The page loads nothing from the network, and stderr (progress bars, warnings) is left
    out of it; the executed notebook beside it keeps everything.
    """
    import nbformat
    from nbconvert import HTMLExporter

    from facelm.checkpoint import atomic_write

    exporter = HTMLExporter(template_name="facelm_report", extra_template_basedirs=[str(TEMPLATES)])
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    body, _ = exporter.from_notebook_node(nb)
    atomic_write(html, lambda tmp: Path(tmp).write_text(body, encoding="utf-8"))


def raising_file(traceback: list[str]) -> Path | None:
    """The source file of the innermost frame of a kernel (IPython) traceback, if any."""
    files = [m.group(1) for line in _ANSI.sub("", "\n".join(traceback)).splitlines()
             if (m := _FRAME.match(line))]
    return Path(files[-1]).expanduser() if files else None  # IPython writes ~ for the home folder


def user_error(ename: str, evalue: str, traceback: list[str]) -> str | None:
    """``"Name: message"`` when a notebook error is one facelm raised for the user, else None.

    User-facing means: a known exception type (:data:`USER_ERRORS`), a one-line message, and
    raised inside the facelm package (a ValueError from numpy's depths is a bug, not a
    message).
    """
    evalue = _ANSI.sub("", evalue or "").strip()
    if ename not in USER_ERRORS or not evalue or "\n" in evalue:
        return None
    source = raising_file(traceback)
    if source is None or not source.resolve().is_relative_to(PACKAGE):
        return None
    return f"{ename}: {evalue}"


def _threads(n: int) -> None:
    # the kernel inherits these; torch and OpenCV size their thread pools from them,
    # and oversubscribed cores make small convolutions many times slower
    if n:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(n)


def _kernel_manager(log: Path) -> type:
    """A jupyter KernelManager whose kernel process writes its own stderr to ``log``.

    What the cells print reaches the notebook through the kernel's messages either way; the
    process's stderr only carries ipykernel's own logging, and ipykernel can log a ZMQ
    traceback while it shuts down ("Socket operation on non-socket", a shutdown race), which
    would break a failed stage's one-line error. The file (one per stage run) keeps it.
    """
    from jupyter_client import AsyncKernelManager  # nbclient's default manager

    class _LoggedStderr(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
            with open(log, "wb") as f:  # the kernel keeps its own copy of the descriptor
                await super()._async_launch_kernel(kernel_cmd, **{"stderr": f, **kw})

    return _LoggedStderr

def run_stage(name: str, params_file: str = "params.yaml", root: Path | None = None,
              log_output: bool = True) -> Path:
    """Execute ``notebooks/{name}.ipynb`` into ``reports/`` and return the HTML report's path.

    Parameters are validated first, so a bad value stops the stage before any work. When
    the notebook fails, its partial report is still written (to show where), then the error
    is raised: :class:`StageError` (one line) for a user-facing facelm error, papermill's
    ``PapermillExecutionError`` for anything else.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    root = root or project_root()
    params = load_params(root / params_file)  # raises ParamsError with a one-line message
    _threads(params.threads)
    if name == "01_preprocess":  # missing CelebA files / models: one line, before a kernel starts
        from facelm.data.prepare import check_sources

        check_sources(params, root)
    source = root / "notebooks" / f"{name}.ipynb"
    if not source.is_file():
        known = sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        raise FileNotFoundError(f"no stage notebook {source}; stages: {', '.join(known)}")
    reports = root / "reports"
    reports.mkdir(exist_ok=True)  # papermill does not create the output folder
    executed, html = reports / f"{name}.ipynb", reports / f"{name}.html"
    from facelm.report.timing import format_actual, note_in_report, plan_stage

    plan, expected = plan_stage(name, params)  # measures the machine once (~3 s), then cached
    print(f"stage {name}: {plan}", flush=True)
    start = time.time()
    try:
        papermill.execute_notebook(
            str(source), str(executed), parameters={"params_file": params_file},
            kernel_name="python3", cwd=str(root), progress_bar=False, log_output=log_output,
            # the kernel's start-up notice about unencrypted local TCP is noise on every stage
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
            kernel_manager_class=_kernel_manager(reports / f"{name}.kernel.log"),
        )
    except PapermillExecutionError as err:
        message = user_error(err.ename, err.evalue, err.traceback)
        if message is None:
            raise
        raise StageError(f"stage {name}: {message} (traceback in {executed.relative_to(root)})") from None
    finally:
        if executed.is_file():
            note_in_report(executed, [plan, format_actual(time.time() - start, expected)])
            export_html(executed, html)
    print(f"stage {name}: {format_actual(time.time() - start, expected)}, report {html.relative_to(root)}")
    return html
