"""Each name and each default is declared once; where a second copy must exist (the schema, for
its messages), a test holds it equal to the declaration."""

import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml

from bilaf.config import BOUNDARY_METHODS, PIPELINE_METHODS, SWEEP_PARAMS
from bilaf.export import export
from bilaf.features import extract
from bilaf.finetune import finetune
from bilaf.finetune_full import Recipe
from bilaf.report import write_report
from bilaf.scan import scan_pool
from bilaf.selection import METHOD_MODULES, get_method
from bilaf.selection.bilaf import CORE_METHODS

SCHEMA = yaml.safe_load((Path(__file__).parents[1] / "config" / "schema.yaml").read_text())
PROPS = SCHEMA["properties"]


def signature_defaults(fn) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def schema_defaults(block: dict) -> dict:
    return {key: spec["default"] for key, spec in block["properties"].items() if "default" in spec}


def test_schema_methods_are_the_pipeline_methods():
    assert sorted(PROPS["methods"]["items"]["enum"]) == sorted(PIPELINE_METHODS)
    assert sorted(PROPS["sweep"]["properties"]["method"]["enum"]) == sorted(BOUNDARY_METHODS)
    assert set(PROPS["sweep"]["properties"]["params"]["properties"]) == set(SWEEP_PARAMS)


def test_schema_core_methods_are_bilafs():
    swept = PROPS["sweep"]["properties"]["params"]["properties"]["core_method"]["items"]["enum"]
    assert swept == PROPS["bilaf"]["properties"]["core_method"]["enum"] == list(CORE_METHODS)
    assert SWEEP_PARAMS["core_method"] == CORE_METHODS


def test_pipeline_methods_cover_every_selection_method():
    assert {base for base, _ in PIPELINE_METHODS.values()} == set(METHOD_MODULES)
    for base, fixed in PIPELINE_METHODS.values():  # a variant only fixes options that exist
        assert set(fixed) <= set(inspect.signature(get_method(base)).parameters)


@pytest.mark.parametrize(
    ("block", "fn"),
    [
        (PROPS["activeft"], get_method("activeft")),
        (PROPS["bilaf"], get_method("bilaf")),
        (PROPS["backbone"], extract),
        (PROPS["finetune"], finetune),
        (PROPS["export"], export),
        (PROPS["dataset"], scan_pool),
        (PROPS["report"], write_report),
    ],
    ids=["activeft", "bilaf", "backbone", "finetune", "export", "scan", "report"],
)
def test_schema_defaults_equal_the_functions(block, fn):
    ours, theirs = schema_defaults(block), signature_defaults(fn)
    shared = ours.keys() & theirs.keys()
    assert shared, "the schema block and the function share no option"
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}


def test_schema_recipe_defaults_equal_the_recipe():
    ours = schema_defaults(PROPS["finetune"]["properties"]["full"])
    recipe = {f.name: f.default for f in dataclasses.fields(Recipe)}
    assert ours == {key: recipe[key] for key in ours}


def test_the_cli_leaves_every_stage_default_to_the_stage_function():
    from bilaf.cli import RECIPE_OPTIONS, build_parser

    parser = build_parser(["finetune"])
    args = parser.parse_args(
        ["finetune", "--features", "f", "--selection", "s", "--n-classes", "3", "--out", "o"]
    )
    unset = {"mode", "c", "max_iter", "knn_k", "knn_temperature"}
    assert not unset & vars(args).keys()  # absent: finetune()'s own defaults apply
    assert set(signature_defaults(finetune)) >= unset
    recipe = {flag[2:].replace("-", "_") for flag, _, _ in RECIPE_OPTIONS}
    full = build_parser(["finetune-full"]).parse_args(
        "finetune-full --source cifar10 --features f --test-features t --selection s "
        "--backbone b --n-classes 10 --checkpoint-dir c --out o".split()
    )
    assert not recipe & vars(full).keys()
    assert recipe <= {f.name for f in dataclasses.fields(Recipe)}


def test_the_help_shows_the_signature_defaults(capsys):
    from bilaf.cli import main

    with pytest.raises(SystemExit):
        main(["select", "bilaf", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for key, value in signature_defaults(get_method("bilaf")).items():
        if value is not None and key != "device":
            assert f"(default: {value})" in text, key
