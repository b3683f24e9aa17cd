import pytest

from bilaf.errors import InputError, OutputError
from bilaf.io import atomic_path, check_outputs_apart, is_plain_file, json_text, read_json


def write_json(path, obj, ours=is_plain_file):
    """What every JSON writer does: the text through atomic_path."""
    with atomic_path(path, ours) as tmp:
        tmp.write_text(json_text(obj))


def test_write_json_round_trip(tmp_path):
    write_json(tmp_path / "a" / "x.json", [3, 1, 2])
    assert read_json(tmp_path / "a" / "x.json") == [3, 1, 2]


def test_interrupted_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"old": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise RuntimeError("killed mid-write")
    assert read_json(target) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def is_store(path):
    return (path / "marker").is_file()


def test_atomic_directory_replaces_an_earlier_output_of_its_writer(tmp_path):
    target = tmp_path / "store"
    for content in ("first", "second"):
        with atomic_path(target, ours=is_store) as tmp:
            tmp.mkdir()
            (tmp / "marker").write_text(content)
    assert (target / "marker").read_text() == "second"


def test_a_file_output_never_removes_a_folder(tmp_path):
    results = tmp_path / "results"
    (results / "deep").mkdir(parents=True)
    (results / "deep" / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="exists and is a folder"):
        write_json(results, [1, 2])
    assert (results / "deep" / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no temporary left


def test_a_folder_output_never_replaces_a_folder_it_does_not_recognise(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "user.txt").write_text("x")
    with pytest.raises(OutputError, match=r"not replacing it"), atomic_path(target, is_store):
        pass
    assert (target / "user.txt").exists()


def test_a_file_the_writer_does_not_recognise_is_kept(tmp_path):
    notes = tmp_path / "README.md"
    notes.write_text("mine")
    with pytest.raises(OutputError, match=r"README\.md exists and is a file"):
        write_json(notes, [1], ours=lambda p: p.suffix == ".json")
    assert notes.read_text() == "mine"


@pytest.mark.parametrize(
    "output, inp",
    [("f.npy", "f.npy"), ("results", "results/pool.zarr"), ("pool.zarr/x.json", "pool.zarr")],
)
def test_an_output_may_not_touch_an_input(tmp_path, monkeypatch, output, inp):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match=f"output {output} would overwrite the input {inp}"):
        check_outputs_apart([output], [inp])
    check_outputs_apart(["other.json"], [inp])  # a sibling is fine


def test_read_json_names_a_missing_or_broken_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.json does not exist"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(InputError, match=r"bad\.json is not a readable JSON file"):
        read_json(tmp_path / "bad.json")
