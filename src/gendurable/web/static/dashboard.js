// The dashboard's only script, and the pages work without it (but for the live refresh).
// Live refresh: every element with data-refresh="URL" is replaced, every data-interval
// seconds, by the HTML fragment at that URL. Paused while the tab is hidden; a failed
// fetch keeps the last content and marks it stale. No library, no build step.
"use strict";
(function () {
  function start(el) {
    var every = Math.max(1, parseFloat(el.dataset.interval || "5")) * 1000;
    var busy = false;
    async function update() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        var response = await fetch(el.dataset.refresh, {
          headers: {"Accept": "text/html"},
          credentials: "same-origin",
          cache: "no-store",
        });
        if (!response.ok) throw new Error(String(response.status));
        el.innerHTML = await response.text();
        el.classList.remove("stale");
        el.dispatchEvent(new CustomEvent("refreshed"));
      } catch (err) {
        el.classList.add("stale");
      } finally {
        busy = false;
      }
    }
    setInterval(update, every);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) update();
    });
  }
  document.querySelectorAll("[data-refresh]").forEach(start);

  // Filters: leave empty fields out of the URL (a disabled field is not submitted).
  document.querySelectorAll("form.filters").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("input[type=text], input:not([type])").forEach(function (input) {
        if (!input.value.trim()) input.disabled = true;
      });
    });
  });
})();
