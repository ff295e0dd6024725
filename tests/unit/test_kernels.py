"""harness.kernels without booting anything: Debian's archive listings, KERNEL arguments, the guest script,
and the time factor."""

import os
import sys
import subprocess

import pytest

from harness import timefactor
from harness.kernels import debian, spec, vm

DUMPAVAIL = """\
Package: linux-image-6.1.0-41-amd64-unsigned
Version: 6.1.158-1

Package: linux-image-6.1.0-57-amd64-unsigned
Version: 6.1.192-3

Package: linux-image-6.1.0-57-rt-amd64-unsigned
Version: 6.1.192-3

Package: linux-image-6.12.118+deb13-amd64-unsigned
Version: 6.12.118-1

Package: linux-image-6.12.9+bpo-amd64-unsigned
Version: 6.12.9-1~bpo12+1

Package: linux-binary-7.3.4+deb13-amd64
Version: 7.3.4-1~bpo13+1

Package: linux-modules-7.3.4+deb13-amd64
Version: 7.3.4-1~bpo13+1

Package: linux-image-amd64
Version: 6.1.192-3
"""


@pytest.fixture
def archive(monkeypatch):
    monkeypatch.setattr(debian, "_apt", lambda argv, env, cwd=None, what="": DUMPAVAIL)
    return {}


def test_newest_kernel_of_a_series(archive):
    k = debian.resolve("6.1", archive)
    assert (k.release, k.version, k.packages) == ("6.1.0-57-amd64", "6.1.192-3", ("linux-image-6.1.0-57-amd64-unsigned",))
    assert debian.resolve("6.12", archive).version == "6.12.118-1"          # not the older backport


def test_from_6_19_on_the_image_and_modules_are_two_packages(archive):
    k = debian.resolve("7.3", archive)
    assert k.packages == ("linux-binary-7.3.4+deb13-amd64", "linux-modules-7.3.4+deb13-amd64")


def test_an_unknown_series_names_the_known_ones(archive):
    with pytest.raises(debian.KernelFetchError, match=r"debian:5.10: no such kernel.*known: 6.1, 6.12, 7.3"):
        debian.resolve("5.10", archive)


def test_the_hosts_mirror_is_used_and_snapshots_skipped(tmp_path):
    a = tmp_path / "debian.sources"
    a.write_text("Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
                 "URIs: http://mirror.example/debian\nSuites: bookworm\n")
    b = tmp_path / "sources.list"
    b.write_text("deb [signed-by=/x.gpg] http://security.example/debian-security bookworm-security main\n"
                 "deb http://snapshot.debian.org/archive/debian/20250520T000000Z bookworm main\n")
    assert debian.host_mirrors([str(a), str(b)]) == {"debian": "http://mirror.example/debian",
                                                     "debian-security": "http://security.example/debian-security"}


def test_kernel_arguments_that_name_no_kernel():
    with pytest.raises(spec.KernelSpecError, match="expected debian:<major>.<minor>"):
        spec.parse("debian:six")
    with pytest.raises(spec.KernelSpecError, match="not a kernel"):
        spec.parse("/no/such/vmlinuz")
    assert spec.parse("host").is_host


def test_a_vmlinuz_path_needs_its_modules(tmp_path):
    image = tmp_path / "boot" / "vmlinuz-6.6.1"
    image.parent.mkdir()
    image.write_bytes(b"")
    with pytest.raises(spec.KernelSpecError, match="no modules next to this image"):
        spec.parse(str(image))
    (tmp_path / "lib" / "modules" / "6.6.1").mkdir(parents=True)
    k = spec.parse(str(image))
    assert (k.image, k.modules, k.label) == (str(image), str(tmp_path), "6.6.1")
    assert vm.module_root(str(image)) == str(tmp_path)


def test_the_guest_script_runs_the_command_in_the_cached_share():
    text = vm._script("/r/m", "k1", ["/v/bin/python", "-m", "harness.cli", "run"], {"SOCKLAB_TIME_FACTOR": 10},
                      "/src", "/cache/k1/usr")
    assert 'mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,ro,msize=512000 socklabro "$ro"' in text
    assert "exec /sbin/modprobe -d %s" in text and '"$ro"/cache/k1/usr' in text
    assert "echo \"$mp\" > /proc/sys/kernel/modprobe" in text
    assert "cd /src && exec /usr/bin/env HOME=/tmp SOCKLAB_TIME_FACTOR=10 /v/bin/python -m harness.cli run" in text
    assert text.index("booted") < text.index("mount -t 9p") < text.index("chroot")
    # the netfilter hooks of the fault rules stay registered for the whole guest run (keeper namespace)
    assert "ip netns exec keeper nft 'add table inet keep;" in text and "hook ingress device k0" in text
    assert text.index("for m in veth") < text.index("ip netns add keeper") < text.index('chroot "$ro"')
    # and so does one socket with receive timestamps (the netstamp static key), started in the background
    holder = f"chroot \"$ro\" {sys.executable} -S -c '{vm.STAMP_HOLDER}' &"
    assert holder in text and text.index(holder) < text.index("chroot \"$ro\" /bin/sh -c")


def test_the_timestamp_holder_asks_for_receive_timestamps():
    """The guest's holder socket (see vm._script) has SO_TIMESTAMPNS on, which is what keeps the
    kernel's netstamp key from flipping between cases."""
    code = vm.STAMP_HOLDER.replace("signal.pause()", "print(s.getsockopt(socket.SOL_SOCKET, 35))")   # SO_TIMESTAMPNS
    assert code != vm.STAMP_HOLDER
    assert subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True).stdout == "1\n"
    # a shared writable folder (the probe definitions' cache) is bound into the chroot at its own path
    shared = vm._script("/r/m", "k1", ["/v/bin/python"], {}, "/src", None, [], ["/var/cache/socklab/probes"])
    bind = 'mount --bind /var/cache/socklab/probes "$ro"/var/cache/socklab/probes'
    assert bind in shared and shared.index('mount --bind "$RW" "$ro$RW"') < shared.index(bind) < shared.index('chroot "$ro"')


def test_a_clone_under_tmp_is_bound_into_the_guests_chroot():
    """The chroot's /tmp is its own tmpfs: a clone in /tmp/x (and its venv) is bound back in from the
    host's /tmp, after the tmpfs; a clone elsewhere needs nothing."""
    assert vm.tmp_paths("/tmp/x", "/tmp/x/.venv/bin/python") == ["/tmp/x"]
    assert vm.tmp_paths("/tmp/x", "/tmp/venv/bin/python") == ["/tmp/venv", "/tmp/x"]
    assert vm.tmp_paths("/work/main", "/work/main/.venv/bin/python") == []
    assert vm.tmp_paths("/tmpfoo/x", "/usr/bin/python3") == []
    text = vm._script("/tmp/x/reports/m", "k1", ["/tmp/x/.venv/bin/python"], {}, "/tmp/x", None, ["/tmp/x"])
    bind = 'mount --bind "$hosttmp"/x "$ro"/tmp/x'
    assert 'mount --bind "$ro/tmp" "$hosttmp"' in text and bind in text
    assert (text.index('mount --bind "$ro/tmp" "$hosttmp"') < text.index('mount -t tmpfs tmpfs "$ro/tmp"')
            < text.index(bind) < text.index('mount --bind "$RW" "$ro$RW"') < text.index('chroot "$ro"'))
    assert 'mount --bind "$hosttmp"' not in vm._script("/r/m", "k1", ["/v/bin/python"], {}, "/src")


def test_time_factor_scales_harness_deadlines(monkeypatch):
    monkeypatch.delenv(timefactor.ENV, raising=False)
    assert timefactor.scaled(5.0) == 5.0 and timefactor.scaled(None) is None
    monkeypatch.setenv(timefactor.ENV, "10")
    assert timefactor.scaled(5.0) == 50.0
    monkeypatch.setenv(timefactor.ENV, "0.5")
    assert timefactor.scaled(5.0) == 5.0                 # never shorter than on a real machine
    monkeypatch.setenv(timefactor.ENV, "fast")
    with pytest.raises(ValueError, match="SOCKLAB_TIME_FACTOR='fast': not a number"):
        timefactor.scaled(1.0)


def _fake_boots(monkeypatch, tmp_path, booted):
    """vm.boot over a fake _boot_once whose n-th call gets as far as the guest's command when booted[n]."""
    calls = []

    def boot_once(vng, image, rwdir, name, inner, cwd, env, emulator, *rest):
        console = os.path.join(rwdir, f"{name}.console.{emulator.lower()}.txt")
        with open(console, "w") as fh:
            fh.write(f"boot {len(calls)}\n")
        ok = booted[len(calls)]
        calls.append(emulator)
        return vm.GuestRun(emulator, 0 if ok else 255, 20.0 if ok else None, 30.0, console)
    monkeypatch.setattr(vm, "_vng", lambda: "vng")
    monkeypatch.setattr(vm, "_boot_once", boot_once)
    monkeypatch.setattr(vm, "kvm_usable", lambda: False)
    return calls


def test_a_tcg_boot_that_dies_before_the_command_is_started_once_more(monkeypatch, tmp_path):
    """A guest kernel that oopses at boot under TCG (7.3: int3 in sched_clock_cpu) gets one more
    boot; the dead boot's console is kept. A second death is the answer, not retried again."""
    calls = _fake_boots(monkeypatch, tmp_path, [False, True])
    run = vm.boot("/k/vmlinuz", str(tmp_path), "k1", ["true"], cwd="/")
    assert calls == ["TCG", "TCG"] and run.boot == 20.0 and run.exit_code == 0
    assert run.died_at_boot == [str(tmp_path / "k1.console.tcg-died-1.txt")]
    assert open(run.died_at_boot[0]).read() == "boot 0\n" and open(run.console).read() == "boot 1\n"

    calls = _fake_boots(monkeypatch, tmp_path, [False, False, True])
    run = vm.boot("/k/vmlinuz", str(tmp_path), "k2", ["true"], cwd="/")
    assert calls == ["TCG", "TCG"] and run.boot is None and run.exit_code == 255

    calls = _fake_boots(monkeypatch, tmp_path, [True])
    run = vm.boot("/k/vmlinuz", str(tmp_path), "k3", ["true"], cwd="/")
    assert calls == ["TCG"] and run.died_at_boot == []


@pytest.mark.parametrize("qemu_exit, usable", [(0, True), (134, False)])
def test_kvm_is_tried_only_where_a_paused_qemu_gets_through_its_set_up(monkeypatch, tmp_path, qemu_exit, usable):
    """kvm_usable() asks QEMU itself (the CPU model vng uses under KVM, told to quit by its monitor):
    a QEMU that aborts there (this machine's nested backend: "failed to set MSR 0x10a") means TCG from
    the start, not a KVM boot through vng that takes 3.6 s to fail."""
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\nread cmd\necho "$cmd" > {tmp_path}/said\nexit {qemu_exit}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    access = os.access
    monkeypatch.setattr(vm.os, "access", lambda path, mode: path == "/dev/kvm" or access(path, mode))
    vm.kvm_usable.cache_clear()
    try:
        assert vm.kvm_usable() is usable
        assert "-accel kvm -cpu host,topoext=on" in (tmp_path / "argv").read_text()
        assert (tmp_path / "said").read_text() == "quit\n"
    finally:
        vm.kvm_usable.cache_clear()


def test_an_interrupted_matrix_ends_the_host_run_it_started(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM while the host's own catalogue runs: its pytest gets SIGTERM (and cleans up its
    labs), not left running without the matrix."""
    from harness.kernels import matrix
    pidfile = tmp_path / "pid"
    argv = [sys.executable, "-c", f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"]

    def progress(elapsed, boot, emulator):
        raise KeyboardInterrupt("SIGTERM")
    with pytest.raises(KeyboardInterrupt):
        matrix._run_here(argv, str(tmp_path / "host.log"), progress)
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    os.kill(pid, 9)
    pytest.fail("the host run's pytest outlived the interrupted matrix")
