"""The tiny project checkpoint of the spine's tests, for probes that need a real encoder."""
from tests.benchmarks.conftest import tiny_encoder  # noqa: F401  (a fixture)
