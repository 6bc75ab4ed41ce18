// scoregate status page: keeps the server-rendered page current. Every second it asks
// /ui/live for the page's blocks and puts in place those that changed; it shows times in the
// viewer's time zone. Without it the page still reads, as of when it was loaded.
(function () {
  "use strict";

  function pad(n) { return n < 10 ? "0" + n : "" + n; }

  function localTime(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function ago(ms) {
    var future = ms < 0, s = Math.floor(Math.abs(ms) / 1000), text;
    if (s < 1) return "just now";
    if (s < 60) text = s + " s";
    else if (s < 3600) text = Math.floor(s / 60) + " min";
    else if (s < 172800) text = Math.floor(s / 3600) + " h" + (Math.floor(s % 3600 / 60) ? " " + Math.floor(s % 3600 / 60) + " min" : "");
    else text = Math.floor(s / 86400) + " d";
    return future ? "in " + text : text + " ago";
  }

  // localize shows every time under root in local time, with its age.
  function localize(root) {
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
    var times = root.querySelectorAll("time[data-when]");
    for (var i = 0; i < times.length; i++) {
      var t = times[i], d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) continue;
      t.textContent = localTime(d);
      if (t.getAttribute("data-when") !== "plain") {
        var age = document.createElement("span");
        age.className = "dim";
        age.textContent = "(" + ago(Date.now() - d.getTime()) + ")";
        t.appendChild(document.createTextNode(" "));
        t.appendChild(age);
      }
      t.title = d.toISOString() + (zone ? " · shown in " + zone : "");
    }
  }

  var main = document.querySelector("main[data-live]");
  localize(document);
  if (!main) return;

  var url = main.getAttribute("data-live");
  var ended = main.getAttribute("data-ended");
  var every = parseInt(main.getAttribute("data-refresh"), 10) || 1000;
  var status = document.getElementById("live-status");
  var seen = {}; // block id -> the HTML last put in place
  var lastOK = null;
  var timer = null;

  function blockIDs() {
    var out = [], els = main.querySelectorAll("[data-block]");
    for (var i = 0; i < els.length; i++) out.push(els[i].id);
    return out.join(" ");
  }

  function setStatus(ok) {
    if (!status) return;
    if (ok) {
      lastOK = new Date();
      status.classList.remove("stale");
      status.textContent = "Live: updated " + localTime(lastOK) + ".";
    } else {
      status.classList.add("stale");
      status.textContent = lastOK ? "Not updated since " + localTime(lastOK) + ": the gateway does not answer." :
        "Not live: the gateway does not answer.";
    }
  }

  function apply(data) {
    var blocks = data.blocks || [];
    var ids = blocks.map(function (b) { return b.id; }).join(" ");
    if (ids !== blockIDs()) {
      // A service came or went, or the role changed what may be read: load the page again.
      window.location.reload();
      return false;
    }
    var focused = document.activeElement && document.activeElement.id;
    blocks.forEach(function (b) {
      if (seen[b.id] === b.html) return;
      var el = document.getElementById(b.id);
      var tpl = document.createElement("template");
      tpl.innerHTML = b.html;
      var fresh = tpl.content.firstElementChild;
      if (!el || !fresh) return;
      localize(fresh);
      el.replaceWith(fresh);
      seen[b.id] = b.html;
    });
    if (focused && document.activeElement && document.activeElement.id !== focused) {
      var again = document.getElementById(focused);
      if (again) again.focus({ preventScroll: true });
    }
    return true;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(tick, every);
  }

  function tick() {
    if (document.hidden) { schedule(); return; }
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (resp) {
        if (resp.status === 401) {
          window.location.assign(ended);
          return null;
        }
        if (!resp.ok) throw new Error("status " + resp.status);
        return resp.json();
      })
      .then(function (data) {
        if (data === null) return;
        if (apply(data)) setStatus(true);
        schedule();
      })
      .catch(function () {
        setStatus(false);
        schedule();
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) tick();
  });
  tick();
})();
