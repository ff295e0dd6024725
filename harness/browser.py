"""Headless Chromium, to look at a report as a person would: a PNG screenshot of the window and the
DOM after rendering, from one run of the browser.

Debian's `chromium` package; `find()` raises SetupError with the install command when it is absent.
Every run gets a fresh profile folder and a deadline: past it the browser's process group is
killed (its crashpad handlers sit in sessions of their own and exit when the browser is gone).
The flags keep Chromium off the network: no background services, and no host name resolves, so a
request Chromium still makes on its own fails inside the browser before a packet leaves the machine.
`net_log=` keeps Chromium's own record of its network activity, for a test to prove that.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from .errors import CommandError, SetupError, SocklabError

INSTALL = "apt-get update && apt-get install -y chromium"
NAMES = ("chromium", "chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         # With only the flags above Chromium 156 still asks update.googleapis.com,
         # accounts.google.com and clients2.google.com (its net log shows the DNS queries going out).
         "--host-resolver-rules=MAP * ~NOTFOUND")


class BrowserError(SocklabError):
    """Chromium did not render the page before its deadline, or wrote no screenshot."""


def find() -> str:
    """The Chromium executable; SetupError with the install command when there is none."""
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise SetupError(f"headless Chromium is not installed (needed to render the report): {INSTALL}")


def render(html: str, png: str, *, size: tuple[int, int] = (1400, 3000), timeout: float = 60.0,
           net_log: str | None = None) -> str:
    """Open the local file `html` in a `size` (width, height) window, write a screenshot of the
    window to `png` and return the DOM after rendering:

        dom = browser.render("reports/run/index.html", "/tmp/shot.png", size=(1400, 3000))
    """
    if not os.path.isfile(html):
        raise FileNotFoundError(f"{html}: no such file to render")
    exe = find()
    if os.path.exists(png):
        os.unlink(png)          # a screenshot left from before must not pass for this one
    with tempfile.TemporaryDirectory(prefix="socklab-chromium-", ignore_cleanup_errors=True) as profile:
        argv = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                f"--screenshot={os.path.abspath(png)}", "--dump-dom"]
        if net_log:
            argv.append(f"--log-net-log={os.path.abspath(net_log)}")
        argv.append(Path(html).resolve().as_uri())
        out, err, status = _run(argv, timeout)
    if status != 0:
        raise CommandError(argv, status, out, err)
    if not os.path.isfile(png) or not os.path.getsize(png):
        raise BrowserError(f"{' '.join(argv)!r} exited 0 but wrote no screenshot to {png}\n"
                           f"--- stderr ---\n{err.rstrip()}")
    return out


def _run(argv: list[str], timeout: float) -> tuple[str, str, int]:
    """Run Chromium in a process group of its own; kill the group when `timeout` passes."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)     # the leader is not reaped yet: the group id is still ours
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:       # a helper outside the group still holds the pipes
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            out, err = b"", b""
        raise BrowserError(f"{' '.join(argv)!r} did not finish within {timeout} s (killed)\n"
                           f"--- stderr ---\n{err.decode(errors='replace').rstrip()}") from None
    return out.decode(errors="replace"), err.decode(errors="replace"), proc.returncode


# Appended to a copy of the page (never to the report itself, which has no script): every element's
# box against the window, written into the DOM that --dump-dom returns.
_MEASURE = """<script>
(function () {
  var w = window.innerWidth, out = [];
  document.querySelectorAll("body *").forEach(function (el) {
    if (el.id === "socklab-measure") return;
    var r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return;
    if (r.right > w + 0.5 || r.left < -0.5) {
      out.push({tag: el.tagName.toLowerCase(), id: el.id || "", cls: el.getAttribute("class") || "",
                left: Math.round(r.left), right: Math.round(r.right),
                text: (el.textContent || "").trim().slice(0, 60)});
    }
  });
  var pre = document.createElement("pre");
  pre.id = "socklab-measure";
  pre.textContent = JSON.stringify({viewport: w, scroll_width: document.documentElement.scrollWidth,
                                    too_wide: out});
  document.body.appendChild(pre);
})();
</script>"""


def measure(html: str, *, width: int = 1280, height: int = 2000, timeout: float = 60.0) -> dict:
    """Lay the page `html` out in a `width` px window and return {"viewport", "scroll_width",
    "too_wide": [elements whose box leaves the window: tag, id, cls, left, right, text]}.

    The page is measured from a copy with a measuring script added, next to the original (so its
    relative links and sizes are the same); the copy is removed afterwards.
    """
    import json
    import re
    with open(html) as fh:
        text = fh.read()
    copy = os.path.join(os.path.dirname(os.path.abspath(html)), f".measure-{os.getpid()}.html")
    png = copy + ".png"
    try:
        with open(copy, "w") as fh:
            fh.write(text.replace("</body>", _MEASURE + "</body>", 1))
        dom = render(copy, png, size=(width, height), timeout=timeout)
    finally:
        for path in (copy, png):
            if os.path.exists(path):
                os.unlink(path)
    found = re.search(r'<pre id="socklab-measure">(.*?)</pre>', dom, re.S)
    if not found:
        raise BrowserError(f"{html}: the measuring script wrote nothing (did the page load?)")
    from html import unescape
    return json.loads(unescape(found.group(1)))
