"""The ``flask gallery`` commands, run as an operator would through Flask's CLI runner."""

from __future__ import annotations

import json

import pytest

from tests import photos
from tests.invariants import check_invariants


def run(app, *args: str):
    return app.test_cli_runner().invoke(args=["gallery", *args])


def photo_folder(tmp_path):
    folder = tmp_path / "library"
    (folder / "2024").mkdir(parents=True)
    (folder / "astronaut.jpg").write_bytes(photos.astronaut_jpeg())
    (folder / "notes.txt").write_text("not a photo")
    (folder / "broken.JPG").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "2024" / "hopper.jpeg").write_bytes(photos.hopper_jpeg())
    return folder


def test_import_reports_progress_skips_and_a_summary(app, store, tmp_path):
    folder = photo_folder(tmp_path)
    result = run(app, "import", str(folder), "--recursive", "--album", "Family",
                 "--section", "2024")
    assert result.exit_code == 0, result.output
    assert f"skipped {folder / 'notes.txt'}: not an image (.txt)" in result.output
    assert f"failed {folder / 'broken.JPG'}: " in result.output
    assert "progress: 3/3 photos" in result.output
    assert ("2 imported, 0 already stored, 1 failed, 1 skipped; 2 faces, 2 new persons"
            in result.output)
    albums = [a for a in store.list_albums() if a["name"] == "Family"]
    assert len(albums) == 1
    [section] = store.list_sections(albums[0]["_id"])
    assert section["name"] == "2024"
    assert store.count_images_in("section_id", section["_id"]) == 2
    check_invariants(store)


def test_a_second_import_continues_where_the_first_stopped(app, store, tmp_path):
    folder = photo_folder(tmp_path)
    first = run(app, "import", str(folder))  # not recursive: only the top folder
    assert "1 imported, 0 already stored, 1 failed" in first.output
    again = run(app, "import", str(folder), "-r", "--album", "Family")
    assert again.exit_code == 0, again.output
    assert "1 imported, 1 already stored, 1 failed" in again.output
    # The album is found by name, not made twice.
    run(app, "import", str(folder), "-r", "--album", "Family")
    assert [a["name"] for a in store.list_albums()] == ["Family"]
    check_invariants(store)


def test_import_fails_when_nothing_could_be_imported(app, tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"junk")
    result = run(app, "import", str(folder))
    assert result.exit_code == 1
    assert "0 imported, 0 already stored, 1 failed" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(app, "import", str(empty)).exit_code == 1


# The workers only analyse (no database); the writes are test_import_reports_progress...'s.
@pytest.mark.not_on_standin
def test_import_with_its_own_worker_processes(app, store, tmp_path):
    folder = photo_folder(tmp_path)
    result = run(app, "import", str(folder), "-r", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "2 imported" in result.output
    check_invariants(store)


def test_stats_and_recluster_commands(app, store, tmp_path):
    run(app, "import", str(photo_folder(tmp_path)), "-r")
    stats = json.loads(run(app, "stats").output)
    assert stats["total_images"] == 2 and stats["total_faces"] == 2
    result = run(app, "recluster", "--eps", "0.6")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["faces_processed"] == 2
    check_invariants(store)


def test_on_a_terminal_progress_is_one_line_redrawn(capsys):
    import cli
    from services.importer import Progress

    bar = cli._TerminalBar()
    progress = Progress(total=4, started=0.0)
    progress.add({"success": True, "duplicate": False, "faces_detected": 3,
                  "persons_created": 1, "filename": "a.jpg"})
    progress.add({"success": False, "filename": "b.jpg", "error": "The file is not an image"})
    bar(progress)
    bar.close()
    err = capsys.readouterr().err
    assert "failed b.jpg: The file is not an image" in err
    # click drops the erase-line code when stderr is not a terminal, as under pytest.
    assert "\r[" + "#" * 15 + "-" * 15 + "] 2/4 photos" in err
    assert "3 faces, ETA " in err and err.endswith("\n")
