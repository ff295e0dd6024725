"""Booting a kernel with virtme-ng on the host's own root filesystem and running a command inside.

`vng -r VMLINUZ --cpus 2 --memory 2G --rwdir DIR -- COMMAND` boots the image with the host's `/` as
the guest's root (9p, read-only) and DIR writable; the command's exit status comes back. KVM is tried
first where a paused QEMU gets through its set-up under KVM (`kvm_usable`: on this kind of machine
/dev/kvm is a nested software backend that aborts there); where a KVM boot still cannot run the
kernel, the boot is repeated under TCG (`--disable-kvm`), and which one ran is returned. The root
share is 9p without caching, which makes importing the harness take 25-120 s, so a second read-only
share of `/` mounted with cache=loose carries the interpreter, venv and code: the guest script
chroots into it with /proc, /sys, /dev, /run and the writable folder bound in.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ..errors import SetupError

RO_TAG = "socklabro"           # the cached read-only share of /
RO_MOUNT = "/tmp/socklab-ro"   # where the guest mounts it (/tmp is the guest's own tmpfs)
TIME_FACTOR = {"KVM": 3, "TCG": 10}
# The watchdog (see _Watchdog): a guest that hangs is stopped, never waited for without end. TCG boots
# reached their first command in 22-32 s here; once booted, the longest pause of a guest's log and
# case records was 38 s (the harness's import and collection before the first case).
BOOT_TIMEOUT = 240.0    # s from the start to the guest's first command (78 s seen under a full test run)
STALL_TIMEOUT = 240.0   # s without a change of the guest's log or progress() once booted
EXIT_GRACE = 30.0       # s for QEMU to power off once the command's exit status is written
# A base chain on every hook harness/faults.py uses (inet prerouting and output, netdev ingress)
KEEPER_RULES = ("add table inet keep; "
                "add chain inet keep pre { type filter hook prerouting priority 0; policy accept; }; "
                "add chain inet keep out { type filter hook output priority 0; policy accept; }; "
                "add table netdev keep; "
                "add chain netdev keep in { type filter hook ingress device k0 priority 0; policy accept; }")
# Holds one socket with SO_TIMESTAMPNS (35) until the guest powers off (see _script).
STAMP_HOLDER = ("import signal, socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.setsockopt(socket.SOL_SOCKET, 35, 1); signal.pause()")
# Modules the harness needs (veth link, nftables faults, sock_diag for ss, AF_PACKET capture), loaded
# before the chroot, where module auto-loading finds no modules of the guest kernel.
MODULES = ("veth", "nfnetlink", "nf_tables", "nft_limit", "nft_reject", "nft_reject_inet",
           "nft_fwd_netdev", "nft_dup_netdev", "inet_diag", "tcp_diag", "af_packet",
           "nf_reject_ipv4", "nf_reject_ipv6")


@dataclass
class GuestRun:
    emulator: str       # "KVM" or "TCG"
    exit_code: int      # the command's exit status
    boot: float | None  # seconds from start to the guest's first command
    wall: float         # seconds from start to the guest's exit
    console: str        # path of the console log
    died_at_boot: list = field(default_factory=list)   # consoles of TCG boots that died before the command
    stopped: str | None = None   # why the watchdog stopped the guest, None when it ended by itself
    finished: bool = False       # the command's exit status came back (it ran to its end)


def missing() -> list[str]:
    """What this machine lacks to boot another kernel (empty when nothing)."""
    out = []
    if not shutil.which("qemu-system-x86_64"):
        out.append("qemu-system-x86_64 not found (Debian: apt-get install qemu-system-x86)")
    if not _vng():
        out.append("vng not found (pip install 'socklab[matrix]', i.e. virtme-ng)")
    if not shutil.which("depmod") and not os.path.exists("/sbin/depmod"):
        out.append("depmod not found (Debian: apt-get install kmod)")
    if not shutil.which("busybox"):
        out.append("busybox not found (Debian: apt-get install busybox-static)")
    return out


def _vng() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "vng")
    return here if os.path.exists(here) else shutil.which("vng")


def module_root(image: str) -> str | None:
    """The folder to give `modprobe -d`: the one holding lib/modules/<release> of the kernel `image`."""
    d = os.path.dirname(os.path.abspath(image))
    for _ in range(5):
        for root in (d, os.path.join(d, "usr")):
            if os.path.isdir(os.path.join(root, "lib", "modules")):
                return root
        d = os.path.dirname(d)
    return None


@functools.cache
def kvm_usable() -> bool:
    """Whether QEMU can start a vCPU under KVM here: /dev/kvm opens and a paused machine with the CPU
    model virtme-ng asks for under KVM (`-cpu host,topoext=on`) gets through QEMU's set-up, told to
    quit by its monitor. On this kind of machine the nested backend rejects an MSR write there
    ("failed to set MSR 0x10a") and QEMU aborts in 0.05 s, where a KVM boot through vng took 3.6 s
    to fail before its TCG fallback."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or not shutil.which("qemu-system-x86_64"):
        return False
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host,topoext=on", "-display", "none", "-nodefaults",
            "-S", "-monitor", "stdio", "-serial", "none"]
    try:
        return subprocess.run(argv, input="quit\n", capture_output=True, text=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def boot(image: str, rwdir: str, name: str, inner: list[str], *, cwd: str, env: dict | None = None,
         cpus: int = 2, memory: str = "2G", on_tick=None, tick: float = 2.0, try_kvm: bool = True,
         progress=None, boot_timeout: float = BOOT_TIMEOUT, stall_timeout: float = STALL_TIMEOUT) -> GuestRun:
    """Boot `image`, run argv `inner` in the guest (inside the cached chroot, cwd `cwd`), wait for it.

    `on_tick(elapsed, booted, emulator)` is called every `tick` seconds while the guest runs (progress
    lines). The guest is stopped (`GuestRun.stopped` says why) when it has not reached its command
    `boot_timeout` s after the start, or when neither its log nor `progress()` (any value; a change is
    progress) changed for `stall_timeout` s since; a boot stopped before its command is started again
    like one that died there.
    """
    vng = _vng()
    if not vng:
        raise SetupError("; ".join(missing()))
    os.makedirs(rwdir, exist_ok=True)
    attempts = ["KVM", "TCG", "TCG"] if try_kvm and kvm_usable() else ["TCG", "TCG"]
    died: list[str] = []
    for n, emulator in enumerate(attempts):
        watchdog = _Watchdog(os.path.join(rwdir, f"{name}.log"), os.path.join(rwdir, f"{name}.exit"), progress,
                             boot_timeout, stall_timeout)
        run = _boot_once(vng, image, rwdir, name, inner, cwd, dict(env or {}), emulator, cpus, memory, on_tick, tick,
                         watchdog)
        if run.boot is not None or n == len(attempts) - 1:
            run.died_at_boot = died
            return run
        if emulator == "TCG":
            # The guest died (or hung) before its first command. Seen once in about 25 TCG boots of
            # 7.3: "Oops: int3" in sched_clock_cpu 2.4 s into the boot, as the kernel patched a static
            # key while the other CPU ran it (as in ipv6_rcv on 6.12; see KEEPER_RULES). Nothing of the
            # case ran, so it boots once more; the dead boot's console is kept.
            kept = run.console.replace(".console.tcg.txt", f".console.tcg-died-{len(died) + 1}.txt")
            os.replace(run.console, kept)
            died.append(kept)
        # else KVM did not get as far as the guest's first command: fall back to TCG
    raise AssertionError("unreachable")


class _Watchdog:
    """Decides, at each tick, whether a guest is stuck: the reason to stop it, or None.

    Progress is any change of the guest's log size or of `progress()`. A command whose exit status is
    written while QEMU does not power off is stopped after EXIT_GRACE (its status stands)."""

    def __init__(self, log: str, exit_file: str, progress, boot_timeout: float, stall_timeout: float):
        self.log, self.exit_file, self.progress = log, exit_file, progress
        self.boot_timeout, self.stall_timeout = boot_timeout, stall_timeout
        self.mark, self.changed, self.exited = None, 0.0, None

    def check(self, elapsed: float, boot: float | None) -> str | None:
        if boot is None:
            if elapsed > self.boot_timeout:
                return f"the guest had not reached its command {self.boot_timeout:g} s after the start"
            return None
        if os.path.exists(self.exit_file):
            self.exited = elapsed if self.exited is None else self.exited
            if elapsed - self.exited > EXIT_GRACE:
                return f"the command had ended but QEMU had not powered off {EXIT_GRACE:g} s later"
            return None
        try:
            size = os.stat(self.log).st_size
        except OSError:
            size = None
        mark = (size, self.progress() if self.progress else None)
        if mark != self.mark:
            self.mark, self.changed = mark, elapsed
        elif elapsed - max(self.changed, boot) > self.stall_timeout:
            return (f"no progress for {self.stall_timeout:g} s: the guest's log and case records stood still "
                    f"from {clock(self.changed)} to {clock(elapsed)} after the start")
        return None


def clock(seconds: float) -> str:
    """`4m05s`: the matrix's progress lines and the watchdog's reasons."""
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def _boot_once(vng, image, rwdir, name, inner, cwd, env, emulator, cpus, memory, on_tick, tick,
               watchdog: _Watchdog | None = None) -> GuestRun:
    env = {**env, "SOCKLAB_EMULATOR": emulator, "SOCKLAB_TIME_FACTOR": TIME_FACTOR[emulator]}
    booted = os.path.join(rwdir, f"{name}.booted")
    exit_file = os.path.join(rwdir, f"{name}.exit")
    for path in (booted, exit_file):
        if os.path.exists(path):
            os.remove(path)
    script = os.path.join(rwdir, f"{name}.guest.sh")
    # The timewait probes' definitions cached per kernel build (harness/timewait.py) are kept on the
    # host across guests: parsing a kernel's BTF costs each guest process about 4 s under TCG.
    cache = _probe_cache()
    with open(script, "w") as fh:
        fh.write(_script(rwdir, name, inner, env, cwd, module_root(image), tmp_paths(cwd, inner[0]),
                         [cache] if cache else []))
    console = os.path.join(rwdir, f"{name}.console.{emulator.lower()}.txt")
    # --verbose: the guest kernel's messages go to the console file, so a guest that dies mid-run
    # (a panic, the OOM killer) leaves its reason there, not an empty file.
    argv = [vng, "--verbose", "-r", image, "--cpus", str(cpus), "--memory", memory, "--rwdir", rwdir,
            *(["--rwdir", cache] if cache else []),
            f"--qemu-opts=-virtfs local,path=/,mount_tag={RO_TAG},security_model=none,readonly=on,multidevs=remap"]
    if emulator == "TCG":
        argv.append("--disable-kvm")
    argv += ["--", f"sh {shlex.quote(script)}"]
    path_env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    t0 = time.monotonic()
    boot_s, stopped = None, None
    with open(console, "w") as out:
        # A session of its own: vng, virtme-run and QEMU are stopped together (by this group's id).
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=path_env,
                                cwd=rwdir, start_new_session=True)
        try:
            while True:
                try:
                    proc.wait(timeout=tick)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if boot_s is None and os.path.exists(booted):
                    boot_s = time.monotonic() - t0
                if on_tick:
                    on_tick(time.monotonic() - t0, boot_s, emulator)
                stopped = watchdog.check(time.monotonic() - t0, boot_s) if watchdog else None
                if stopped:
                    _stop_group(proc)
                    break
        except BaseException:
            _stop_group(proc)
            raise
    if stopped:
        with open(console, "a") as out:
            out.write(f"\nsocklab: the guest was stopped: {stopped}\n")
    elif boot_s is None and os.path.exists(booted):
        boot_s = time.monotonic() - t0        # booted and finished within one tick
    code, finished = proc.returncode, False
    try:
        code, finished = int(open(exit_file).read().strip()), True
    except (OSError, ValueError):
        pass
    return GuestRun(emulator, code, boot_s, time.monotonic() - t0, console, stopped=stopped, finished=finished)


def _stop_group(proc) -> None:
    """SIGTERM to the guest's process group (vng, virtme-run, QEMU), SIGKILL if it lingers."""
    import signal
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


def _probe_cache() -> str | None:
    """The host's folder of cached probe definitions, made if missing; None where it cannot be."""
    from ..timewait import CACHE_DIR
    try:
        os.makedirs(CACHE_DIR, exist_ok=True)
    except OSError:
        return None
    return CACHE_DIR


def tmp_paths(cwd: str, python: str) -> list[str]:
    """The folders the guest's command needs that lie under the host's /tmp (a clone in /tmp/x, its
    venv): the chroot's /tmp is a tmpfs of its own, so the script binds these back in from the share."""
    venv = os.path.dirname(os.path.dirname(os.path.abspath(python)))
    under = sorted({os.path.abspath(p) for p in (cwd, venv) if os.path.abspath(p).startswith("/tmp/")})
    return [p for p in under if not any(p.startswith(o + "/") for o in under if o != p)]


def _script(rwdir: str, name: str, inner: list[str], env: dict, cwd: str, modroot: str | None = None,
            from_tmp: list[str] = (), shared: list[str] = ()) -> str:
    """The guest's shell script (POSIX sh; runs as root in the guest). `shared`: more writable folders
    the guest has at their host paths (vng --rwdir), bound into the chroot too."""
    q = shlex.quote
    shared_binds = "".join(f'    mkdir -p "$ro"{q(p)} && mount --bind {q(p)} "$ro"{q(p)}\n' for p in shared)
    tmp_binds = "".join(f'    mkdir -p "$ro"{q(p)} && mount --bind "$hosttmp"{q(p[len("/tmp"):])} "$ro"{q(p)}\n'
                        for p in from_tmp)
    envs = " ".join(f"{k}={q(str(v))}" for k, v in env.items())
    cmd = f"cd {q(cwd)} && exec /usr/bin/env HOME=/tmp {envs} " + " ".join(q(a) for a in inner)
    return f"""#!/bin/sh
# written by socklab matrix; runs inside the guest as root
RW={q(rwdir)}
ro={q(RO_MOUNT)}
date +%s > "$RW/{name}.booted"
log="$RW/{name}.log"
echo "socklab guest: kernel $(uname -r)" > "$log"
if mkdir -p "$ro" && mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,ro,msize=512000 {RO_TAG} "$ro"; then
    # The guest kernel's modules are on the host (the guest sees /var/cache as its own tmpfs, and the
    # host has no /lib/modules for virtme to link them under): modprobe -d on the cached share, also
    # as the kernel's own module loader.
    mp="$RW/{name}.modprobe"
    printf '#!/bin/sh\\nexec /sbin/modprobe -d %s "$@"\\n' "$ro"{q(modroot or "")} > "$mp" && chmod +x "$mp"
    echo "$mp" > /proc/sys/kernel/modprobe
    for m in {" ".join(MODULES)}; do "$mp" -q "$m" || echo "socklab guest: module $m not loaded" >> "$log"; done
    echo "socklab guest: modules: $(cut -d' ' -f1 /proc/modules | tr '\\n' ' ')" >> "$log"
    # Netfilter hooks the fault rules use stay registered for the whole run (a keeper namespace): as
    # cases add and remove the only rules, the hooks' static keys flip and the kernel patches every
    # NF_HOOK site; a 6.12 guest under TCG twice died of it ("Oops: int3" in ipv6_rcv).
    ip netns add keeper && ip -n keeper link add k0 type veth peer name k1 && \\
        ip netns exec keeper nft {q(KEEPER_RULES)} || echo "socklab guest: no keeper rules" >> "$log"
    # the host's /tmp, before a tmpfs covers it in the chroot: what the command needs from there
    hosttmp=/run/socklab-host-tmp
    mkdir -p "$hosttmp" && mount --bind "$ro/tmp" "$hosttmp"
    for d in proc sys dev run; do mount --rbind "/$d" "$ro/$d"; done
    mount -t tmpfs tmpfs "$ro/tmp"
{tmp_binds}    mkdir -p "$ro$RW"
    mount --bind "$RW" "$ro$RW"
{shared_binds}    # A socket asking for receive timestamps, held for the whole run: each case's capture socket asks
    # for them too (SO_TIMESTAMPNS), and whenever the last one closed the kernel turned its netstamp
    # static key off and patched every net_timestamp_check site, on again for the next case; a 6.12
    # guest under TCG died of it ("Oops: int3" in __netif_receive_skb_core, matrix-s3, 2026-11-30).
    chroot "$ro" {q(sys.executable)} -S -c {q(STAMP_HOLDER)} &
    chroot "$ro" /bin/sh -c {q(cmd)} >> "$log" 2>&1
else
    echo "socklab: the cached share did not mount; running from the uncached root (slow)" >> "$log"
    /bin/sh -c {q(cmd)} >> "$log" 2>&1
fi
echo $? > "$RW/{name}.exit"
"""
