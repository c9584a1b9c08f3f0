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


@pytest.fixture(autouse=True)
def _trial_mktemp_outside_the_checkout(monkeypatch, tmp_path):
    """trial's ``TestCase.mktemp`` is relative to the working directory, which under
    pytest is the checkout: every run left ``tests.test_x/`` directories beside the
    sources. Under pytest it hands out paths inside the test's own ``tmp_path``."""
    from twisted.trial.unittest import SynchronousTestCase
    counter = iter(range(10**6))
    monkeypatch.setattr(SynchronousTestCase, "mktemp",
                        lambda self: str(tmp_path / f"mktemp-{next(counter)}"))
