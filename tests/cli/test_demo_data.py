"""The demo's generated folder and its byte-for-byte comparison."""

from __future__ import annotations

from pathlib import Path

from dmg.cli.demo import KIB, compare_trees, generate_tree


def test_generated_tree_is_nested_sized_and_reproducible(tmp_path: Path) -> None:
    stats = generate_tree(tmp_path / "a", small_files=40, large_files=2, large_size=(64 * KIB, 96 * KIB))
    files = [p for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert stats.files == len(files) == 42
    assert stats.bytes == sum(p.stat().st_size for p in files)
    small = [p for p in files if p.parent.name != "big"]
    assert all(KIB <= p.stat().st_size <= 64 * KIB for p in small)
    assert max(len(p.relative_to(tmp_path / "a").parts) for p in small) >= 3  # nested folders
    generate_tree(tmp_path / "b", small_files=40, large_files=2, large_size=(64 * KIB, 96 * KIB))
    assert compare_trees(tmp_path / "a", tmp_path / "b").matches


def test_compare_reports_missing_extra_and_different(tmp_path: Path) -> None:
    generate_tree(tmp_path / "src", small_files=10, large_files=0)
    generate_tree(tmp_path / "dst", small_files=10, large_files=0)
    files = sorted(p for p in (tmp_path / "dst").rglob("*") if p.is_file())
    files[0].unlink()
    data = bytearray(files[1].read_bytes())
    data[-1] ^= 0xFF  # same size, one byte differs
    files[1].write_bytes(bytes(data))
    (tmp_path / "dst" / "stray.bin").write_bytes(b"x")

    diff = compare_trees(tmp_path / "src", tmp_path / "dst")

    assert not diff.matches
    assert diff.missing == [files[0].relative_to(tmp_path / "dst").as_posix()]
    assert diff.different == [files[1].relative_to(tmp_path / "dst").as_posix()]
    assert diff.extra == ["stray.bin"]
    assert "1 missing" in diff.describe() and "1 different" in diff.describe()


def test_missing_target_is_all_missing(tmp_path: Path) -> None:
    generate_tree(tmp_path / "src", small_files=3, large_files=0)
    diff = compare_trees(tmp_path / "src", tmp_path / "nothing")
    assert len(diff.missing) == 3 and not diff.matches
