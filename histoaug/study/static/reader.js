// histoaug reader study: one reader answers every patch (real or synthetic, healthy or tumour, confidence).
// Static mode (file://): answers live in localStorage and are exported as a file.
// Served mode (histoaug study serve): each answer is POSTed and stored by the server before it counts as
// saved; unsent answers wait in localStorage and are sent again, so a reload or a dead server loses nothing.
// Everything shown that came from a person (the reader name) goes through textContent, never innerHTML.
(function () {
  "use strict";
  var study = window.HISTOAUG_STUDY;
  var served = location.protocol === "http:" || location.protocol === "https:";
  var FORMAT = "histoaug-study-answers/1";
  var prefix = "histoaug-study:" + study.study_id + ":";
  var state = { reader: null, answers: {}, given: [], index: 0, draft: {}, pending: [] };
  var retryTimer = null;
  var sending = false;

  function $(id) { return document.getElementById(id); }
  function show(section) {
    ["start", "task", "done"].forEach(function (name) { $(name).hidden = name !== section; });
    $("who").hidden = section === "start";
    $("progress-box").hidden = section === "start";
  }
  function storage(key, value) {
    try {
      if (value === undefined) { return JSON.parse(localStorage.getItem(prefix + key) || "null"); }
      if (value === null) { localStorage.removeItem(prefix + key); } else { localStorage.setItem(prefix + key, JSON.stringify(value)); }
    } catch (e) { return null; }
    return null;
  }
  function readerSlot(name) { return "reader:" + name.trim().toLowerCase(); }
  function setStatus(text, isError) { var el = $("status"); el.textContent = text; el.className = "note" + (isError ? " error" : ""); }

  function remember(answer) {
    if (state.answers[answer.patch]) { state.given = state.given.filter(function (p) { return p !== answer.patch; }); }
    state.answers[answer.patch] = answer;
    state.given.push(answer.patch);
  }
  function saveLocal() {
    storage(readerSlot(state.reader), { reader: state.reader, answers: state.given.map(function (p) { return state.answers[p]; }),
                                        pending: state.pending });
  }
  function answerCount() { return state.given.length; }
  function firstUnanswered() {
    for (var i = 0; i < study.patches.length; i++) { if (!state.answers[study.patches[i]]) { return i; } }
    return -1;
  }

  // --- served mode: send answers, oldest first, until the server has them all -----------------------------
  function flush() {
    if (!served || sending || !state.pending.length) { return; }  // one request at a time, oldest first
    sending = true;
    var answer = state.pending[0];
    fetch("api/answers", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ study_id: study.study_id, reader: state.reader, answer: answer }) })
      .then(function (response) {
        if (response.ok || (response.status >= 400 && response.status < 500)) {
          return response.json().then(function (body) { return { ok: response.ok, body: body }; });
        }
        throw new Error("server error " + response.status);
      })
      .then(function (result) {
        sending = false;
        if (state.pending[0] === answer) { state.pending.shift(); }  // stored, or refused for good (4xx): not resent
        saveLocal();
        if (!result.ok) { setStatus("the server refused an answer: " + (result.body.error || "bad request"), true); }
        else { setStatus(state.pending.length ? "saving..." : "saved on the server (" + answerCount() + " answers)"); }
        flush();
      })
      .catch(function (error) {
        sending = false;
        setStatus("not saved yet (" + error.message + "); retrying - your answers are kept in this browser", true);
        clearTimeout(retryTimer);
        retryTimer = setTimeout(flush, 2000);
      });
  }

  function loadReader(name) {
    state.reader = name;
    state.answers = {}; state.given = []; state.pending = [];
    var local = storage(readerSlot(name));
    if (local && local.answers) { local.answers.forEach(remember); state.pending = local.pending || []; }
    $("reader-name").textContent = name;
    storage("current", name);
    if (!served) { return Promise.resolve(); }
    return fetch("api/answers?reader=" + encodeURIComponent(name), { cache: "no-store" })
      .then(function (response) { if (!response.ok) { throw new Error(response.status); } return response.json(); })
      .then(function (file) {
        var pending = state.pending;
        state.answers = {}; state.given = [];
        file.answers.forEach(remember);  // the server's answers, then what it has not received yet
        pending.forEach(remember);
        state.pending = pending;
        saveLocal();
        flush();
      })
      .catch(function () { setStatus("the server does not answer; continuing with the answers kept in this browser", true); });
  }

  // --- the task --------------------------------------------------------------------------------------------
  function render() {
    var patch = study.patches[state.index];
    var img = $("patch");
    img.width = img.height = study.display_size;
    img.src = "patches/" + patch + ".png";
    var next = study.patches[state.index + 1];
    if (next) { (new Image()).src = "patches/" + next + ".png"; }
    document.querySelectorAll("button.choice").forEach(function (button) {
      var value = state.draft[button.dataset.q];
      button.classList.toggle("selected", String(value) === button.dataset.v);
      button.setAttribute("aria-pressed", String(value) === button.dataset.v ? "true" : "false");
    });
    $("next").disabled = !(state.draft.source && state.draft.label);
    $("back").disabled = state.index === 0;
    updateProgress();
    img.dataset.patch = patch;
    $("task").dataset.index = String(state.index);
  }
  function updateProgress() {
    var total = study.patches.length;
    $("progress-text").textContent = "patch " + Math.min(state.index + 1, total) + " of " + total + " \u00b7 " + answerCount() + " answered";
    $("progress-bar").style.width = (100 * answerCount() / total) + "%";
  }
  function goTo(index) {
    state.index = index;
    var previous = state.answers[study.patches[index]];
    state.draft = previous ? { source: previous.source, label: previous.label, confidence: previous.confidence } : {};
    show("task");
    render();
  }
  function choose(question, value) {
    if (question === "confidence") { value = Number(value); if (state.draft.confidence === value) { value = null; } }
    state.draft[question] = value;
    render();
  }
  function saveAndNext() {
    if (!(state.draft.source && state.draft.label)) { return; }
    var answer = { patch: study.patches[state.index], source: state.draft.source, label: state.draft.label,
                   confidence: state.draft.confidence || null, time: new Date().toISOString() };
    remember(answer);
    state.pending.push(answer);
    saveLocal();
    if (served) { setStatus("saving..."); flush(); } else { setStatus("kept in this browser (" + answerCount() + " answers)"); }
    if (state.index + 1 < study.patches.length) { goTo(state.index + 1); return; }
    var open = firstUnanswered();
    if (open >= 0) { goTo(open); } else { finish(); }
  }
  function back() { if (state.index > 0) { goTo(state.index - 1); } }
  function finish() {
    show("done");
    state.index = study.patches.length;
    updateProgress();
    $("done-note").textContent = served
      ? "Your answers are stored on the study server. You may also keep a copy."
      : "Your answers are kept in this browser only: download them and send the file to the study's organiser.";
  }
  function resume() {
    var open = firstUnanswered();
    if (open < 0) { finish(); } else { goTo(open); }
  }

  function exportAnswers() {
    var file = { format: FORMAT, study_id: study.study_id, reader: state.reader, mode: served ? "served" : "static",
                 exported: new Date().toISOString(), answers: state.given.map(function (p) { return state.answers[p]; }) };
    var blob = new Blob([JSON.stringify(file, null, 1)], { type: "application/json" });
    var link = document.createElement("a");
    var slug = state.reader.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_|_$/g, "") || "reader";
    link.href = URL.createObjectURL(blob);
    link.download = "answers-" + study.study_id + "-" + slug + ".json";
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }

  function start(name) {
    name = name.normalize("NFC").trim();
    if (!name) { return; }
    if (document.activeElement) { document.activeElement.blur(); }
    loadReader(name).then(resume);
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("title").textContent = study.title || "Reader study";
    document.title = study.title || "Reader study";
    $("mode-note").textContent = served
      ? "Your answers are saved on the study server as you go; you can close the page and come back."
      : "Opened from disk: your answers are kept in this browser; at the end, download them as a file.";
    $("start-form").addEventListener("submit", function (event) { event.preventDefault(); start($("name").value); });
    document.querySelectorAll("button.choice").forEach(function (button) {
      button.addEventListener("click", function () { choose(button.dataset.q, button.dataset.v); button.blur(); });
    });
    $("next").addEventListener("click", function () { saveAndNext(); $("next").blur(); });
    $("back").addEventListener("click", function () { back(); $("back").blur(); });
    $("export").addEventListener("click", exportAnswers);
    $("review").addEventListener("click", function () { goTo(0); });
    $("switch").addEventListener("click", function () { storage("current", null); location.reload(); });
    document.addEventListener("keydown", function (event) {
      if ($("task").hidden || event.ctrlKey || event.metaKey || event.altKey) { return; }
      var key = event.key.toLowerCase();
      var map = { r: ["source", "real"], s: ["source", "synthetic"], h: ["label", "healthy"], t: ["label", "tumour"],
                  "1": ["confidence", "1"], "2": ["confidence", "2"], "3": ["confidence", "3"] };
      if (map[key]) { choose(map[key][0], map[key][1]); }
      else if (key === "enter" || key === "arrowright") { saveAndNext(); }
      else if (key === "backspace" || key === "arrowleft") { back(); }
      else { return; }
      event.preventDefault();
    });
    var current = storage("current");
    if (current) { start(current); } else { show("start"); $("name").focus(); }
  });
}());
