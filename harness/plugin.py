"""The pytest plugin: fixtures, markers, options and the run's summary. A thin layer over `harness`.

Registered through the ``pytest11`` entry point, so an installed socklab is active in any pytest
run; the root conftest.py only points pytest at the cases. So that a session without labs (unit
tests, another project's tests in the same venv) pays nothing for it, the lab side (pyroute2,
namespaces) is imported by the first fixture that builds one, the report side at session end, and
the SIGTERM handler is installed by the first lab.
"""

from __future__ import annotations

import functools
import gc
import os
import re
import signal
import sys
import threading

import pytest

from . import background, ordering, privileges, selection, sysctls, tracefs
from .errors import SocklabError, TraceUnavailable
from .forkserver import Fresh
from .names import default_run_name
from .profiles import sysctls_for, where_of

_FRESH = Fresh()        # the interpreter's state before pytest captures and records: for the fork server

FAMILY_IDS = ("ipv4", "ipv6")
LAB_KEY = pytest.StashKey()         # the case's Lab, for the report hook
FAILED_KEY = pytest.StashKey()      # True once the case's call failed
OUTCOME_KEY = pytest.StashKey()     # the case's record.Outcome as last reported
WRITES_KEY = pytest.StashKey()      # the background writes of the case's case.json still under way


def pytest_addoption(parser):
    group = parser.getgroup("socklab", "socklab: Linux TCP socket-behaviour cases")
    group.addoption("--socklab-reports", default="reports", help="where runs write their artifacts (default: reports)")
    group.addoption("--socklab-run", default=None, help="name of this run's folder under the reports folder")
    group.addoption("--socklab-ss-each-step", action="store_true", help="take an ss snapshot after every step")
    group.addoption("--socklab-sysctl", action="append", default=[], metavar="KEY=VALUE",
                    help="a sysctl applied inside every test namespace (repeatable)")
    group.addoption("--socklab-profile", default=None,
                    help="named settings profile applied in every test namespace (see harness/profiles.py)")
    group.addoption("--socklab-baseline", default=None, metavar="FOLDER",
                    help="fail the session when a case behaves differently from FOLDER/<kernel>.json")
    group.addoption("--socklab-slow", action="store_true", help="also run cases marked slow (e.g. a full 2MSL wait)")
    group.addoption("--socklab-spawn-workers", action="store_true",
                    help="start each xdist worker as a new interpreter, xdist's own way, instead of forking "
                         "it from a process that has imported pytest and the harness (harness/forkserver.py)")
    group.addoption("--experiment", action="append", default=[], metavar="ID",
                    help="run only the cases of experiment ID, e.g. CONN-DATA (repeatable; ids also work with -k)")
    group.addoption("--article", action="append", default=[], metavar="ID",
                    help="run only the cases of article ID, e.g. 000 (repeatable)")


def pytest_configure(config):
    selection.check_options(config)
    for line in ("article(id): the article an experiment comes from (000..004)",
                 "experiment(id): the experiment id from EXPERIMENTS.md",
                 "claim(judge): a judge (harness.judge.judge) of an article's claim, run on the case's record",
                 "families(*names): restrict the family parametrisation, e.g. families('ipv4')",
                 "no_report: keep this test out of the run's results and report (the harness's own tests)",
                 "slow: a case that waits out a long protocol timer; runs only with --socklab-slow",
                 "timing_dependent(aspect, why=...): this aspect of the case's behaviour (segments, ss, "
                 "transitions, steps) follows the machine's timing; comparisons name it but do not count it; "
                 "with emulated=True only in runs under an emulator",
                 "privileged: needs root (set on every case that uses a lab)",
                 "expected_duration(seconds): how long a test takes, for the longest-first order under "
                 "xdist when no previous run says (harness/ordering.py)"):
        config.addinivalue_line("markers", line)
    if hasattr(config, "workerinput"):
        run = config.workerinput["socklab_run"]
        if config.workerinput.get("socklab_loadgroup"):
            config.option.loadgroup = True
    else:
        run = config.getoption("--socklab-run") or default_run_name()
    config.socklab_run = run
    profile, extra = config.getoption("--socklab-profile"), config.getoption("--socklab-sysctl")
    try:
        config.socklab_sysctls = sysctls_for(profile, extra)
    except SocklabError as exc:
        raise pytest.UsageError(str(exc)) from None
    if not hasattr(config, "workerinput"):
        # Once per run, before any case: a bad key or value is one line here, not a failure per case.
        problems = sysctls.check(config.socklab_sysctls, lambda key: where_of(key, profile, extra))
        if problems:
            raise pytest.UsageError("\n".join(problems))
    config.socklab_dir = os.path.join(os.path.abspath(config.getoption("--socklab-reports")), run)
    if not hasattr(config, "workerinput"):
        problem = _unwritable(config.socklab_dir)
        if problem:
            raise pytest.UsageError(problem)
        if getattr(config.option, "numprocesses", None):
            config.socklab_durations = ordering.previous_durations(os.path.dirname(config.socklab_dir),
                                                                   exclude=run,
                                                                   baseline=lambda: _baseline_file(config))
            ordering.one_at_a_time(config)
            ordering.grouped(config)
            _fork_workers(config)
            _freeze_imports("controller")    # what its start made: pytest walks the rest at the end
            # The xdist controller builds no lab, yet a SIGTERM to it must unwind too, so the run
            # is reported as interrupted (results.json, report, summary) instead of killed silently.
            _unwind_on_sigterm()
            _preload_baseline(config)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Start the fork server for xdist's workers as early as a run shows it will have some: its
    imports (~0.4 s of CPU) then overlap the rest of pytest's start-up on another core. Confirmed or
    stopped by _fork_workers() at configure time."""
    ns = early_config.known_args_namespace
    if (_in_xdist_worker() or not getattr(ns, "numprocesses", None)
            or getattr(ns, "socklab_spawn_workers", False) or getattr(ns, "collectonly", False)):
        return
    from .forkserver import Server
    early_config.socklab_early_forkserver = Server(fresh=_FRESH)


def _in_xdist_worker() -> bool:
    """This process is an xdist worker (a `python -c` that xdist's bootstrap runs), not a pytest run
    started from within one (pytester's subprocess inherits PYTEST_XDIST_WORKER too)."""
    return bool(os.environ.get("PYTEST_XDIST_WORKER")) and sys.argv[:1] == ["-c"]


def _baseline_file(config) -> str | None:
    """The baseline results of this kernel (or the nearest older one) in --socklab-baseline, if any."""
    folder = config.getoption("--socklab-baseline")
    if not folder:
        return None
    from .baseline import find
    from .kernels.version import running
    return find(folder, running())[0]


def _fork_workers(config) -> None:
    """Have xdist's local workers forked from a warm process (harness/forkserver.py): only for the
    plain `-n N` workers (the user gave no --tx of their own), and only if the server comes up."""
    tx = getattr(config.option, "tx", None)
    early = getattr(config, "socklab_early_forkserver", None)
    if config.getoption("--socklab-spawn-workers") or not tx or any(spec != "popen" for spec in tx):
        if early is not None:
            early.stop()
        return
    from .forkserver import Server
    server = early or Server()
    if not server.wait_ready():
        server.stop()
        config.issue_config_time_warning(pytest.PytestWarning(
            f"socklab: the fork server for xdist workers did not come up (exit status {server.proc.returncode}); "
            "the workers start as new interpreters"), stacklevel=2)
        return
    config.socklab_forkserver = server
    config.option.tx = [f"popen//python={server.spec()}"] * len(tx)


_previous_sigterm: list = []


def _unwind_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so fixtures tear down and every namespace and instance is removed.
    Installed by the first lab or host pair of the session (main thread only), restored at its end."""
    if not _previous_sigterm and threading.current_thread() is threading.main_thread():
        _previous_sigterm.append(signal.signal(signal.SIGTERM, _sigterm))


def _unwritable(run_dir: str) -> str | None:
    """Why the run folder cannot be made or written (one line), or None. Leaves nothing behind."""
    existing = run_dir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as exc:
        return (f"--socklab-reports: cannot write the run folder {run_dir}: "
                f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}")
    finally:
        folder = run_dir
        while folder != existing and os.path.isdir(folder):     # only the folders made here, if empty
            try:
                os.rmdir(folder)
            except OSError:
                break
            folder = os.path.dirname(folder)
    return None


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def pytest_collection_finish(session):
    _freeze_imports()
    _start_lab_helpers(session)


def _start_lab_helpers(session) -> None:
    """A process that will build labs starts its socket-program launcher (a new interpreter, ~45 ms
    on another core) and its first tracefs instance now, while it imports the lab side for its
    first case, instead of in that case's set-up."""
    config = session.config
    if config.option.collectonly or not any("lab" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    config.socklab_import_ahead = True      # when the first case's steps begin (pytest_runtest_call)
    if privileges.missing() or tracefs.ensure_mounted():
        return                      # the cases skip, or say why they cannot trace, at their set-up
    from . import launcher
    launcher.launcher()
    tracefs.pool()


def _import_ahead(config) -> None:
    from . import importahead
    config.socklab_import_ahead = False
    if hasattr(config, "workerinput"):      # an xdist worker: the controller writes the report
        importahead.start(importahead.CASE)
    else:
        importahead.start(importahead.CASE + importahead.RUN, then=lambda: _preload_baseline(config))


def _preload_baseline(config) -> None:
    """The process that checks the run against its baseline at the end (the xdist controller, or a
    serial session with labs) reads the baseline while the cases run."""
    folder = config.getoption("--socklab-baseline")
    if folder and not config.option.collectonly:
        from .baseline import preload
        preload(folder)


_frozen: list = []


def _freeze_imports(reason: str = "collection") -> None:
    """Move the objects that exist now (modules, classes: what imports made) out of the collector's
    reach. pytest 8.4 runs gc.collect() five times at the end of a session (its unraisable-exception
    check), and each full collection would walk pyroute2's and pytest's objects again: ~0.1 s of a
    one-case run. Done after collection and once after the lab side is imported."""
    if reason not in _frozen:
        _frozen.append(reason)
        gc.freeze()


@pytest.hookimpl(optionalhook=True)      # an xdist hook: pytest without xdist must not reject it
def pytest_configure_node(node):
    """xdist: every worker writes into the controller's run folder."""
    node.workerinput["socklab_run"] = node.config.socklab_run
    node.workerinput["socklab_durations"] = getattr(node.config, "socklab_durations", {})
    # A worker learns --dist from its own command line, not from the controller's options: tell it
    # when the plugin chose loadgroup, so it names the grouped cases' ids as that scheduling needs.
    node.workerinput["socklab_loadgroup"] = node.config.getvalue("dist") == "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist: under the plugin's loadgroup, cases start as soon as one worker has collected
    (harness/scheduler.py) instead of after the last one."""
    if config.getvalue("dist") == "loadgroup" and getattr(config, "socklab_loadgroup", False):
        from .scheduler import EarlyStart
        return EarlyStart(config, log)
    return None


def pytest_generate_tests(metafunc):
    if "family" in metafunc.fixturenames:
        m = metafunc.definition.get_closest_marker("families")
        fams = m.args if m else FAMILY_IDS
        metafunc.parametrize("family", fams, ids=list(fams))


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow case: run with --socklab-slow")
    for item in items:
        _mark_from_judges(item)
        exp = item.get_closest_marker("experiment")
        if exp and exp.args:
            item.extra_keyword_matches.add(exp.args[0])     # -k "CONN-NOLISTEN or CONN-DATA"
        if item.get_closest_marker("slow") and not config.getoption("--socklab-slow"):
            item.add_marker(skip_slow)
    # Runs before pytest's own -k/-m deselection (a plugin's hooks are called before the builtins'), and
    # after the experiment/article markers exist: -k CONN-DATA and -k 000 match them.
    selection.add_keywords(items)
    selection.select(config, items)
    if hasattr(config, "workerinput"):      # xdist hands cases out in this order (harness/ordering.py)
        ordering.waiting_first(items, config.workerinput.get("socklab_durations") or {})


def _judges_of(item) -> list:
    from .judge import Judge
    return [m.args[0] for m in item.iter_markers("claim") if m.args and isinstance(m.args[0], Judge)]


def _check_claims(item):
    """A claim marker holds a judge; anything else (a claim's text, say) fails the case, saying how."""
    from .judge import Judge
    for m in item.iter_markers("claim"):
        if not m.args or not isinstance(m.args[0], Judge):
            what = repr(m.args[0]) if m.args else "nothing"
            pytest.fail(f"{item.nodeid}: @pytest.mark.claim holds {what}: a claim case must carry a judge via "
                        f"@pytest.mark.claim(judge_fn), judge_fn decorated with @harness.judge.judge(...)",
                        pytrace=False)


def _mark_from_judges(item):
    """A case's experiment and article markers follow from its judges (every article of the
    experiment's catalogue row), so `-m`, `-k` and the report see them without repeating them."""
    have_exp = {m.args[0] for m in item.iter_markers("experiment")}
    have_art = {m.args[0] for m in item.iter_markers("article")}
    for j in _judges_of(item):
        if j.experiment not in have_exp:
            item.add_marker(_marker("experiment", j.experiment))
            have_exp.add(j.experiment)
    from .articles import articles_of
    for exp in sorted(have_exp):
        for art in articles_of(exp):
            if art not in have_art:
                item.add_marker(_marker("article", art))
                have_art.add(art)


@functools.lru_cache(maxsize=None)
def _marker(name: str, value: str) -> pytest.MarkDecorator:
    """One (immutable) marker per experiment or article id, shared by its cases: `pytest.mark.NAME`
    checks the name against the registered markers each time it is looked up."""
    return getattr(pytest.mark, name)(value)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _check_claims(item)
    if {"lab", "hosts", "privileged"} & set(getattr(item, "fixturenames", ())):
        reason = privileges.missing()
        if reason:
            # Raised here rather than in a fixture, so every case shares one location and `-rs`
            # prints the reason once.
            raise pytest.skip.Exception(reason)


@pytest.hookimpl(tryfirst=True)     # before junitxml writes its file: the baseline check is in it
def pytest_sessionfinish(session):
    _flush(session, releases=False)     # every case's files are on disk before the results are built,
    _write_run_report(session)
    _flush(session, releases=True)      # while the kernel's releases went on


def _flush(session, *, releases: bool) -> None:
    try:
        background.flush(releases=releases)
    except Exception as exc:    # an artifact that could not be written fails the run, visibly
        session.config.socklab_artifact_error = f"socklab: writing a case's artifacts failed: {exc!r}"
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    """Once the controller's loop has ended no worker is started again: its fork server exits while
    the results are built (pytest_unconfigure waits for it)."""
    try:
        return (yield)
    finally:
        server = getattr(session.config, "socklab_forkserver", None)
        if server is not None:
            server.close()


def pytest_unconfigure(config):
    # After every fixture, an interrupted case's too, has been torn down.
    tracefs.close_pool()
    if "harness.launcher" in sys.modules:
        sys.modules["harness.launcher"].close()      # the socket-program launcher of this process
    if _previous_sigterm:
        signal.signal(signal.SIGTERM, _previous_sigterm.pop())
    for attr in ("socklab_forkserver", "socklab_early_forkserver"):
        server = getattr(config, attr, None)
        if server is not None:
            server.stop()           # a second stop of the same server does nothing


def _own_version(config) -> str | None:
    """socklab's version as pytest found it when it loaded this plugin from its entry point
    (results.version_of: the metadata read as text)."""
    from .results import version_of
    me = sys.modules[__name__]
    for plugin, dist in config.pluginmanager.list_plugin_distinfo():
        if plugin is me:
            return version_of(dist)
    return None


def _write_run_report(session):
    """results.json and index.html of the run: once, on the controller (xdist workers only write cases)."""
    config = session.config
    if hasattr(config, "workerinput"):
        return
    from .report import summary_line, write_report
    from .results import build_results, write_results
    run_dir = config.socklab_dir
    if not os.path.isdir(os.path.join(run_dir, "cases")):
        return
    try:
        summarised: set = set()
        results = build_results(run_dir, profile=config.getoption("--socklab-profile"),
                                interrupted=session.exitstatus == pytest.ExitCode.INTERRUPTED, summarised=summarised,
                                harness=_own_version(config))
        if not results["cases"]:
            return              # a session of plain tests (unit tests): nothing to report
        write_results(run_dir, results=results)
        ordering.remember_durations(os.path.dirname(run_dir), results["cases"])
        config.socklab_summary = summary_line(results, write_report(run_dir, results, summarised))
    except (OSError, ValueError, SocklabError) as exc:
        config.socklab_summary = f"socklab: could not write the report of {run_dir}: {exc}"
        return
    folder = config.getoption("--socklab-baseline")
    if folder:
        from .baseline import check
        ok, text = check(run_dir, folder, run=dict(results, path=os.path.join(run_dir, "results.json")))
        config.socklab_baseline = (ok, text)
        _report_baseline_check(config, ok, text)
        if ok is False and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _report_baseline_check(config, ok, text):
    """The baseline check as a test report of its own ("socklab::baseline"): passed, failed with the
    comparison, or skipped with the reason (no baseline for this kernel version, changed since an
    older one, other settings), so it shows in pytest's summary line, `-rs` and JUnit, never silently."""
    outcome = {True: "passed", False: "failed", None: "skipped"}[ok]
    first = text.splitlines()[0] if text else ""
    longrepr = {"passed": None, "failed": text, "skipped": ("socklab", 0, f"Skipped: {first}")}[outcome]
    rep = pytest.TestReport(nodeid="socklab::baseline", location=("socklab", None, "baseline check"), keywords={"socklab": 1},
                            outcome=outcome, longrepr=longrepr, when="call", sections=[], duration=0.0,
                            user_properties=[("baseline", first)])
    config.hook.pytest_runtest_logreport(report=rep)


def pytest_terminal_summary(terminalreporter, config, exitstatus):
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and selection.given(config):
        terminalreporter.write_line(selection.nothing_matched(config), red=True)
    d = config.socklab_dir
    if os.path.isdir(d):
        terminalreporter.write_sep("-", "socklab")
        terminalreporter.write_line(f"artifacts: {d}")
        if getattr(config, "socklab_summary", None):
            terminalreporter.write_line(config.socklab_summary)
    if getattr(config, "socklab_artifact_error", None):
        terminalreporter.write_line(config.socklab_artifact_error, red=True)
    if getattr(config, "socklab_baseline", None):
        ok, text = config.socklab_baseline
        if ok is False:
            terminalreporter.write_sep("=", "socklab baseline: FAILED", red=True)
            terminalreporter.write_line(text)
        else:
            terminalreporter.write_line(f"socklab baseline: {text}")


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture
def lab_sysctls(request) -> dict:
    """Name: lab_sysctls. Scope: function. Depends: the --socklab-sysctl options.

    Sysctls set inside both namespaces of the case before anything runs (the run's profile and
    --socklab-sysctl items). Extend it in a case module, keeping the run's settings:

        @pytest.fixture
        def lab_sysctls(lab_sysctls):
            return {**lab_sysctls, "net.ipv4.tcp_fin_timeout": 1}
    """
    return dict(request.config.socklab_sysctls)


@pytest.fixture
def lab_mtu() -> int:
    """Name: lab_mtu. Scope: function. Depends: nothing. The link MTU (override to test MSS)."""
    return 1500


@pytest.fixture
def lab_topology():
    """Name: lab_topology. Scope: function. Depends: nothing.

    None (the default): client and server on one veth link. A `harness.topology.Routed` puts a
    router namespace between them (client - router - server, two prefixes, routes via the router).
    Override it in a module, or for one case with `pytest.mark.parametrize`:

        @pytest.mark.parametrize("lab_topology", [Routed(server_link_mtu=1280, capture="client")])
        def test_pmtu(lab, family): ...
    """
    return None


@pytest.fixture
def privileged():
    """Name: privileged. Scope: function. Skips the case with one reason line without root/caps."""
    reason = privileges.missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def hosts(privileged, lab_mtu, lab_sysctls, lab_topology):
    """Name: hosts. Scope: function. Depends: privileged, lab_mtu, lab_sysctls, lab_topology.

    The bare host pair (no programs, no observers):

        def test_link(hosts):
            assert hosts.client.get_sysctl("net.ipv6.conf.all.accept_dad") == "0"
    """
    from .topology import Topology
    _freeze_imports("lab")
    _unwind_on_sigterm()
    with Topology(mtu=lab_mtu, sysctls=lab_sysctls, routed=lab_topology) as topo:
        yield topo


def _case_dir(config, nodeid: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.replace("::", "__")).strip("_")
    return os.path.join(config.socklab_dir, "cases", safe)


@pytest.fixture
def lab(request, privileged, lab_mtu, lab_sysctls, lab_topology):
    """Name: lab. Scope: function. Depends: privileged, lab_mtu, lab_sysctls, lab_topology, and `family`
    if the case takes it.

    The whole lab of one case: hosts, a client and a server program, capture, ss, state trace; its
    artifacts go to reports/<run>/cases/<test>/:

        def test_connect(lab):
            s = lab.server.socket(); s.bind(50000); s.listen()
            lab.client.socket().connect(lab.hosts.server, 50000)
            lab.expect_segments("client > server S 0:0(0)\\n...")
    """
    from .lab import Lab
    _freeze_imports("lab")
    _unwind_on_sigterm()
    family = request.getfixturevalue("family") if "family" in request.fixturenames else "ipv4"
    with Lab(family=family, mtu=lab_mtu, sysctls=lab_sysctls, artifacts_dir=_case_dir(request.config, request.node.nodeid),
             ss_each_step=request.config.getoption("--socklab-ss-each-step"), name=request.node.nodeid,
             routed=lab_topology) as the_lab:
        node = request.node
        the_lab.judges = _judges_of(node)
        exp = node.get_closest_marker("experiment")
        the_lab.experiment = exp.args[0] if exp else None
        the_lab.articles = sorted({m.args[0] for m in node.iter_markers("article")})
        the_lab.timing_dependent = _timing(node)
        node.stash[LAB_KEY] = the_lab
        yield the_lab
        if node.stash.get(FAILED_KEY, False):
            return                   # the steps failed: nothing to judge
        if the_lab.judges:
            from .record import Unobservable
            missing = None
            try:
                the_lab.judge()
            except Unobservable as exc:
                missing = str(exc)
            if missing and the_lab.trace_unavailable:
                pytest.skip(f"claim not judged: {missing}")
            if missing:
                pytest.fail(f"the case could not observe what its claim needs: {missing}", pytrace=False)
        for v in the_lab.verdicts:
            node.user_properties.append(("verdict", f"{v.verdict}: {v.evidence}"))


@pytest.fixture
def client(lab):
    """Name: client. Scope: function. Depends: lab. The client host's socket program (lab.client)."""
    return lab.client


@pytest.fixture
def server(lab):
    """Name: server. Scope: function. Depends: lab. The server host's socket program (lab.server)."""
    return lab.server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A case stopped by Ctrl-C or SIGTERM is recorded as pytest says: interrupted (pytest makes no report).
    When the process's first case's steps begin, what the rest of the run needs is imported in a thread
    while they wait for the kernel (harness/importahead.py); the process that checks the run against
    its baseline (a serial session) then starts reading it."""
    if getattr(item.config, "socklab_import_ahead", False) and "lab" in getattr(item, "fixturenames", ()):
        _import_ahead(item.config)
    try:
        return (yield)
    except KeyboardInterrupt:
        if _is_case(item):
            _set_outcome(item, "call", "interrupted", "interrupted (KeyboardInterrupt or SIGTERM) during the case")
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """After the case's last report: its summary and page, in the background (results.write_summary).
    Before it: the lab's tracefs pool prepares a spare instance only if another test follows in this
    process (a one-case run does not make, and wait at exit to remove, an instance nobody uses)."""
    tracefs.more_cases(nextitem is not None)
    try:
        return (yield)
    finally:
        if _is_case(item) and hasattr(item.config, "socklab_dir"):
            the_lab = item.stash.get(LAB_KEY, None)
            writes = item.stash.get(WRITES_KEY, []) + ([the_lab.written] if the_lab is not None and the_lab.written else [])
            background.submit(_summarise, item.config.socklab_dir, _case_dir(item.config, item.nodeid), writes)
            if the_lab is not None:
                # Every report of the case is made: the lab (its frames, segments, snapshots) need not
                # live until the session ends, where pytest's final collections would walk it.
                del item.stash[LAB_KEY]


def _summarise(run_dir: str, case_dir: str, writes: list) -> None:
    from .results import write_summary
    for fut in writes:
        if fut.exception() is not None:
            return              # the write's own error is what background.flush() reports
    if os.path.isfile(os.path.join(case_dir, "case.json")):
        try:
            write_summary(run_dir, case_dir)
        except Exception:       # noqa: BLE001 - a summary only saves work: without one, the run's end
            pass                # reads case.json as before, and reports any problem with it there


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if call.excinfo is not None and isinstance(call.excinfo.value, TraceUnavailable):
        # The kernel cannot show transitions here: the case is skipped, at the case's own location.
        path, lineno, _ = item.reportinfo()
        rep.outcome, rep.longrepr = "skipped", (str(path), (lineno or 0) + 1, f"Skipped: {call.excinfo.value}")
    if rep.when == "call" and (rep.failed or rep.skipped):
        item.stash[FAILED_KEY] = True       # a failed or skipped case (no trace) owes no verdict
    the_lab = item.stash.get(LAB_KEY, None)
    if the_lab is not None and rep.when == "call" and rep.failed and the_lab.artifacts_dir:
        rep.sections.append(("socklab", f"artifacts: {the_lab.artifacts_dir}"))
    _record_outcome(item, rep)


def _record_outcome(item, rep):
    """The pytest outcome of a case, into its record (case.json), from each phase's report."""
    if not _is_case(item):
        return              # not a case (a unit test, a harness test): nothing to report
    if rep.when == "setup" and rep.passed:
        # Until the call's report replaces it: a run stopped during this case (Ctrl-C, SIGTERM, kill)
        # records it as the case in flight, not as a case that never was.
        _set_outcome(item, "call", "interrupted", "the run stopped during this case (it made no report)")
        return
    if rep.when == "teardown" and rep.passed and item.stash.get(OUTCOME_KEY, None) is not None:
        return
    word = outcome_word(rep)
    longrepr = str(rep.longrepr)[:20000] if rep.failed or rep.skipped else None
    if rep.skipped and isinstance(rep.longrepr, tuple):
        longrepr = rep.longrepr[2]
    if hasattr(rep, "wasxfail"):
        longrepr = f"xfail: {rep.wasxfail or '(no reason given)'}" + (
            f"\n{rep.longrepr}" if rep.longrepr and word == "xfailed" else "")
    if rep.when == "teardown" and rep.failed:
        word = "error"          # a skip at teardown (a claim not judged for want of a trace) stays a skip
    _set_outcome(item, rep.when, word, longrepr)


def _is_case(item) -> bool:
    """A case of the run (it has a lab or an experiment), not a unit or harness test."""
    return not item.get_closest_marker("no_report") and (
        "lab" in getattr(item, "fixturenames", ()) or bool(item.get_closest_marker("experiment")))


def _timing(item) -> dict:
    """{aspect: why} of the case's timing_dependent markers; one with `emulated=True` only counts in a
    run under an emulator (SOCKLAB_EMULATOR, set by socklab matrix in a guest), where the emulated
    steps can outlast a kernel timer that no setting lengthens."""
    emulated = bool(os.environ.get("SOCKLAB_EMULATOR"))
    return {m.args[0]: m.kwargs.get("why", "") for m in item.iter_markers("timing_dependent")
            if emulated or not m.kwargs.get("emulated")}


def _alone(item, outcome):
    """The plugin's own record of a case whose lab recorded nothing (never built, or not yet)."""
    from .record import CaseRecord
    exp = item.get_closest_marker("experiment")
    return CaseRecord(name=item.nodeid, lab=False, outcome=outcome,
                      family=item.callspec.params.get("family") if hasattr(item, "callspec") else None,
                      experiment=exp.args[0] if exp else None,
                      articles=sorted({m.args[0] for m in item.iter_markers("article")}),
                      judges=[j.id for j in _judges_of(item)], timing_dependent=_timing(item))


def _set_outcome(item, when: str, word: str, longrepr: str | None) -> None:
    """Put the case's outcome into its record. Before the lab has handed its record to the
    background writer, the lab takes the outcome (and a small record of the plugin's own is
    written now, so a run killed in between still shows the case); afterwards, or without a lab,
    the outcome is written into case.json, after the lab's writing where it is still under way."""
    from .record import Outcome, save_outcome
    outcome = Outcome(outcome=word, when=when, longrepr=longrepr)
    item.stash[OUTCOME_KEY] = outcome
    path = os.path.join(_case_dir(item.config, item.nodeid), "case.json")
    the_lab = item.stash.get(LAB_KEY, None)
    if the_lab is not None and the_lab.written is not None:
        item.stash.setdefault(WRITES_KEY, []).append(
            background.submit(save_outcome, path, outcome, _alone(item, outcome), the_lab.written))
        return
    if the_lab is not None:
        the_lab.outcome = outcome
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _alone(item, outcome).save(path)
        return
    save_outcome(path, outcome, _alone(item, outcome))


def outcome_word(rep) -> str:
    """pytest's own word for a report's outcome: passed, failed, skipped, xfailed, xpassed."""
    if hasattr(rep, "wasxfail"):
        return "xfailed" if rep.skipped else ("xpassed" if rep.passed else rep.outcome)
    return rep.outcome
