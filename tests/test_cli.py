"""The ``flask gallery`` commands, run as an operator would through Flask's CLI runner."""

from __future__ import annotations

import io
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


def test_repair_dry_run_reports_and_changes_nothing_then_repair_does(app, store):
    import datetime as dt

    client = app.test_client()
    kept = client.post("/images/upload", data={"file": (io.BytesIO(photos.astronaut_jpeg()),
                                                        "a.jpg")},
                       content_type="multipart/form-data").json["data"]
    crashed = client.post("/images/upload", data={"file": (io.BytesIO(photos.hopper_jpeg()),
                                                           "h.jpg")},
                          content_type="multipart/form-data").json["data"]
    # As if a worker died before marking the upload ready, long ago, and two uploads died
    # between reserving their numbers and writing (120 numbers on: older than the newest 100).
    store.set_image_fields(crashed["image_id"], {"status": "pending",
                                                 "created_at": dt.datetime(2020, 1, 1)})
    for _ in range(2):
        store.next_seq("images")
    store.next_seq("images", 100)
    before = {name: store.count(name) for name in ("images", "faces", "persons", "image_gaps")}

    dry = run(app, "repair", "--dry-run")
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.output[:dry.output.rindex("}") + 1])
    assert report["dry_run"] is True
    assert report["uploads_undone"] == [crashed["image_id"]]
    assert report["image_numbers_recovered"] == 2
    assert "would change: uploads_undone 1, deletes_finished 0, image_numbers_recovered 2" \
        in dry.output
    assert {name: store.count(name) for name in before} == before  # nothing changed

    done = run(app, "repair")
    assert done.exit_code == 0, done.output
    assert "changed: uploads_undone 1, deletes_finished 0, image_numbers_recovered 2" \
        in done.output
    # The undone upload's number is a gap too, beside the two recovered.
    assert store.count("images") == 1 and store.count("image_gaps") == 3
    again = run(app, "repair", "--dry-run")
    assert "would change: uploads_undone 0, deletes_finished 0, image_numbers_recovered 0" \
        in again.output
    check_invariants(store)
    assert kept["faces_detected"] == 1
