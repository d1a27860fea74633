"""Students and their manifests: loading, sha256 and the bound fields, schema errors, the
evaluation CLI on a student, zoo folders never overwritten."""

import json
import subprocess
import sys

import pytest
import yaml

from okdhp_edge.manifest import ManifestError, load_student_manifest, zoo_students
from okdhp_edge.records import StudentManifest
from okdhp_edge.utils.io import IntegrityError


def test_evaluate_student_cli_and_sha(tiny_zoo, tmp_path):
    d, man = zoo_students(tiny_zoo)[0]
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.evaluate", "--student",
                           str(d / "student.yaml"), "--no-flip", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["AP"] == pytest.approx(man.accuracy.value, abs=1e-6)
    # the same interval as the manifest's (same images, same resamples, same seed)
    assert res["ci95"] == pytest.approx(man.accuracy.ci95, abs=1e-9)
    assert "95% interval over the" in proc.stdout
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    w = bad / man.weights.file
    w.write_bytes(w.read_bytes()[:-10] + b"0123456789")
    from okdhp_edge.students import load_student

    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        load_student(bad / "student.yaml")


@pytest.mark.parametrize("mutate,needle", [
    (lambda m: m.pop("params"), "missing field 'params'"),
    (lambda m: m["accuracy"].pop("split"), "missing field 'accuracy.split'"),
    (lambda m: m.update(colour="red"), "unknown field 'colour'"),
    (lambda m: m["architecture"].update(num_joints="two"),
     "architecture.num_joints: expected int"),
    (lambda m: m.update(schema=99), "schema 99 is newer"),
])
def test_manifest_errors_name_the_field(tiny_zoo, tmp_path, mutate, needle):
    d, man = zoo_students(tiny_zoo)[0]
    man = yaml.safe_load((d / "student.yaml").read_text())
    mutate(man)
    f = tmp_path / "student.yaml"
    f.write_text(yaml.safe_dump(man))
    with pytest.raises(ManifestError, match=needle):
        load_student_manifest(f)


def test_student_arguments_the_family_does_not_take(tiny_zoo, tmp_path):
    from okdhp_edge.students import load_student

    d, _ = zoo_students(tiny_zoo)[0]
    man = yaml.safe_load((d / "student.yaml").read_text())
    man["architecture"]["args"]["num_stacks"] = "two"
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(man))
    (tmp_path / "weights.safetensors").write_bytes((d / "weights.safetensors").read_bytes())
    # refused as an edit of what the weights were saved with, before any build is tried
    with pytest.raises(ManifestError, match="'architecture' differs"):
        load_student(tmp_path / "student.yaml")
    from okdhp_edge.students import build_student  # and the builder's own message

    with pytest.raises(ManifestError, match="cannot be built"):
        build_student(StudentManifest.from_data(man, "edited"))


def test_schema_1_manifest_is_read_with_the_lua_stem(tiny_zoo, tmp_path):
    """Manifests written before the stem became a switch: hourglass fields inline, the
    branch layout in provenance; they were all trained with the Lua stem."""
    d, _ = zoo_students(tiny_zoo)[0]
    man = yaml.safe_load((d / "student.yaml").read_text())
    arch, prov = man["architecture"], man["provenance"]
    args = arch.pop("args")
    args.pop("stem")
    layout = prov.pop("multi_branch")
    man.update(schema=1, architecture={**arch, **args})
    prov.update(branches=layout["branches"], shared_stacks=layout["shared_stacks"])
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(man))
    old = load_student_manifest(tmp_path / "student.yaml")
    assert old.schema == 2 and old.architecture.args["stem"] == "lua"
    assert old.architecture.args["num_stacks"] == args["num_stacks"]
    assert old.provenance.multi_branch == layout


def test_zoo_never_overwritten(tiny_zoo):
    from okdhp_edge.manifest import unique_dir

    assert unique_dir(tiny_zoo.parent, tiny_zoo.name) != tiny_zoo


def test_an_edited_manifest_is_refused(tiny_zoo, tmp_path):
    """Input size and normalisation are bound to the weights (their header, under the
    sha256): editing them in student.yaml is refused instead of scoring AP 0.00."""
    import shutil

    from okdhp_edge.students import load_student

    d = tmp_path / "s"
    shutil.copytree(zoo_students(tiny_zoo)[0][0], d)
    load_student(d / "student.yaml")
    man = yaml.safe_load((d / "student.yaml").read_text())
    man["preprocessing"]["std"] = [1.0, 1.0, 1.0]
    (d / "student.yaml").write_text(yaml.safe_dump(man, sort_keys=False))
    with pytest.raises(ManifestError, match="'preprocessing' differs"):
        load_student(d / "student.yaml")


def test_a_zoo_another_run_renamed_into_place_meanwhile_is_kept(tmp_path, monkeypatch):
    """Two trainings of one zoo name finishing together: the later rename takes the next
    name instead of failing or replacing the other's zoo."""
    import okdhp_edge.students as st
    from okdhp_edge.records import ZooManifest, read_record

    real, seen = st.unique_dir, []

    def racing(root, name):
        d = real(root, name)
        if not seen:  # the other run renames its zoo into place right after the check
            (d / "hg2").mkdir(parents=True)
            (d / "zoo.yaml").write_text("theirs")
        seen.append(d)
        return d

    monkeypatch.setattr(st, "unique_dir", racing)
    build = st._zoo_build_dir(tmp_path, "z")
    (build / "hg3").mkdir()
    zoo = ZooManifest(schema=ZooManifest.VERSION, name="z", students=["hg3"], run="",
                      dataset="synthetic", metric="AP")
    out = st._rename_into_place(build, tmp_path, zoo)
    assert out == tmp_path / "z-2" and (out / "hg3").is_dir() and not build.exists()
    assert (tmp_path / "z" / "zoo.yaml").read_text() == "theirs"
    assert read_record(ZooManifest, out / "zoo.yaml").name == "z-2"
