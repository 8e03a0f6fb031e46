"""The one atomic-write helper: whole or nothing, unique staging names, old content kept on failure."""

from __future__ import annotations

import threading

import pytest

from histoaug.atomic_files import atomic_directory, atomic_path, write_text


def test_file_appears_whole_and_leaves_no_staging(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "hello")
    assert target.read_text() == "hello"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failure_keeps_the_previous_content(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as staging:
        staging.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_concurrent_writers_use_distinct_staging_names(tmp_path):
    target = tmp_path / "out.txt"
    seen = []
    barrier = threading.Barrier(2)

    def writer(text):
        with atomic_path(target, durable=True) as staging:
            seen.append(staging)
            barrier.wait()
            staging.write_text(text * 1000)

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen[0] != seen[1]
    assert target.read_text() in ("a" * 1000, "b" * 1000)


def test_directory_replaced_only_when_asked(tmp_path):
    target = tmp_path / "run"
    with atomic_directory(target) as staging:
        (staging / "a.json").write_text("1")
    assert (target / "a.json").read_text() == "1"
    with pytest.raises(FileExistsError), atomic_directory(target) as staging:
        (staging / "b.json").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["a.json"]
    with atomic_directory(target, replace=True, durable=True) as staging:
        (staging / "b.json").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_outputs_get_ordinary_permissions_not_private_temp_ones(tmp_path):
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    write_text(tmp_path / "report.json", "{}")
    with atomic_directory(tmp_path / "run") as staging:
        (staging / "a.json").write_text("1")
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o777 & ~mask


def test_publish_moves_a_resumable_work_dir_into_place(tmp_path):
    from histoaug.atomic_files import publish

    target, work = tmp_path / "tree", tmp_path / "tree.partial"
    target.mkdir()
    (target / "old.png").write_bytes(b"old")
    work.mkdir()
    (work / "new.png").write_bytes(b"new")
    with pytest.raises(FileExistsError):
        publish(work, target)
    publish(work, target, replace=True, durable=True)
    assert [p.name for p in target.iterdir()] == ["new.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["tree"]
