// weft dashboard: the only script. It records script errors in the page (so a headless browser's
// DOM dump shows them), refreshes live pages, runs the tap and sends admin actions.
(function () {
  "use strict";
  var errors = [];
  function recordError(msg) {
    errors.push(String(msg));
    var box = document.getElementById("page-errors");
    if (box) { box.hidden = false; box.textContent = errors.join("\n"); }
    document.documentElement.setAttribute("data-errors", String(errors.length));
  }
  window.addEventListener("error", function (e) { recordError("error: " + (e.message || e)); });
  window.addEventListener("unhandledrejection", function (e) { recordError("unhandled rejection: " + (e.reason && e.reason.message || e.reason)); });
  var origError = console.error;
  console.error = function () {
    recordError("console.error: " + Array.prototype.map.call(arguments, String).join(" "));
    return origError.apply(console, arguments);
  };

  function stamp() {
    var u = document.getElementById("updated");
    if (u) { u.textContent = "updated " + new Date().toLocaleTimeString(); }
  }

  function flash(text) {
    var main = document.querySelector("main");
    var p = document.createElement("p");
    p.className = "flash";
    p.textContent = text;
    main.insertBefore(p, main.firstChild);
  }

  // Replace <main> with a fresh render every data-refresh seconds (not while a form is in use).
  function refresher(main) {
    var secs = parseInt(main.getAttribute("data-refresh"), 10);
    if (!(secs > 0)) { return; }
    setInterval(function () {
      if (document.hidden || main.contains(document.activeElement) && document.activeElement.tagName === "INPUT") { return; }
      fetch(location.href, { credentials: "same-origin" }).then(function (r) {
        if (r.redirected || !r.ok) { return null; }
        return r.text();
      }).then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.querySelector("main");
        if (fresh) { main.innerHTML = fresh.innerHTML; stamp(); }
      }).catch(function () { /* the next round tries again */ });
    }, secs * 1000);
  }

  // Buttons: class "act" (a change through the API) and "check" (a link probe, timed).
  function onClick(e) {
    var b = e.target.closest("button.act, button.check");
    if (!b) { return; }
    e.preventDefault();
    if (b.classList.contains("check")) {
      var out = b.parentNode.querySelector(".check-result");
      var t0 = performance.now();
      out.textContent = "probing…";
      fetch(b.getAttribute("data-url"), { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (v) {
        var ms = Math.round(performance.now() - t0);
        if (v.error) { out.textContent = v.error; return; }
        var failed = (v.checks || []).filter(function (c) { return c.verdict === "fail"; });
        out.textContent = (v.ok ? "ok" : "failing: " + failed.map(function (c) { return c.name + " (" + c.detail + ")"; }).join("; ")) + " · probe " + ms + " ms";
        out.className = "check-result " + (v.ok ? "good" : "bad");
      }).catch(function (err) { out.textContent = String(err); });
      return;
    }
    if (!window.confirm(b.getAttribute("data-confirm"))) { return; }
    fetch(b.getAttribute("data-url"), {
      method: b.getAttribute("data-method"),
      credentials: "same-origin",
      headers: { "x-weft-dashboard": "1" }
    }).then(function (r) { return r.json().then(function (v) { return [r.ok, v]; }); }).then(function (res) {
      var v = res[1];
      if (res[0]) { flash((v.results || ["done"]).join("; ")); setTimeout(function () { location.reload(); }, 800); }
      else { flash("refused: " + (v.error || "unknown error")); }
    }).catch(function (err) { flash(String(err)); });
  }

  // The tap: a streaming fetch of NDJSON, one table row per event, newest first.
  function tap(form) {
    var status = document.getElementById("tap-status");
    var tbody = document.querySelector("#tap-events tbody");
    var stopBtn = document.getElementById("tap-stop");
    var controller = null;
    function cell(tr, text, cls) {
      var td = document.createElement("td");
      td.textContent = text == null ? "" : String(text);
      if (cls) { td.className = cls; }
      tr.appendChild(td);
    }
    function row(ev) {
      var tr = document.createElement("tr");
      var src = ev.src || {}, dst = ev.dst || {};
      cell(tr, new Date(ev.t_unix_ms).toLocaleTimeString());
      cell(tr, (ev.cluster ? ev.cluster + "/" : "") + (ev.proxy || ""));
      cell(tr, ev.direction);
      cell(tr, src.identity || src.address || "");
      cell(tr, (dst.service ? dst.service + "." + dst.namespace : "") + (dst.endpoint ? " " + dst.endpoint : ""));
      cell(tr, ev.method);
      cell(tr, ev.path);
      cell(tr, ev.status, ev.status >= 500 ? "bad" : ev.status >= 400 ? "warn" : "good");
      cell(tr, ev.duration_ms != null ? ev.duration_ms.toFixed(1) + " ms" : "", "num");
      cell(tr, ev.mtls ? "yes" : "no");
      tbody.insertBefore(tr, tbody.firstChild);
      while (tbody.rows.length > 500) { tbody.deleteRow(tbody.rows.length - 1); }
    }
    function start() {
      var params = new URLSearchParams();
      Array.prototype.forEach.call(form.elements, function (el) {
        if (el.name && el.value) { params.set(el.name, el.value); }
      });
      controller = new AbortController();
      stopBtn.disabled = false;
      status.textContent = "Tapping…";
      var count = 0;
      fetch("/api/v1/tap?" + params.toString(), { credentials: "same-origin", signal: controller.signal }).then(function (r) {
        if (r.status === 404 || r.status === 501) { status.textContent = "No data yet: this control plane does not serve /v1/tap yet."; return; }
        if (!r.ok) { return r.json().then(function (v) { status.textContent = "Refused: " + (v.error || r.status); }); }
        var reader = r.body.getReader(), dec = new TextDecoder(), buf = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) { status.textContent = "Ended after " + count + " events."; return; }
            buf += dec.decode(chunk.value, { stream: true });
            var lines = buf.split("\n");
            buf = lines.pop();
            lines.forEach(function (l) {
              if (!l.trim()) { return; }
              try { row(JSON.parse(l)); count++; } catch (err) { /* a partial line: wait for the rest */ }
            });
            status.textContent = "Tapping… " + count + " events.";
            return pump();
          });
        }
        return pump();
      }).catch(function (err) {
        if (err.name !== "AbortError") { status.textContent = "Tap failed: " + err; }
      }).then(function () { stopBtn.disabled = true; });
    }
    form.addEventListener("submit", function (e) { e.preventDefault(); if (controller) { controller.abort(); } start(); });
    stopBtn.addEventListener("click", function () { if (controller) { controller.abort(); status.textContent = "Stopped."; } });
    if (form.getAttribute("data-autostart") === "1") { start(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    stamp();
    document.addEventListener("click", onClick);
    var main = document.querySelector("main");
    if (main) { refresher(main); }
    var form = document.getElementById("tap-form");
    if (form) { tap(form); }
  });
})();
