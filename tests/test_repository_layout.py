"""No folder of the repository may shadow an installed distribution.

Whenever the repository root is on ``sys.path`` (``python -c`` / ``python -m`` started there, a
notebook opened there, pytest), a top-level folder that is a regular package wins over any
installed distribution of that name: transformers 5.25 imports Hugging Face's ``kernels``, and
our top-level ``kernels/`` package once broke every model load. ``kernels/`` and ``export/`` stay
at the top level, but their code sits in ``kernels/src`` and ``export/src`` (pyproject's
package-dir), so the folders themselves are not packages.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
OURS = {"histoaug"}
MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")


def _importable_names(folder: Path) -> set[str]:
    """Top-level names that a regular package or a module file in ``folder`` provides."""
    names = set()
    for entry in folder.iterdir():
        if entry.is_dir() and (entry / "__init__.py").exists():
            names.add(entry.name)
        elif entry.is_file() and entry.suffix in MODULE_SUFFIXES:
            names.add(entry.name.split(".")[0])
    return names


def _installed_top_level_modules() -> set[str]:
    return {name for name in importlib.metadata.packages_distributions() if name.isidentifier()}


def test_the_root_provides_no_top_level_module_but_histoaug() -> None:
    # A regular package or a module at the root shadows a distribution of the same name, today or
    # after the next upstream release: only our own package may be one.
    assert _importable_names(REPO) == OURS, "top-level folders must not be packages (use a src/ folder inside)"


def test_no_folder_on_the_test_path_shadows_an_installed_distribution() -> None:
    # pytest puts tests/ on sys.path (rootdir-less test modules), scripts put their own folder there
    installed = _installed_top_level_modules() | set(sys.stdlib_module_names)
    for folder in (REPO, TESTS, REPO / "benchmarks", REPO / "scripts", REPO / "examples"):
        clashes = (_importable_names(folder) - OURS) & installed
        assert not clashes, f"{folder.name}/ would shadow installed modules: {sorted(clashes)}"


FIND_ORIGINS = """
import importlib.metadata, importlib.util, json, sys
found = {}
for name in sorted(n for n in importlib.metadata.packages_distributions() if n.isidentifier()):
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        continue
    if spec is not None:
        found[name] = [spec.origin] + list(spec.submodule_search_locations or [])
print(json.dumps(found))
"""


def test_every_installed_distribution_resolves_outside_the_repository_from_its_root() -> None:
    """The real check, as Python sees it from the root: every installed distribution's top-level
    module is found in site-packages, not in a folder of this repository."""
    result = subprocess.run([sys.executable, "-c", FIND_ORIGINS], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    environment = Path(sys.prefix).resolve()  # a venv inside the clone (.venv) is not the repository's code

    def in_repository(place: str | None) -> bool:
        path = Path(place).resolve() if place else None
        return bool(path) and path.is_relative_to(REPO) and not path.is_relative_to(environment)

    shadowed = {name: places for name, places in json.loads(result.stdout).items()
                if name not in OURS and any(in_repository(p) for p in places)}
    assert not shadowed, f"resolved inside the repository: {shadowed}"


def test_models_load_from_the_repository_root() -> None:
    """The issue's reproduction: from the root, with whatever transformers is installed (5.25 imports
    Hugging Face's ``kernels``), histoaug and the model classes import together."""
    code = ("import histoaug, histoaug.kernels, histoaug.export\n"
            "from transformers import CLIPTextModel\n"
            "from diffusers import UNet2DConditionModel\n"
            "import diffusers.loaders.peft\n"
            "import histoaug.kernels.attention, histoaug.export.artifact\n"
            "print(histoaug.kernels.__name__, histoaug.export.__name__)\n")
    for argv in (["-c", code], ["-"]):
        result = subprocess.run([sys.executable, *argv], input=code if argv == ["-"] else None, cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split() == ["histoaug.kernels", "histoaug.export"]


def test_the_cli_runs_as_a_module_from_the_repository_root() -> None:
    result = subprocess.run([sys.executable, "-m", "histoaug.cli.main", "info"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
