"""The reader's page in a real headless browser: two readers served at once, keyboard and clicks, a reload,
a server killed with SIGKILL and restarted, and the static (file://) mode's exported answer file, scored."""

from __future__ import annotations

import json
import time

import pytest
from study_browser import quit_chromium, require_browser, start_chromium
from study_data import ServerProcess, make_study, wait_for

from histoaug.cli.main import main
from histoaug.study.layout import LABELS

pytestmark = pytest.mark.browser


def _stored(study, reader_file_part: str = "") -> dict[str, dict]:
    for path in (study.root / "answers").glob("*.json"):
        data = json.loads(path.read_text())
        if reader_file_part in data["reader"]:
            return {item["patch"]: item for item in data["answers"]}
    return {}


def _shown(driver) -> tuple[str, int]:
    patch = driver.find_element("id", "patch").get_attribute("data-patch")
    index = driver.find_element("id", "task").get_attribute("data-index")
    return patch, -1 if index is None else int(index)


def _keys(driver, text: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(text).perform()


def _answer_by_keys(driver, source: str, label: str, confidence: int | None) -> None:
    from selenium.webdriver.common.keys import Keys

    _keys(driver, source[0] + label[0] + (str(confidence) if confidence else "") + Keys.ENTER)


def _answer_by_clicks(driver, source: str, label: str) -> None:
    driver.find_element("css selector", f'button[data-q="source"][data-v="{source}"]').click()
    driver.find_element("css selector", f'button[data-q="label"][data-v="{label}"]').click()
    driver.find_element("id", "next").click()


def _start(driver, url: str, name: str) -> None:
    driver.get(url)
    wait_for(lambda: driver.find_element("id", "name").is_displayed(), what="the name form")
    driver.find_element("id", "name").send_keys(name)
    driver.find_element("id", "start-button").click()
    wait_for(lambda: driver.find_element("id", "task").is_displayed(), what="the first patch")


def _wait_index(driver, index: int) -> str:
    return wait_for(lambda: _shown(driver)[1] == index and _shown(driver)[0], what=f"patch {index + 1}")


def test_two_readers_reload_sigkill_and_static_export(tmp_path):
    require_browser()
    started = time.monotonic()
    study = make_study(tmp_path, n=8, display_size=192)
    truth = {p: (study.key[p].source, LABELS[study.key[p].label]) for p in study.order}
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    server = ServerProcess(study.root)
    first = start_chromium(downloads)
    second = start_chromium()
    try:
        name = 'Dr <img src=x onerror="alert(1)"> & Co'
        _start(first, server.url, name)
        assert first.find_element("id", "reader-name").text == name  # shown as text, never as markup
        assert first.find_elements("css selector", "#who img") == []
        assert first.find_element("id", "patch").size["width"] == 192
        given: dict[str, tuple[str, str, int | None]] = {}
        for index in range(3):  # reader 1 answers by keyboard: the truth, confidence 3
            patch = _wait_index(first, index)
            given[patch] = (*truth[patch], 3)
            _answer_by_keys(first, *given[patch])
        _wait_index(first, 3)
        wait_for(lambda: len(_stored(study, "Dr")) == 3, what="3 stored answers")
        assert "patch 4 of 8" in first.find_element("id", "progress-text").text
        # reader 2 starts meanwhile, by clicks, everything "real, healthy"
        _start(second, server.url, "Reader Two")
        for index in range(8):
            _wait_index(second, index)
            _answer_by_clicks(second, "real", "healthy")
        wait_for(lambda: second.find_element("id", "done").is_displayed(), what="reader 2's final screen")
        # a reload mid-way resumes reader 1 at the same patch (the name is not asked again)
        first.refresh()
        patch = _wait_index(first, 3)
        # clicks, then back (arrow key) shows the answer given, which is changed by keyboard
        _answer_by_clicks(first, *truth[patch])
        _wait_index(first, 4)
        _keys(first, "\ue012")  # ArrowLeft: back
        _wait_index(first, 3)
        assert "selected" in first.find_element("css selector", f'button[data-v="{truth[patch][1]}"]'
                                                ).get_attribute("class")
        flipped = "healthy" if truth[patch][1] == "tumour" else "tumour"
        given[patch] = (truth[patch][0], flipped, 1)
        _answer_by_keys(first, *given[patch])
        _wait_index(first, 4)
        wait_for(lambda: _stored(study, "Dr").get(patch, {}).get("label") == flipped, what="the changed answer")
        # SIGKILL: nothing is lost; an answer given while the server is down is sent when it is back
        server.kill()
        assert len(_stored(study, "Dr")) == 4
        patch = _wait_index(first, 4)
        given[patch] = (*truth[patch], None)
        _answer_by_keys(first, *given[patch])
        _wait_index(first, 5)
        wait_for(lambda: "not saved yet" in first.find_element("id", "status").text, what="the unsaved warning")
        server = ServerProcess(study.root, port=server.port)
        wait_for(lambda: len(_stored(study, "Dr")) == 5, what="the answer given while the server was down")
        first.refresh()
        for index in range(5, 8):
            patch = _wait_index(first, index)
            given[patch] = (*truth[patch], 2)
            _answer_by_keys(first, *given[patch])
        wait_for(lambda: first.find_element("id", "done").is_displayed(), what="reader 1's final screen")
        wait_for(lambda: len(_stored(study, "Dr")) == 8, what="8 stored answers")
        stored = _stored(study, "Dr")
        assert {p: (a["source"], a["label"], a["confidence"]) for p, a in stored.items()} == given
        assert {a["label"] for a in _stored(study, "Reader Two").values()} == {"healthy"}
        # static mode: the page opened from disk keeps answers in the browser and exports them as a file
        first.get((study.reader_dir / "index.html").as_uri())
        wait_for(lambda: first.find_element("id", "name").is_displayed(), what="the static page")
        assert "Opened from disk" in first.find_element("id", "mode-note").text
        first.find_element("id", "name").send_keys("Static Sam")
        first.find_element("id", "start-button").click()
        for index in range(8):
            patch = _wait_index(first, index)
            _answer_by_keys(first, *truth[patch], None)
            if index == 4:  # a reload in static mode resumes too
                first.refresh()
        wait_for(lambda: first.find_element("id", "done").is_displayed(), what="the static final screen")
        first.find_element("id", "export").click()
        exported = wait_for(lambda: [p for p in downloads.glob("answers-*.json")], what="the exported file")[0]
    finally:
        server.kill()
        quit_chromium(first)
        quit_chromium(second)
    data = json.loads(exported.read_text())
    assert data["reader"] == "Static Sam" and data["mode"] == "static" and len(data["answers"]) == 8
    report = tmp_path / "report"
    assert main(["study", "score", str(study.root), str(exported), "--out", str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    rows = {row["reader"]: row for row in metrics["readers"]}
    assert set(rows) == {name, "Reader Two", "Static Sam"}
    assert (rows["Static Sam"]["sensitivity"], rows["Static Sam"]["specificity"]) == (1.0, 1.0)
    assert (rows["Reader Two"]["sensitivity"], rows["Reader Two"]["specificity"]) == (0.0, 1.0)
    assert rows[name]["answered"] == 8 and rows[name]["label_accuracy_real"] + rows[name][
        "label_accuracy_synthetic"] == pytest.approx(2 - 0.25)  # one of 4 in one source flipped
    print(f"browser flow: {time.monotonic() - started:.1f} s")
