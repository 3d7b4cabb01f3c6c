"""``python -m compare.paper`` (``scripts/reproduce.sh``): the listing, the selection, the clean-tree rule and the
running of an output's commands, on stand-in outputs (no real measurement runs here)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compare import paper


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "tracked.txt").write_text("a\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "tracked.txt")
    _git(tmp_path, "commit", "-qm", "one")
    return tmp_path


def test_list_names_every_output_its_commands_and_duration(capsys):
    assert paper.main(["--list"]) == 0
    out = capsys.readouterr().out
    for o in paper.OUTPUTS:
        assert o.name in out
    assert "python -m compare.run --full --out paper/cpu" in out and "~40 min on 2 cores" in out
    assert "not re-made: compares two releases" in out
    assert out.strip().splitlines()[-1].startswith("all: ~")


def test_every_committed_results_directory_is_some_output():
    """Each directory under paper/ is made by a listed output (or explicitly not re-made, with its reason)."""
    root = Path(paper.ROOT) / "paper"
    made = {o.path.split("/")[0] for o in paper.OUTPUTS}
    dirs = {p.name for p in root.iterdir() if p.is_dir()}
    assert dirs <= made, sorted(dirs - made)


def test_selection_quick_only_and_bad_names():
    assert {o.name for o in paper.select(None, True)} == {o.name for o in paper.OUTPUTS if o.quick}
    assert not any(o.skip for o in paper.select(None, False))
    assert [o.name for o in paper.select("figures,cpu", False)] == ["cpu", "figures"]
    with pytest.raises(ValueError, match="unknown output"):
        paper.select("nope", False)
    with pytest.raises(ValueError, match="cannot be re-made"):
        paper.select("versions", False)


def test_a_dirty_tree_is_refused_in_one_line_before_anything_runs(repo, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(paper, "ROOT", repo)
    monkeypatch.setattr(paper, "make", lambda outputs, root: ran.append(outputs) or 0)
    assert paper.dirty(repo) is False
    (repo / "tracked.txt").write_text("changed\n")
    assert paper.dirty(repo) is True
    assert paper.main(["--only", "figures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "uncommitted changes" in err[0] and not ran
    _git(repo, "commit", "-qam", "two")
    assert paper.main(["--only", "figures"]) == 0 and [o.name for o in ran[0]] == ["figures"]


def test_an_output_written_into_a_committed_results_directory_leaves_the_commit_clean(repo):
    """A result records the code's commit: its own committed output directory (paper/) being rewritten, or
    prose, does not make it -dirty; a changed code file does. compare.paper's own refusal counts every file."""
    from compare.provenance import git_commit

    (repo / "paper").mkdir()
    (repo / "paper" / "points.jsonl").write_text("{}\n")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "results")
    (repo / "paper" / "points.jsonl").write_text("{}\n{}\n")
    (repo / "NOTES.md").write_text("prose\n")
    _git(repo, "add", "NOTES.md")
    assert not git_commit(repo).endswith("-dirty") and paper.dirty(repo) is True
    (repo / "code.py").write_text("x = 2\n")
    assert git_commit(repo).endswith("-dirty")


def test_outside_a_git_checkout_nothing_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paper, "ROOT", tmp_path)
    assert paper.main(["--only", "figures"]) == 2
    assert "not a git checkout" in capsys.readouterr().err


def test_make_runs_the_commands_with_the_root_and_stops_at_a_failure(tmp_path, monkeypatch):
    write = ("import pathlib, sys, compare; p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True); (p / 'runs').mkdir();"
             "(p / 'pkg').write_text(compare.__file__)")
    script = tmp_path / "scripts" / "write.py"  # a script: its own directory, not the checkout, heads sys.path
    script.parent.mkdir()
    script.write_text(write)
    ok = paper.Output("a", "a", ((paper.PY, str(script), "{root}/a"),), 0.1, replaces=("old.json",))
    bad = paper.Output("b", "b", ((paper.PY, "-c", "raise SystemExit(3)"),), 0.1)
    never = paper.Output("c", "c", ((paper.PY, "-c", write, "{root}/c"),), 0.1)
    (tmp_path / "old.json").write_text("{}")
    assert paper.make([ok, bad, never], tmp_path) == 3
    assert (tmp_path / "a").is_dir() and not (tmp_path / "a" / "runs").exists()  # the moved-aside run is gone
    assert not (tmp_path / "old.json").exists() and not (tmp_path / "c").exists()
    assert paper.commands(ok, tmp_path)[0][0] == sys.executable
    assert Path((tmp_path / "a" / "pkg").read_text()).resolve().parent.parent == Path(paper.ROOT)  # this checkout
