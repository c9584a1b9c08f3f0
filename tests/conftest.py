"""Makes the end-to-end fixtures and the ``requires_docker`` marker work in every test module."""
from e2e_support import dsfw, dsfw_factory, require_docker  # noqa: F401  (fixtures)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_docker: needs dockerd and the docker CLI; skipped without them, "
        "failed instead when the CI environment variable is set")


def pytest_runtest_setup(item):
    if item.get_closest_marker("requires_docker") is not None:
        require_docker()
