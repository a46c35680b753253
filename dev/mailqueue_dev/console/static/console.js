// mailqueue console: refresh the overview every few seconds, with a button to pause it.
"use strict";
(function () {
  const panel = document.getElementById("overview");
  if (!panel) return;
  const every = Math.max(1, Number(panel.dataset.every || 5)) * 1000;
  const toggle = document.getElementById("refresh-toggle");
  let paused = false;
  let busy = false;

  async function refresh() {
    if (paused || busy || document.hidden) return;
    busy = true;
    try {
      const answer = await fetch(panel.dataset.src, { headers: { Accept: "text/html" }, cache: "no-store" });
      const html = await answer.text();
      if (!paused) {
        const next = new DOMParser().parseFromString(html, "text/html").body;
        panel.replaceChildren(...next.childNodes);
        panel.dataset.refreshed = String(Date.now());
      }
    } catch (error) {
      panel.dataset.refreshError = String(error);
    } finally {
      busy = false;
    }
  }

  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.textContent = paused ? "Resume auto-refresh" : "Pause auto-refresh";
    });
  }
  setInterval(refresh, every);
})();
