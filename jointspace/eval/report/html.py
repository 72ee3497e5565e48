"""The page shell of the reports: inline CSS, tables, figures and collapsed blocks.

Everything a page shows is inside its one file (no script, stylesheet, font or
image is fetched), and nothing may be wider than the window: tables sit in
scrollable wrappers, images shrink to fit, long words and paths break.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable, Sequence

STYLE = """*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:0 auto;
padding:1rem;color:#1a1a1a;background:#fff;line-height:1.45;overflow-wrap:anywhere}
h1{font-size:1.45rem;margin:.2rem 0 .4rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccc}
h3{font-size:1rem;margin:1.2rem 0 .4rem}p,li{max-width:75ch}
code{font-size:.9em;overflow-wrap:anywhere;word-break:break-word}
img,audio,svg{max-width:100%}img{height:auto}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #bbb;padding:.2rem .5rem;
text-align:left;vertical-align:top;overflow-wrap:normal}th{background:#f0f0f0}
td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}caption{text-align:left}
figure{margin:.5rem 0;max-width:100%}figcaption{font-size:.85rem;color:#444}
.figures{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}.figures figure{flex:1 1 320px}
.facts{display:flex;flex-wrap:wrap;gap:.4rem 2rem}.facts>div{flex:1 1 300px;min-width:0}
.facts dl{margin:0;display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.1rem .8rem}
.facts dt{color:#444}.facts dd{margin:0;min-width:0}
.headline{font-size:1.05rem;padding-left:1.2rem}.headline li{margin:.15rem 0}
.note{color:#444;font-size:.9rem}
.row{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-start;margin:.4rem 0 .9rem}
.query{flex:0 1 200px;min-width:0;padding:.3rem;background:#f4f4f4;border-left:4px solid #555}
.hit{flex:0 1 130px;min-width:0;padding:.3rem;border:2px solid #bbb;font-size:.85rem}
.hit.ok{border-color:#1a7f37;background:#eef8f0}.hit .mark{font-weight:600}
.hit.ok .mark{color:#11632a}.hit .mark.no{color:#555}
.preview{display:block;max-width:100%}.preview img{display:block;width:96px;max-width:100%}
.preview audio{width:100%;min-width:0;max-width:260px}
.preview .text{display:block;max-height:7.5em;overflow:hidden}
.tag{font-size:.8rem;color:#444}
details{margin:.6rem 0}summary{cursor:pointer;font-weight:600}"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    """A figure as the page prints it (``–`` for a missing one, ints whole)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def figure_words(value: Any) -> str:
    """A figure in a sentence: two decimals, or two significant digits below 0.01 (a
    chance level of 0.0014 is not 0.00)."""
    if isinstance(value, float) and 0 < abs(value) < 0.01:
        return f"{value:.2g}"
    return num(value, 2)


def html_table(rows: Sequence[Sequence[Any]], header: Sequence[str], caption: str = "",
               row_headers: bool = True) -> str:
    """A table in a scrollable wrapper; floats to 3 places, the first column a row header
    (``row_headers``); ``caption`` names it (and the wrapper, for a keyboard user)."""
    def cell(v: Any, first: bool) -> str:
        numeric = isinstance(v, (int, float)) and not isinstance(v, bool) or v is None
        tag = "th scope='row'" if first and row_headers else "td class='n'" if numeric else "td"
        return f"<{tag}>{num(v)}</{tag.split()[0]}>"
    head = "".join(f"<th scope='col'>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v, i == 0) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    cap = f"<caption class='note'>{esc(caption)}</caption>" if caption else ""
    label = esc(caption or "table")
    return (f"<div class='scroll' tabindex='0' role='region' aria-label='{label}'><table>{cap}"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def figure(png_b64: str, alt: str, caption: str = "") -> str:
    img = f'<img alt="{esc(alt)}" src="data:image/png;base64,{png_b64}">'
    return f"<figure>{img}<figcaption>{esc(caption or alt)}</figcaption></figure>"


def figures(*items: str) -> str:
    """Figures side by side where the window is wide enough, one under the other where not."""
    return f"<div class='figures'>{''.join(i for i in items if i)}</div>"


def details(summary: str, content: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>{content}</details>"


def section(title: str, *parts: str, anchor: str = "") -> str:
    ident = f" id='{esc(anchor)}'" if anchor else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{''.join(p for p in parts if p)}</section>"


def note(text: str) -> str:
    return f"<p class='note'>{esc(text)}</p>"


def bullet_list(items: Iterable[str], cls: str = "") -> str:
    """``items`` are markup (escape them first)."""
    attr = f" class='{cls}'" if cls else ""
    return f"<ul{attr}>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def page(title: str, body: str) -> str:
    """The whole document: ``body`` is markup."""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>")


def direction_words(direction: str) -> str:
    """``text_to_image`` → ``text → image``."""
    return direction.replace("_to_", " → ")
