"""Offline ``dvc plots show``: an HTML template with vega, vega-lite and vega-embed inlined.

dvc-render's default page loads the three libraries from a CDN, so without internet its
charts stay blank. The libraries come from the npm registry once (``npm ci`` in
``tools/vega``, versions pinned by its package.json and lock file); this module inlines
their minified UMD builds into ``tools/vega/offline_template.html`` and passes it to
``dvc plots show --html-template``.

    facelm plots-template   # write the template (installs the libraries when missing)
    facelm plots            # dvc plots show with it; prints reports/plots/index.html
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from facelm.paths import project_root

VEGA_DIR = Path("tools") / "vega"
TEMPLATE = VEGA_DIR / "offline_template.html"
PLOTS_DIR = Path("reports") / "plots"
LIBRARIES = (  # load order matters: vega-lite and vega-embed expect the globals before them
    "vega/build/vega.min.js",
    "vega-lite/build/vega-lite.min.js",
    "vega-embed/build/vega-embed.min.js",
)
# dvc-render fills these by plain str.replace, in the whole template (scripts included)
_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{refresh_tag}
<title>facelm · DVC plots</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
         margin: 1.5rem; color: #1f2328; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
  p.note { color: #59636e; margin: 0 0 1rem; font-size: .9rem; }
  table { border-spacing: 15px; }
  .vega-embed { margin: .5rem 0; }
  .facelm-plot-error { color: #b42318; font-family: monospace; white-space: pre-wrap; }
</style>
@@LIBRARIES@@
<script>
// Every chart div calls vegaEmbed(...): give it offline-friendly defaults (SVG, no
// "open in editor" link, which needs the internet) and show failures in the page.
(function () {
  var embed = window.vegaEmbed;
  function offlineEmbed(el, spec, opt) {
    var options = Object.assign({renderer: "svg",
      actions: {export: true, source: true, compiled: false, editor: false}}, opt || {});
    return embed(el, spec, options).catch(function (err) {
      var node = typeof el === "string" ? document.querySelector(el) : el;
      if (node) {
        var msg = document.createElement("pre");
        msg.className = "facelm-plot-error";
        msg.textContent = "vega: " + err;
        node.appendChild(msg);
      }
      throw err;
    });
  }
  window.vegaEmbed = Object.assign(offlineEmbed, embed);
})();
</script>
</head>
<body>
<h1>facelm · DVC plots</h1>
<p class="note">Rendered offline: @@VERSIONS@@ are inlined in this page.</p>
{plot_divs}
</body>
</html>
"""


def _run_npm(vega_dir: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(
            f"npm not found: install Node.js/npm, or run `npm ci` in {vega_dir} on a machine "
            "that has it and copy node_modules/ over"
        )
    # ci installs exactly the lock file's versions; install is the fallback without a lock
    verb = "ci" if (vega_dir / "package-lock.json").is_file() else "install"
    cmd = [npm, verb, "--prefix", str(vega_dir), "--no-audit", "--no-fund", "--ignore-scripts"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def install_vega(root: str | Path | None = None) -> Path:
    """Make sure ``tools/vega/node_modules`` holds the three libraries (``npm ci`` when missing).

    Returns the ``node_modules`` folder.
    """
    vega_dir = Path(root or project_root()) / VEGA_DIR
    if not (vega_dir / "package.json").is_file():
        raise FileNotFoundError(f"{vega_dir / 'package.json'} not found: it pins the vega versions")
    modules = vega_dir / "node_modules"
    if not all((modules / lib).is_file() for lib in LIBRARIES):
        _run_npm(vega_dir)
    missing = [lib for lib in LIBRARIES if not (modules / lib).is_file()]
    if missing:
        raise FileNotFoundError(f"npm finished but {', '.join(missing)} is missing under {modules}")
    return modules


def _inline_script(source: str, name: str) -> str:
    """One ``<script>`` element holding ``source``, safe to sit inside the HTML page."""
    for placeholder in _PLACEHOLDERS:
        if placeholder in source:  # dvc-render would substitute it inside the library
            raise ValueError(f"{name} contains the dvc-render placeholder {placeholder}")
    # drop the source-map comment (its .map file is not shipped) and keep the HTML parser
    # from ending the element early on a literal "</script" inside the code
    lines = [ln for ln in source.splitlines() if not ln.startswith("//# sourceMappingURL=")]
    body = "\n".join(lines).replace("</script", "<\\/script").replace("<!--", "<\\!--")
    return f"<script>/* {name} */\n{body}\n</script>"


def _version(modules: Path, package: str) -> str:
    import json

    meta = json.loads((modules / package / "package.json").read_text(encoding="utf-8"))
    return f"{package} {meta['version']}"


def render_template(modules: str | Path) -> str:
    """The template's text, with the three libraries under ``modules`` inlined."""
    modules = Path(modules)
    scripts = "\n".join(
        _inline_script((modules / lib).read_text(encoding="utf-8"), lib) for lib in LIBRARIES
    )
    versions = ", ".join(_version(modules, lib.split("/")[0]) for lib in LIBRARIES)
    # the libraries go in last so no replace() below can touch their text
    return _PAGE.replace("@@VERSIONS@@", versions).replace("@@LIBRARIES@@", scripts)


def ensure_vega_template(root: str | Path | None = None, output: str | Path | None = None,
                         force: bool = False) -> Path:
    """Write the offline template (``tools/vega/offline_template.html`` by default) and return its path.

    Installs the libraries from the npm registry first when ``node_modules`` lacks them;
    an existing template newer than the libraries is kept unless ``force``.
    """
    root = Path(root or project_root())
    modules = install_vega(root)
    out = Path(output) if output else root / TEMPLATE
    # the page text lives in this module too: a newer facelm rewrites the template
    sources = [modules / lib for lib in LIBRARIES] + [root / VEGA_DIR / "package.json",
                                                      Path(__file__)]
    if (not force and out.is_file()
            and out.stat().st_mtime >= max(p.stat().st_mtime for p in sources)):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_template(modules), encoding="utf-8")
    tmp.replace(out)
    return out


def show_plots(root: str | Path | None = None, out: str | Path | None = None,
               template: str | Path | None = None) -> Path:
    """Run ``dvc plots show`` with the offline template; return the written ``index.html``.

    ``out`` is the output folder (default ``reports/plots``, ignored by git like all of
    ``reports/``); image plots are copied next to it by dvc.
    """
    root = Path(root or project_root())
    template = Path(template) if template else ensure_vega_template(root)
    if not template.is_file():
        raise FileNotFoundError(f"--html-template {template} does not exist")
    out = Path(out) if out else root / PLOTS_DIR
    dvc = shutil.which("dvc")
    if dvc is None:
        raise FileNotFoundError("the `dvc` command is not on PATH")
    cmd = [dvc, "plots", "show", "--html-template", str(template.resolve()), "-o", str(out)]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    page = out if out.is_absolute() else root / out
    page = page / "index.html"
    if proc.returncode != 0 or not page.is_file():
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return page


def _one_line_errors(command):
    """A CLI handler that reports npm's or dvc's failure (RuntimeError) without a traceback;
    the CLI itself does so for FileNotFoundError."""
    def handler(args) -> int:
        try:
            return command(args)
        except RuntimeError as err:
            print(f"facelm: error: {err}", file=sys.stderr)
            return 2
    return handler


@_one_line_errors
def _template_cmd(args) -> int:
    print(ensure_vega_template(force=args.force))
    return 0


@_one_line_errors
def _plots_cmd(args) -> int:
    print(show_plots(out=args.out).resolve().as_uri())
    return 0


def add_parser(subparsers) -> None:
    """Add the ``plots-template`` and ``plots`` subcommands to facelm's CLI."""
    p = subparsers.add_parser("plots-template",
                              help="write the offline dvc plots template (vega inlined, from npm)")
    p.add_argument("--force", action="store_true", help="rewrite it even when up to date")
    p.set_defaults(func=_template_cmd)
    p = subparsers.add_parser("plots", help="dvc plots show, rendered offline; prints the page's URL")
    p.add_argument("-o", "--out", default=None,
                   help=f"output folder (default {PLOTS_DIR.as_posix()})")
    p.set_defaults(func=_plots_cmd)
