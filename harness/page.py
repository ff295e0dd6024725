"""What every HTML page of socklab shares: the style sheet, escaping, verdict and outcome words, the
page shell. No network: CSS is inline, no fonts, scripts or images are loaded.

Width: pages are read in a 1280 px window; the body is at most 1240 px wide, tables lay out in it
(long words break), `pre` scrolls inside its own box and ladders scale down with the page.
"""

from __future__ import annotations

from html import escape

# Words styled as themselves: verdicts and pytest's outcomes.
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1em auto;padding:0 1em;color:#111;
 max-width:1240px;box-sizing:border-box}
h1{font-size:1.45em;margin:.3em 0}h2{font-size:1.2em;border-top:2px solid #ccc;padding-top:.7em;margin-top:1.8em}
h3{font-size:1em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.4em 0;max-width:100%}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f2f2f2}table.wide{width:100%;table-layout:fixed}
pre{background:#f7f7f7;border:1px solid #ddd;padding:6px;overflow-x:auto;font-size:12px;max-width:100%;
 box-sizing:border-box}
.passed,.confirmed,.xfailed{color:#116611;font-weight:bold}.failed,.error,.refuted,.interrupted{color:#b00;font-weight:bold}
.skipped,.none,.unknown,.notjudged{color:#777}.differs,.mixed,.xpassed{color:#a65f00;font-weight:bold}
.both{color:#116611}.ss{color:#1f4e9c}.trace{color:#6a3d9a}
.ladder{border:1px solid #ddd;background:#fff;max-width:100%;height:auto}
.small{font-size:.85em;color:#555}ul.plain{list-style:none;padding-left:0;margin:.3em 0}
a.case{white-space:nowrap}.evidence{font-size:.92em}
nav.toc a{margin-right:.8em}
"""

VERDICTS = ("confirmed", "refuted", "differs")


def e(value) -> str:
    """Escaped text; None is empty."""
    return escape("" if value is None else str(value))


def word(value) -> str:
    """A verdict or outcome word, coloured by its class ('none' when there is none)."""
    value = value or "none"
    cls = "".join(ch for ch in str(value) if ch.isalnum())
    return f'<span class="{e(cls)}">{e(value)}</span>'


def shell(title: str, body: list[str], extra_css: str = "") -> str:
    """A whole page: doctype, inline style, `body` joined by newlines."""
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f'<meta name="viewport" content="width=device-width"><title>{e(title)}</title>'
            f"<style>{CSS}{extra_css}</style></head>\n"
            '<body><a id="top"></a>\n' + "\n".join(body) + "\n</body></html>\n")


def write(path: str, text: str) -> str:
    """Write a page atomically (a reader never sees half of it); returns the path."""
    import os
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)
    return path
