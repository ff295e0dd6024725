"""Other kernels: fetching Debian's, booting them with virtme-ng, and `socklab matrix` over them.

version.py (a build's upstream version), debian.py (Debian's archive under a private APT_CONFIG),
spec.py (KERNEL arguments), vm.py (virtme-ng guests), matrix.py (the run and its report),
attribution.py (kernel behaviour or the emulator's timing).
"""
