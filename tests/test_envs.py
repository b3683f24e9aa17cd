"""envs/bilaf.yaml, the conda env of every rule, provides what the rules run, the project included.

Static checks: no conda here creates the env, so these hold the file to pyproject.toml's runtime
dependencies, the Makefile's torch pair, the bilaf package's imports and the rules.
"""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.workflow_helpers import ROOT

ENV_FILE = ROOT / "envs" / "bilaf.yaml"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def env_entries() -> tuple[list[str], list[str]]:
    """(conda dependencies, pip entries) of the env file."""
    conda, pip = [], []
    for entry in yaml.safe_load(ENV_FILE.read_text())["dependencies"]:
        if isinstance(entry, dict):
            pip += entry["pip"]
        else:
            conda.append(entry)
    return conda, pip


def env_requirements() -> dict[str, Requirement]:
    """Canonical name -> requirement of each pip entry that names a package."""
    reqs = [Requirement(e) for e in env_entries()[1] if not e.startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


def makefile_pins() -> dict[str, str]:
    """torch and torchvision as the Makefile installs them before the project."""
    text = (ROOT / "Makefile").read_text()
    return dict(re.findall(r"\b(torch|torchvision)==([\w.+]+)", text))


def test_every_runtime_dependency_is_in_the_env_with_a_compatible_pin():
    env = env_requirements()
    for dependency in map(Requirement, PROJECT["dependencies"]):
        name = canonicalize_name(dependency.name)
        assert name in env, f"{ENV_FILE.name} lacks {dependency} (pyproject.toml)"
        pinned = [s.version for s in env[name].specifier if s.operator == "=="]
        if pinned:  # an exact pin must lie in the project's range
            assert pinned[0] in dependency.specifier, (env[name], dependency)
        else:  # else the same range
            assert env[name].specifier == dependency.specifier, (env[name], dependency)


def test_torch_is_pinned_to_the_makefiles_pair():
    pins = makefile_pins()
    assert set(pins) == {"torch", "torchvision"}
    env = env_requirements()
    for name, version in pins.items():
        assert str(env[name].specifier) == f"=={version}", (env[name], f"Makefile: {version}")


def test_the_envs_python_meets_requires_python():
    (python,) = [e for e in env_entries()[0] if re.match(r"python\b", e)]
    version = re.fullmatch(r"python\s*=+\s*([\d.]+)", python)[1]
    assert version in SpecifierSet(PROJECT["requires-python"]), python


def test_the_env_installs_the_project_editable_from_the_workflow_folder():
    """`-e ${VAR}` with VAR set by rules/common.smk to the workflow folder, expanded by pip.

    A relative path would be read from the copy snakemake makes of the env file under
    .snakemake/conda, not from envs/.
    """
    (entry,) = [e for e in env_entries()[1] if e.startswith("-e ")]
    variable = re.fullmatch(r"-e \$\{([A-Z0-9_]+)\}", entry)
    assert variable, f"{entry!r}: expected -e ${{VARIABLE}}"
    common = (ROOT / "rules" / "common.smk").read_text()
    assert f"os.environ.update({variable[1]}=workflow.basedir)" in common
    # workflow.basedir, the Snakefile's folder, holds the project
    assert (ROOT / "Snakefile").exists() and PROJECT["name"] == "bilaf-pipeline"


def imported_distributions() -> dict[str, str]:
    """Distribution -> a module of the bilaf package importing it (third-party imports only)."""
    owners = packages_distributions()
    found = {}
    for path in sorted((ROOT / "bilaf").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {name.split(".")[0] for name in names}:
                if top in sys.stdlib_module_names or top == "bilaf":
                    continue
                assert top in owners, f"{path.relative_to(ROOT)} imports {top}: not installed"
                for dist in owners[top]:
                    found.setdefault(canonicalize_name(dist), str(path.relative_to(ROOT)))
    return found


def test_the_env_lists_every_package_the_bilaf_package_imports():
    env = env_requirements()
    missing = {d: m for d, m in imported_distributions().items() if d not in env}
    assert not missing, f"{ENV_FILE.name} lacks what these import: {missing}"


@pytest.mark.parametrize("path", sorted((ROOT / "rules").glob("*.smk")), ids=lambda p: p.name)
def test_every_rule_runs_in_the_env(path):
    blocks = re.split(r"^(?=rule \w+:)", path.read_text(), flags=re.M)
    rules = [b for b in blocks if b.startswith("rule ")]
    for block in rules:
        name = block.split(":")[0]
        assert re.search(r'^    conda:\n        "../envs/bilaf.yaml"$', block, re.M), name
    assert (path.parent / "../envs/bilaf.yaml").resolve() == ENV_FILE.resolve()
