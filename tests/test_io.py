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
