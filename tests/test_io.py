import os
import stat

import pytest

from ichinpaint import io


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_gives_normal_permissions(tmp_path):
    io.write_json(tmp_path / "m.json", {"a": 1})
    mode = stat.S_IMODE(os.stat(tmp_path / "m.json").st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH


def test_atomic_dir_replaces_the_old_directory_whole(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with io.atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def test_parallel_map_keeps_order_and_refuses_zero_jobs():
    assert io.parallel_map(abs, [-3, 2, -1], n_jobs=1) == [3, 2, 1]
    assert io.parallel_map(abs, [-3, 2, -1], n_jobs=2) == [3, 2, 1]
    with pytest.raises(ValueError):
        io.parallel_map(abs, [1], n_jobs=0)


def test_resolve_n_jobs():
    assert io.resolve_n_jobs(1) == 1
    assert io.resolve_n_jobs(3) == 3
    assert io.resolve_n_jobs(-1) == (os.cpu_count() or 1)


def test_stale_temporaries_of_an_output_are_removed_by_its_next_write(tmp_path):
    target = tmp_path / "metrics/plots/slice_roc.csv"
    target.parent.mkdir(parents=True)
    stale = [target.parent / ".slice_roc.csv.k1ll3d.tmp.csv", target.parent / ".slice_roc.csv.old"]
    for p in stale:
        p.write_text("half")
    other = target.parent / ".pixel_roc.csv.k1ll3d.tmp.csv"  # another output's: left alone
    other.write_text("half")
    io.write_json(target, {"a": 1})
    assert not any(p.exists() for p in stale) and other.exists()
    folder = tmp_path / "data/detections"
    leftover = tmp_path / "data/.detections.k1ll3d.tmp"
    leftover.mkdir(parents=True)
    with io.atomic_dir(folder) as tmp:
        (tmp / "x").write_text("x")
    assert not leftover.exists() and (folder / "x").exists()


def test_staged_outputs_appear_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.csv"
    io.write_json(a, {"run": 1})
    io.write_json(b, {"run": 1})
    with pytest.raises(RuntimeError), io.staged_outputs():
        io.write_json(a, {"run": 2})
        assert io.read_json(a) == {"run": 1}  # not visible before the block ends
        raise RuntimeError("killed half way")
    assert io.read_json(a) == io.read_json(b) == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.csv"]
    with io.staged_outputs():
        io.write_json(a, {"run": 3})
        io.write_json(b, {"run": 3})
        io.write_json(a, {"run": 3, "again": True})  # a second write of the same output
    assert io.read_json(a) == {"run": 3, "again": True} and io.read_json(b) == {"run": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.csv"]


def test_workers_exit_when_their_parent_is_gone():
    # A worker started after its stage died exits at once (the parent pid no longer matches).
    import subprocess
    import sys

    code = "import os; from ichinpaint import io; io.watch_parent(os.getppid() + 999999); print('alive')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "alive" not in done.stdout
