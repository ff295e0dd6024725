"""What `socklab matrix` is asked to run on: `debian:<series>`, a path to a vmlinuz, or `host`."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from ..errors import SocklabError
from . import debian


class KernelSpecError(SocklabError):
    """A KERNEL argument that names no kernel we can boot."""


@dataclass(frozen=True)
class Kernel:
    """A kernel to run the catalogue on: `image` None means the running kernel, without a VM."""

    spec: str                   # as the user wrote it
    label: str                  # short name for folders and progress lines: "6.1.192", "host"
    image: str | None = None    # vmlinuz path
    modules: str | None = None  # folder holding lib/modules/<release> or usr/lib/modules/<release>

    @property
    def is_host(self) -> bool:
        return self.image is None


def parse(spec: str, log=print) -> Kernel:
    """Resolve (and for debian:, fetch once into the cache) one KERNEL argument."""
    if spec == "host":
        return Kernel(spec, "host")
    if spec.startswith("debian:"):
        series = spec.split(":", 1)[1]
        if not series or not all(p.isdigit() for p in series.split(".")):
            raise KernelSpecError(f"{spec}: expected debian:<major>.<minor>[.<patch>], e.g. debian:6.1")
        env = debian.apt_env()
        debian.update(env)
        k = debian.resolve(series, env)
        log(f"socklab matrix: {spec} is {k.release} ({k.version})")
        image = debian.fetch(k, env, log=log)
        version = ".".join(map(str, debian.upstream(k)))
        return Kernel(spec, version, image, k.folder)
    if os.path.isfile(spec):
        image = os.path.abspath(spec)
        root = _modules_root(image)
        if root is None:
            raise KernelSpecError(f"{spec}: no modules next to this image (looked for lib/modules/* and "
                                  f"usr/lib/modules/* in its folder and the two above)")
        return Kernel(spec, os.path.basename(image).removeprefix("vmlinuz-") or "kernel", image, root)
    raise KernelSpecError(f"{spec}: not a kernel: use debian:<series> (e.g. debian:6.1), a path to a vmlinuz "
                          f"with its modules, or host")


def _modules_root(image: str) -> str | None:
    d = os.path.dirname(image)
    for _ in range(4):
        if glob.glob(os.path.join(d, "lib", "modules", "*")) or glob.glob(os.path.join(d, "usr", "lib", "modules", "*")):
            return d
        d = os.path.dirname(d)
    return None
