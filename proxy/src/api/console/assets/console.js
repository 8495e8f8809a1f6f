// fanout console: the only script. Parts of a page marked data-live="URL" are fetched again
// every 2 seconds and replaced with what the server rendered (escaped there, like every page).
// No inline script anywhere: the content security policy forbids it.
"use strict";
(function () {
  const EVERY_MS = 2000;
  for (const el of document.querySelectorAll("[data-live]")) {
    let last = null;
    const refresh = async () => {
      if (document.hidden) return;
      let res;
      try {
        res = await fetch(el.dataset.live, { credentials: "same-origin", cache: "no-store" });
      } catch (_) {
        return; // the proxy is restarting; try again next time
      }
      if (res.status === 401) {
        window.location.reload(); // signed out: the page leads to the sign-in
        return;
      }
      if (!res.ok) return;
      const html = await res.text();
      if (html !== last) {
        last = html;
        el.innerHTML = html;
        el.dataset.refreshed = String(Date.now());
      }
    };
    setInterval(refresh, EVERY_MS);
  }
})();
