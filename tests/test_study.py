"""histoaug study: building a blinded study, scoring answer files, the report, the server's API and its security."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket

import numpy as np
import pytest
from PIL import Image
from study_data import (
    ServerProcess,
    answer,
    answer_file,
    make_study,
    oracle_answers,
    write_answer_file,
    write_synthetic_set,
)

from histoaug import PCam, sample_root
from histoaug.cli.main import main
from histoaug.errors import StudyError
from histoaug.study.answers import parse_answer_file
from histoaug.study.layout import KEY, LABELS, KeyEntry, Study, load_study, read_public_study
from histoaug.study.scoring import score_study


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    return make_study(tmp_path_factory.mktemp("study"), n=8)


# --- build ---------------------------------------------------------------------------------------------------
def test_build_is_balanced_blinded_and_deterministic(tmp_path):
    first = make_study(tmp_path / "a", n=24, seed=3, display_size=192, sets=2)
    again = make_study(tmp_path / "b", n=24, seed=3, display_size=192, sets=2)
    other = make_study(tmp_path / "c", n=24, seed=4, display_size=192, sets=2)
    entries = list(first.key.values())
    for source in ("real", "synthetic"):
        labels = [entry.label for entry in entries if entry.source == source]
        assert len(labels) == 12 and sum(labels) == 6  # half each; labels balanced within each
    assert {entry.set_name for entry in entries if entry.source == "synthetic"} == {"synth0", "synth1"}
    assert sorted(entry.set_name for entry in entries).count("synth0") == 6
    # same seed -> the same study, patch for patch and byte for byte; another seed -> another one
    assert first.study_id == again.study_id and first.order == again.order
    assert first.manifest["reader_files"] == again.manifest["reader_files"]
    assert other.study_id != first.study_id and set(other.order) != set(first.order)
    # the shown patch is the source row, nearest-neighbour upscaled (every 96 px pixel a 2x2 block)
    for patch in first.order[:4]:
        entry = first.key[patch]
        source = PCam(sample_root(), "test") if entry.source == "real" else PCam(entry.file)
        shown = np.asarray(Image.open(first.patch_path(patch)))
        assert shown.shape == (192, 192, 3)
        np.testing.assert_array_equal(shown[::2, ::2], source.read_images([entry.row])[0])
    # readers' folder: page, study.js, opaque patch names; no key, no labels, no sources, no file names
    reader = sorted(str(p.relative_to(first.reader_dir)) for p in first.reader_dir.rglob("*") if p.is_file())
    assert reader == sorted(["index.html", "reader.css", "reader.js", "study.js",
                             *(f"patches/{p}.png" for p in first.order)])
    public = read_public_study(first.reader_dir)
    assert set(public) == {"format", "study_id", "title", "patches", "display_size", "patch_px", "labels", "sources"}
    assert public["patches"] == list(first.order) and all(len(p) == 16 for p in public["patches"])
    text = (first.reader_dir / "study.js").read_text()
    assert "synth0" not in text and ".h5" not in text and '"row"' not in text
    assert not (first.reader_dir / KEY).exists() and (first.root / KEY).is_file()
    # manifest: every input with its hash
    manifest = first.manifest
    assert manifest["seed"] == 3 and manifest["n"] == 24 and manifest["display_size"] == 192
    for entry in manifest["synthetic"]:
        with open(entry["path"], "rb") as handle:
            assert entry["sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert len(manifest["real"]["files"]) == 2


def test_build_cli_and_its_one_line_errors(tmp_path, capsys):
    synthetic = write_synthetic_set(tmp_path / "s.h5", per_label=4)
    out = tmp_path / "study"
    assert main(["study", "build", "--real", "sample:test", "--synthetic", f"mine={synthetic}", "--n", "8",
                 "--out", str(out), "--display-size", "96"]) == 0
    assert "8 patches (real: 2 healthy, 2 tumour; mine: 2 healthy, 2 tumour)" in capsys.readouterr().out
    cases = [
        (["--n", "8"], "exists; pass --overwrite"),
        (["--n", "10", "--overwrite"], "multiple of 4"),
        (["--n", "40", "--overwrite"], "the study needs 10"),  # 4 synthetic patches per label only
        (["--n", "8", "--overwrite", "--display-size", "5000"], "--display-size"),
    ]
    for extra, message in cases:
        assert main(["study", "build", "--synthetic", str(synthetic), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["study", "build", "--synthetic", str(tmp_path / "nope.h5"), "--out", str(out / "x")]) == 2
    assert "no such file" in capsys.readouterr().err
    # a study holding answers is never replaced
    (out / "answers" / "someone.json").write_text("{}")
    assert main(["study", "build", "--synthetic", str(synthetic), "--n", "8", "--out", str(out), "--overwrite"]) == 2
    assert "holds readers' answers" in capsys.readouterr().err


# --- scoring ---------------------------------------------------------------------------------------------------
def _hand_study() -> Study:
    """Four real and four synthetic patches, labels 0 0 1 1 in each (no files needed to score)."""
    key = {}
    for source in ("real", "synthetic"):
        for k, label in enumerate((0, 0, 1, 1)):
            patch = f"{'a' if source == 'real' else 'b'}{k:015x}"
            key[patch] = KeyEntry(patch, source, source if source == "real" else "s", "f.h5", k, label)
    return Study(None, "0123456789abcdef", tuple(key), key, {})


def _reader(study: Study, name: str, calls: str, labels: str) -> object:
    """calls: R/S per patch in key order; labels: h/t per patch."""
    names = {"R": "real", "S": "synthetic", "h": "healthy", "t": "tumour"}
    answers = [answer(p, names[c], names[lab]) for p, c, lab in zip(study.order, calls, labels, strict=True)]
    return parse_answer_file(answer_file(study, name, answers), study, name)


def test_score_reproduces_hand_computed_sensitivity_specificity_and_kappa():
    study = _hand_study()
    #                           real  synth   real  synth
    a = _reader(study, "A", "RRRS" "SSRR", "hhtt" "httt")
    b = _reader(study, "B", "RRRR" "SSSR", "httt" "hhth")
    metrics = score_study(study, [a, b])
    rows = {row["reader"]: row for row in metrics["readers"]}
    assert (rows["A"]["sensitivity"], rows["A"]["specificity"]) == (0.5, 0.75)
    assert (rows["B"]["sensitivity"], rows["B"]["specificity"]) == (0.75, 1.0)
    assert (rows["A"]["label_accuracy_real"], rows["A"]["label_accuracy_synthetic"]) == (1.0, 0.75)
    assert (rows["B"]["label_accuracy_real"], rows["B"]["label_accuracy_synthetic"]) == (0.75, 0.75)
    assert metrics["median_sensitivity"] == 0.625 and metrics["median_specificity"] == 0.875
    assert metrics["label_accuracy"]["real"] == 7 / 8 and metrics["label_accuracy"]["synthetic"] == 6 / 8
    # real: A hhtt vs B httt: p_o = 3/4, p_e = 1/2*3/4 + 1/2*1/4 = 1/2 -> kappa 0.5
    # synthetic: A httt vs B hhth: p_o = 1/2, p_e = 3/4*1/4 + 1/4*3/4 = 3/8 -> kappa (1/2 - 3/8) / (5/8) = 0.2
    assert metrics["kappa"]["real"]["matrix"][0][1] == pytest.approx(0.5)
    assert metrics["kappa"]["synthetic"]["matrix"][1][0] == pytest.approx(0.2)
    assert metrics["kappa"]["real"]["mean"] == pytest.approx(0.5) and metrics["kappa"]["real"]["std"] is None
    per_patch = {row["patch"]: row for row in metrics["per_patch"]}
    second_real, second_synth = study.order[1], study.order[5]
    assert per_patch[second_real]["outcome"] == "FP" or per_patch[second_real]["majority"] is None
    assert per_patch[second_synth]["majority"] is None  # A tumour, B healthy: a tie
    assert per_patch[study.order[3]]["outcome"] == "TP" and per_patch[study.order[3]]["agreement"] == 1.0
    assert metrics["incomplete_readers"] == []


def test_random_readers_score_chance_and_an_oracle_scores_one():
    rng = np.random.default_rng(0)
    key = {}
    for k in range(400):
        patch = f"{k:016x}"
        source = "real" if k % 2 else "synthetic"
        key[patch] = KeyEntry(patch, source, source if source == "real" else "s", "f.h5", k, (k // 2) % 2)
    study = Study(None, "fedcba9876543210", tuple(key), key, {})
    readers = []
    for r in range(15):
        answers = [answer(p, str(rng.choice(["real", "synthetic"])), str(rng.choice(LABELS))) for p in study.order]
        readers.append(parse_answer_file(answer_file(study, f"random {r}", answers), study, "random"))
    metrics = score_study(study, readers)
    assert metrics["median_sensitivity"] == pytest.approx(0.5, abs=0.05)
    assert metrics["median_specificity"] == pytest.approx(0.5, abs=0.05)
    assert metrics["label_accuracy"]["real"] == pytest.approx(0.5, abs=0.05)
    assert metrics["kappa"]["synthetic"]["mean"] == pytest.approx(0.0, abs=0.05)
    assert metrics["kappa"]["real"]["defined_pairs"] == 15 * 14 // 2
    oracle = parse_answer_file(answer_file(study, "oracle", oracle_answers(study)), study, "oracle")
    second = parse_answer_file(answer_file(study, "oracle 2", oracle_answers(study)), study, "oracle 2")
    metrics = score_study(study, [oracle, second])
    assert (metrics["median_sensitivity"], metrics["median_specificity"]) == (1.0, 1.0)
    assert metrics["label_accuracy"] == {"real": 1.0, "synthetic": 1.0, "median_real": 1.0, "median_synthetic": 1.0}
    assert metrics["kappa"]["real"]["mean"] == 1.0 and metrics["kappa"]["synthetic"]["mean"] == 1.0


def test_score_cli_writes_the_report_and_refuses_bad_answer_files(study, tmp_path, capsys):
    oracle = write_answer_file(tmp_path / "oracle.json", answer_file(study, "Dr <b>Oracle</b> | $x$",
                                                                       oracle_answers(study)))
    half = [answer(p, "real", "healthy", None) for p in study.order[:4]]
    partial = write_answer_file(tmp_path / "partial.json", answer_file(study, "Half", half))
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "metrics.json").write_text(json.dumps({"two_sample_test": {"synth0": {"auc": 0.71}},
                                                       "two_sample_reference": {"auc": 0.6}}))
    (eval_dir / "report.md").write_text("# eval\n")
    out = tmp_path / "report"
    assert main(["study", "score", str(study.root), str(oracle), str(partial), "--out", str(out),
                 "--eval-report", str(eval_dir)]) == 0
    captured = capsys.readouterr()
    assert "'Half' answered 4 of 8 patches (scored on those)" in captured.err
    assert "2 readers: median sensitivity" in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["incomplete_readers"] == ["Half"]
    for figure in ("kappa.png", "readers.png", "agreed_patches.png"):
        with Image.open(out / "figures" / figure) as image:
            assert image.width > 300
    report = (out / "report.md").read_text()
    assert "Dr &lt;b&gt;Oracle&lt;/b&gt; \\| $x$" in report and "<b>" not in report
    assert "Incomplete answer files" in report and "Half: 4 of 8" in report
    assert "](../eval/report.md)" in report and "synth0 0.710" in report
    assert set(metrics["agreed_patches"]) == {"real: true positives", "real: false positives",
                                              "synthetic: true positives", "synthetic: false positives"}
    # bad input: one line each, exit 2
    other = answer_file(study, "X", oracle_answers(study), study_id="ffffffffffffffff")
    unknown = answer_file(study, "Y", [answer("0" * 16, "real", "healthy")])
    bad_choice = answer_file(study, "Z", [{**oracle_answers(study)[0], "label": "maybe"}])
    cases = [
        ([write_answer_file(tmp_path / "other.json", other)], "answers from another study"),
        ([write_answer_file(tmp_path / "unknown.json", unknown)], "does not exist in this study"),
        ([write_answer_file(tmp_path / "bad.json", bad_choice)], "label must be one of"),
        ([oracle, write_answer_file(tmp_path / "again.json", answer_file(study, " dr <B>oracle</b> | $X$ ",
                                                                          half))], "duplicate reader"),
        ([tmp_path / "missing.json"], "no such answer file"),
        ([write_answer_file(tmp_path / "junk.json", {"x": 1})], "not a histoaug study answer file"),
        ([], "no answers to score"),
    ]
    for files, message in cases:
        code = main(["study", "score", str(study.root), *map(str, files), "--out", str(tmp_path / "r2")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert main(["study", "score", str(study.root), str(oracle), "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["study", "score", str(tmp_path), str(oracle), "--out", str(tmp_path / "r3")]) == 2
    assert "not a study folder" in capsys.readouterr().err


# --- served mode ---------------------------------------------------------------------------------------------
def _raw_get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", f"127.0.0.1:{port}")
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


def test_server_stores_every_answer_durably_and_refuses_what_it_must(study, tmp_path, capsys):
    server = ServerProcess(study.root)
    try:
        assert server.get("/")[0] == 200 and server.get("/study.js")[0] == 200
        assert server.get(f"/patches/{study.order[0]}.png")[0] == 200
        # never the key, the manifest, the answers or anything outside reader/ (path traversal)
        for path in ("/key.json", "/manifest.json", "/../key.json", "/%2e%2e/key.json", "/patches/../../key.json",
                     "/..%2fkey.json", "//etc/passwd", "/answers/", "/reader/index.html", "/%00", "/patches/",
                     "/api/../key.json", "/index.html/../../key.json"):
            assert _raw_get(server.port, path) == 404, path
        assert server.get("/", headers={"Host": "attacker.example:80"})[0] == 403  # DNS rebinding
        given = oracle_answers(study)[:3]
        for k, item in enumerate(given):
            status, body = server.post({"study_id": study.study_id, "reader": "Dr A", "answer": item})
            assert status == 200 and body["answered"] == k + 1
        # refused: another study, an unknown patch, a bad choice, a huge body, not JSON, a bad name
        base = {"study_id": study.study_id, "reader": "Dr A", "answer": given[0]}
        refusals = [
            ({**base, "study_id": "f" * 16}, 409), ({**base, "answer": {**given[0], "patch": "0" * 16}}, 400),
            ({**base, "answer": {**given[0], "source": "__import__('os')"}}, 400),
            ({**base, "reader": "x" * 200}, 400), ({**base, "reader": "a\u0000b"}, 400),
        ]
        for payload, code in refusals:
            assert server.post(payload)[0] == code
        assert server.post(b"{" + b" " * 20000 + b"}")[0] == 413
        assert server.post(b"not json")[0] == 400
        assert server.post(json.dumps(base).encode(), content_type="text/plain")[0] == 415
        # SIGKILL: nothing given is lost; the restarted server resumes the reader where they stopped
        server.kill()
        stored = json.loads(next((study.root / "answers").glob("*.json")).read_text())
        assert [item["patch"] for item in stored["answers"]] == [item["patch"] for item in given]
        server = ServerProcess(study.root, port=server.port)
        status, body = server.get("/api/answers?reader=dr%20a")
        assert status == 200 and len(json.loads(body)["answers"]) == 3 and json.loads(body)["reader"] == "Dr A"
        # a port in use: one line, exit 2
        assert main(["study", "serve", str(study.root), "--port", str(server.port)]) == 2
        err = capsys.readouterr().err
        assert f"port {server.port} on 127.0.0.1 is in use" in err and err.count("\n") == 1
    finally:
        server.kill()
    # the server's stored answers are scored without naming them
    assert main(["study", "score", str(study.root), "--out", str(tmp_path / "report")]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert [(row["reader"], row["answered"], row["mode"]) for row in metrics["readers"]] == [("Dr A", 3, "served")]
    for path in (study.root / "answers").glob("*.json"):
        path.unlink()


def test_a_request_too_large_is_cut_off_before_it_is_read(study):
    server = ServerProcess(study.root)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
            connection.sendall(b"POST /api/answers HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json"
                               b"\r\nContent-Length: 1000000000\r\n\r\n" % server.port)
            assert b" 413 " in connection.recv(4096).split(b"\r\n")[0] + b" "
        assert load_study(study.root).study_id == study.study_id
        assert server.get("/api/study")[0] == 200
    finally:
        server.kill()


def test_the_study_folder_errors_are_typed(tmp_path):
    with pytest.raises(StudyError, match="not a study folder"):
        load_study(tmp_path)
