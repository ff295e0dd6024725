"""Debian's stock kernels, fetched from Debian's archive without touching the host's apt.

`debian:6.1` resolves to the newest `linux-image-6.1.*-amd64-unsigned` in the suites below (Debian 12,
its backports and security updates, Debian 13 and its backports); from 6.19 on Debian packages a kernel
as `linux-binary-<v>` + `linux-modules-<v>` with the image at `usr/lib/modules/<v>/vmlinuz`.
APT runs under a private APT_CONFIG whose sources, state and cache live in the cache folder
(default /var/cache/socklab/kernels); packages are fetched with `apt-get download` and unpacked with
`dpkg-deb -x` into that folder, never installed. A kernel fetched once is never fetched again.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
from dataclasses import dataclass

from ..errors import SocklabError

CACHE = os.environ.get("SOCKLAB_KERNEL_CACHE", "/var/cache/socklab/kernels")
SUITES = {  # archive URL key -> suites searched
    "debian": ("bookworm", "bookworm-updates", "bookworm-backports", "trixie", "trixie-updates",
               "trixie-backports"),
    "debian-security": ("bookworm-security", "trixie-security"),
}
DEFAULT_MIRRORS = {"debian": "http://deb.debian.org/debian", "debian-security": "http://deb.debian.org/debian-security"}
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ARCH = "amd64"


class KernelFetchError(SocklabError):
    """A kernel could not be resolved, fetched or unpacked."""


@dataclass(frozen=True)
class DebianKernel:
    """One kernel in Debian's archive: its packages and the release string of its modules folder."""

    release: str            # "6.1.0-41-amd64", "7.3.4+deb13-amd64"
    version: str            # the package version, "6.1.158-1"
    packages: tuple         # package names to download (image, and modules from 6.19 on)

    @property
    def folder(self) -> str:
        return os.path.join(CACHE, "unpacked", f"{self.release}_{self.version}")


def host_mirrors(paths=None) -> dict:
    """The archive URLs the host's own apt uses (deb.debian.org or a local mirror), per archive."""
    found = {}
    files = paths if paths is not None else (["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")))
    for path in files:
        try:
            text = open(path).read()
        except OSError:
            continue
        for url in re.findall(r"(?:URIs:|^deb(?:\s+\[[^\]]*\])?)\s+(\S+)", text, re.M):
            if "snapshot.debian.org" in url:
                continue        # a frozen snapshot never has newer kernels
            key = "debian-security" if url.rstrip("/").endswith("debian-security") else \
                "debian" if url.rstrip("/").endswith("/debian") else None
            if key and key not in found:
                found[key] = url.rstrip("/")
    return {**DEFAULT_MIRRORS, **found}


def apt_env(cache: str = CACHE) -> dict:
    """Environment for apt with a private configuration in `cache` (sources, lists, archives)."""
    root = os.path.join(cache, "apt")
    for sub in ("lists/partial", "archives/partial", "etc/preferences.d", "etc/apt.conf.d"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    sources = os.path.join(root, "etc", "sources.list")
    mirrors = host_mirrors()
    with open(sources, "w") as fh:
        for key, suites in SUITES.items():
            for suite in suites:
                fh.write(f"deb [arch={ARCH} signed-by={KEYRING}] {mirrors[key]} {suite} main\n")
    conf = os.path.join(root, "apt.conf")
    with open(conf, "w") as fh:
        fh.write(f'Dir::State "{root}";\nDir::State::Lists "{root}/lists";\nDir::State::status "{root}/status";\n'
                 f'Dir::Cache "{root}";\nDir::Cache::archives "{root}/archives";\n'
                 f'Dir::Etc::SourceList "{sources}";\nDir::Etc::SourceParts "{root}/etc/none";\n'
                 f'Dir::Etc::Preferences "{root}/etc/preferences";\nDir::Etc::PreferencesParts "{root}/etc/preferences.d";\n'
                 f'Dir::Etc::Parts "{root}/etc/apt.conf.d";\nAPT::Architecture "{ARCH}";\nAPT::Architectures {{ "{ARCH}"; }};\n'
                 f'Acquire::Languages "none";\nAcquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";\n')
    open(os.path.join(root, "status"), "a").close()
    return {**os.environ, "APT_CONFIG": conf, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}


def _apt(argv, env, cwd=None, what="apt"):
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelFetchError(f"{what}: `{' '.join(argv)}` exited {proc.returncode}: "
                               f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout


def update(env, max_age: float = 6 * 3600) -> None:
    """Refresh the private package lists (at most every `max_age` seconds)."""
    import time
    stamp = os.path.join(os.path.dirname(env["APT_CONFIG"]), "updated")
    if os.path.exists(stamp) and time.time() - os.path.getmtime(stamp) < max_age:
        return
    _apt(["apt-get", "update", "-q"], env, what="fetching Debian's package lists")
    open(stamp, "w").close()


_IMAGE_RE = re.compile(r"^linux-image-(?P<rel>\d+\.\d+(?:\.\d+)?[-+][\w.+-]*?-amd64)-unsigned$")
_BINARY_RE = re.compile(r"^linux-binary-(?P<rel>\d+\.\d+(?:\.\d+)?[-+][\w.+-]*?-amd64)$")


def candidates(env) -> list[DebianKernel]:
    """Every amd64 kernel the private package lists know, with its newest package version."""
    text = _apt(["apt-cache", "dumpavail"], env, what="listing Debian's kernels")
    best: dict[str, tuple] = {}
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Version): (\S+)$", block, re.M))
        name, version = fields.get("Package", ""), fields.get("Version", "")
        m = _IMAGE_RE.match(name) or _BINARY_RE.match(name)
        if not m or name.endswith("-dbg"):
            continue
        rel = m["rel"]
        if "-rt-" in rel or "cloud" in rel:
            continue
        pkgs = (name,) if name.startswith("linux-image-") else (name, f"linux-modules-{rel}")
        prev = best.get(rel)
        if prev is None or _vkey(version) > _vkey(prev[0]):
            best[rel] = (version, pkgs)
    return [DebianKernel(rel, v, p) for rel, (v, p) in best.items()]


def _vkey(version: str) -> tuple:
    return tuple(int(x) if x.isdigit() else x for x in re.findall(r"\d+|[a-z]+", version))


def upstream(k: DebianKernel) -> tuple:
    """The upstream version of a package version: '6.1.158-1' -> (6, 1, 158)."""
    return tuple(int(x) for x in re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", k.version).groups(default="0"))


def resolve(series: str, env) -> DebianKernel:
    """The newest kernel of `series` ('6.1', '6.12', '7.3', or '6.12.57' for an exact version)."""
    want = tuple(int(x) for x in series.split("."))
    found = [k for k in candidates(env) if upstream(k)[:len(want)] == want]
    if not found:
        known = sorted({".".join(map(str, upstream(k)[:2])) for k in candidates(env)}, key=_vkey)
        raise KernelFetchError(f"debian:{series}: no such kernel in Debian's archive "
                               f"(suites {', '.join(s for v in SUITES.values() for s in v)}); known: {', '.join(known)}")
    return max(found, key=lambda k: (upstream(k), _vkey(k.version)))


def fetch(k: DebianKernel, env, log=print) -> str:
    """Download and unpack `k` into the cache (once); returns the path of its vmlinuz."""
    image = find_image(k.folder, k.release)
    if image:
        return image
    archives = os.path.join(os.path.dirname(env["APT_CONFIG"]), "archives")
    debs = []
    for pkg in k.packages:
        have = glob.glob(os.path.join(archives, f"{pkg}_*.deb"))
        if not have:
            log(f"  downloading {pkg} {k.version}")
            _apt(["apt-get", "download", "-q", f"{pkg}={k.version}"], env, cwd=archives, what=f"downloading {pkg}")
            have = glob.glob(os.path.join(archives, f"{pkg}_*.deb"))
        debs += have[:1]
    tmp = k.folder + ".partial"
    subprocess.run(["rm", "-rf", tmp], check=True)
    os.makedirs(tmp)
    for deb in debs:
        _apt(["dpkg-deb", "-x", deb, tmp], env, what=f"unpacking {os.path.basename(deb)}")
    os.replace(tmp, k.folder)
    image = find_image(k.folder, k.release)
    if not image:
        raise KernelFetchError(f"{k.release}: no vmlinuz in {', '.join(debs)}")
    return image


def find_image(folder: str, release: str) -> str | None:
    """The vmlinuz in an unpacked kernel: boot/vmlinuz-<release> or usr/lib/modules/<release>/vmlinuz."""
    for rel in (f"boot/vmlinuz-{release}", f"usr/lib/modules/{release}/vmlinuz", f"lib/modules/{release}/vmlinuz"):
        path = os.path.join(folder, rel)
        if os.path.exists(path):
            return path
    return None
