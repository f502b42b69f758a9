"""Reading the stage reports (nbconvert pages) for the reports index, and the index's style.

A stage report is described by its first heading (without the ``NN ·`` prefix) and flagged
when papermill stopped its notebook on an error; :data:`CSS` styles ``reports/index.html``
(inline, so the page reads offline).
"""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

_STAGE_PREFIX = re.compile(r"^\s*\d+\s*[·.:\-–—]\s*")

CSS = """
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
