"""Makes the end-to-end fixtures and the ``requires_docker`` marker work in every test module."""
import pytest
import structlog

from dsfw.testing.e2e import dsfw, dsfw_factory, require_docker  # noqa: F401  (fixtures)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_docker: needs dockerd and the docker CLI; skipped without them, "
        "failed instead when the CI environment variable is set")


def pytest_runtest_setup(item):
    if item.get_closest_marker("requires_docker") is not None:
        require_docker()


@pytest.fixture(autouse=True)
def _isolated_structlog():
    """A test that configures structlog (the CLI's main() does) must not change later tests'.

    ``capture_logs`` keeps the configured level filter, so a WARNING-only set-up
    left behind by one test would hide the info events another test looks for.
    """
    previous = structlog.get_config()
    yield
    structlog.configure(**previous)
