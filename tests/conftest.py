import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def pytest_collection_modifyitems(items):
    # The harness's own tests build labs too, but they are not experiments: keep them out of the
    # run's results and report. (This hook sees every item of the session, so filter by path.)
    for item in items:
        if str(item.path).startswith(HERE):
            item.add_marker(pytest.mark.no_report)
