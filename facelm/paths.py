"""One project-root helper so notebooks, tests and the CLI resolve paths the same way."""
from __future__ import annotations

from pathlib import Path


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``dvc.yaml`` and ``params.yaml``.

    papermill, nbval and JupyterLab start kernels in different folders; every path in
    facelm is resolved from this root instead of the working directory.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
            return folder
    raise FileNotFoundError(
        f"no facelm project (a folder with dvc.yaml and params.yaml) at or above {here}"
    )
