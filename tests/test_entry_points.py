"""Entry points stay thin: every gin-configurable function of train, sample, export, evaluate and data (the text
cache job) takes at most 12 parameters; further settings belong in small config dataclasses (docs/ARCHITECTURE.md,
'Entry points')."""

import importlib
import inspect
import pathlib

import gin

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("train", "sample", "export", "evaluate", "data")
MAX_PARAMETERS = 12


def configurable_functions() -> dict[str, object]:
    """`{registered name: function}` of the gin-configurable functions defined in PACKAGES."""
    for package in PACKAGES:
        for path in sorted((ROOT / "lumiere_jax" / package).glob("*.py")):
            if path.name != "__main__.py":
                importlib.import_module(f"lumiere_jax.{package}.{path.stem}")
    prefixes = tuple(f"lumiere_jax.{package}." for package in PACKAGES)
    found = {}
    for selector, configurable in gin.config._REGISTRY.items():  # private: gin lists them nowhere else
        function = configurable.wrapped
        if configurable.module.startswith(prefixes) and not inspect.isclass(function):
            found[selector] = function
    return found


def test_the_entry_points_are_found():
    names = {name.rsplit(".", 1)[-1] for name in configurable_functions()}
    assert {"train", "seqio_iterator", "sample_videos", "export_checkpoint", "evaluate"} <= names


def test_entry_points_take_at_most_12_parameters():
    counts = {name: len(inspect.signature(function).parameters) for name, function in configurable_functions().items()}
    too_many = {name: count for name, count in counts.items() if count > MAX_PARAMETERS}
    assert not too_many, (f"gin entry points with more than {MAX_PARAMETERS} parameters: {too_many}; group "
                          "settings into a gin-configurable config dataclass")
