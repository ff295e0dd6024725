import resource, time, os, pytest
OUT = os.environ.get("ZZ_OUT", "/work/main/reports/mx-probe2")
def cpu():
    r=resource.getrusage(resource.RUSAGE_SELF); c=resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime+r.ru_stime, c.ru_utime+c.ru_stime
def _w(line):
    with open(os.path.join(OUT, f"phase-{os.environ.get('PYTEST_XDIST_WORKER','ctl')}.txt"), "a") as f:
        f.write(f"{time.time():.3f} {line}\n")
def pytest_configure(config): _w(f"configure cpu {cpu()}")
def pytest_collection_finish(session): _w(f"collected cpu {cpu()}")
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    a=cpu(); w=time.time(); yield; b=cpu()
    _w(f"case {item.nodeid} wall {time.time()-w:.2f} self {b[0]-a[0]:.2f} children {b[1]-a[1]:.2f}")
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    a=cpu(); w=time.time(); yield; b=cpu(); _w(f"  setup wall {time.time()-w:.2f} self {b[0]-a[0]:.2f}")
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    a=cpu(); w=time.time(); yield; b=cpu(); _w(f"  teardown wall {time.time()-w:.2f} self {b[0]-a[0]:.2f}")
def pytest_unconfigure(config): _w(f"unconfigure cpu {cpu()}")
