"""A self-contained HTML document: inline CSS, figures as data: URIs, numbered figures.

Nothing in the page refers to anything outside it (no scripts, fonts, stylesheets or links
but in-page anchors), so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #111; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #444; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .85em; }
th, td { border: 1px solid #999; padding: .2em .5em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: .9em; }
.fail { font-weight: bold; text-decoration: underline; } .pass { font-weight: normal; }
.bar { position: relative; width: 12em; height: 1em; border: 1px solid #444; background: #fff; }
.bar > span { position: absolute; left: 0; top: 0; bottom: 0; background: #888; }
.bar > span.over { background: repeating-linear-gradient(45deg, #000 0 3px, #fff 3px 6px); }
code, pre { font-size: .9em; } .note { color: #444; font-size: .9em; }
"""


def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return s or "input"


@dataclasses.dataclass
class Figure:
    number: int
    name: str  # stable file name stem, e.g. "init-d12-histograms"
    caption: str
    png: bytes


class Document:
    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self.figures: list[Figure] = []
        self._names: set[str] = set()

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def figure(self, name: str, png: bytes, caption: str) -> Figure:
        """Register a figure (numbered in order); place it with `place` after the text that
        refers to it."""
        base, k = slug(name), 2
        unique = base
        while unique in self._names:
            unique, k = f"{base}-{k}", k + 1
        self._names.add(unique)
        fig = Figure(len(self.figures) + 1, unique, caption, png)
        self.figures.append(fig)
        return fig

    @staticmethod
    def ref(fig: Figure) -> str:
        return f'<a href="#fig-{fig.number}">Figure {fig.number}</a>'

    def place(self, fig: Figure) -> None:
        data = base64.b64encode(fig.png).decode("ascii")
        self.add(
            f'<figure id="fig-{fig.number}"><img alt="Figure {fig.number}: {esc(fig.caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption><b>Figure {fig.number}.</b> '
            f'{esc(fig.caption)} <span class="note">({esc(fig.name)}.png)</span></figcaption></figure>'
        )

    def render(self) -> str:
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(self.title)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>{esc(self.title)}</h1>\n" + "\n".join(self.parts) + "\n</body></html>\n"
        )


def table(
    headers: list[str],
    rows: list[list],
    *,
    numeric: set[int] = frozenset(),
    raw: set[int] = frozenset(),
    cls: str = "",
) -> str:
    """An HTML table; cells are escaped unless their column is in `raw`; `numeric` columns are
    right-aligned."""
    out = [
        f'<table class="{esc(cls)}"><thead><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in headers)
        + "</tr></thead><tbody>"
    ]
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            text = v if i in raw else esc(v)
            cells.append(f'<td class="num">{text}</td>' if i in numeric else f"<td>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def bar(percent: float | None) -> str:
    """A horizontal bar for a share of a tolerance: filled to min(percent, 100) %, striped when
    over 100 % (readable without colour)."""
    if percent is None:
        return "-"
    w = max(0.0, min(percent, 100.0))
    over = " over" if percent > 100 else ""
    return (
        f'<div class="bar" title="{percent:.1f}%"><span class="{over.strip()}" '
        f'style="width:{w:.1f}%"></span></div>'
    )


def num(x, fmt: str = ".4g") -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    try:
        return format(float(x), fmt)
    except (TypeError, ValueError):
        return str(x)
