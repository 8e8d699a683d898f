// cronwork dashboard: optional enhancements; every page works without this file.
// 1. Refresh the live part of a page (#live[data-refresh=seconds]) in place, unless the
//    tab is hidden, someone is typing in a form, or has opened a <details> in it.
// 2. Ask before a form with data-confirm acts.
"use strict";
(function () {
  function busy() {
    var el = document.activeElement;
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT");
  }
  function refresh(live) {
    if (document.hidden || busy() || live.querySelector("details[open]")) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (fresh) live.innerHTML = fresh.innerHTML;
      })
      .catch(function () { /* the next tick tries again */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    var seconds = live && parseInt(live.getAttribute("data-refresh"), 10);
    if (seconds > 0) window.setInterval(function () { refresh(live); }, seconds * 1000);
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  });
})();
