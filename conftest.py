# The socklab pytest plugin is registered through the `pytest11` entry point of the installed
# package (pyproject.toml); nothing else is needed here. Cases live in cases/, the harness's own
# tests in tests/.

# pytest's own `pytester` fixture, for the harness tests that run pytest on small case files.
pytest_plugins = ("pytester",)
