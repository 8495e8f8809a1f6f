// fanout console: the only script. Nothing here builds markup: every fragment is rendered (and
// escaped) by the server; no inline script exists anywhere (the content security policy forbids
// it). Each refresh starts after the previous one ends, so a slow server is not piled on.
//  - data-live="URL": the element's content is replaced with URL's every 2 s.
//  - data-tail="URL" data-after="MS": rows of events that arrived since are added at the top.
"use strict";
(function () {
  const EVERY_MS = 2000;
  const MAX_ROWS = 200;

  async function get(url) {
    let res;
    try {
      res = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    } catch (_) {
      return null; // the proxy is restarting; try again next time
    }
    if (res.status === 401) {
      window.location.reload(); // signed out: the page leads to the sign-in
      return null;
    }
    return res.ok ? res : null;
  }

  function every(fn) {
    const again = async () => {
      if (!document.hidden) await fn();
      setTimeout(again, EVERY_MS);
    };
    setTimeout(again, EVERY_MS);
  }

  for (const el of document.querySelectorAll("[data-live]")) {
    let last = null;
    every(async () => {
      const res = await get(el.dataset.live);
      if (!res) return;
      const html = await res.text();
      if (html !== last) {
        last = html;
        el.innerHTML = html;
        el.dataset.refreshed = String(Date.now());
      }
    });
  }

  for (const body of document.querySelectorAll("[data-tail]")) {
    every(async () => {
      const sep = body.dataset.tail.includes("?") ? "&" : "?";
      const res = await get(body.dataset.tail + sep + "after=" + encodeURIComponent(body.dataset.after));
      if (!res) return;
      const after = res.headers.get("x-fanout-after");
      const rows = document.createElement("tbody");
      rows.innerHTML = await res.text();
      const fresh = [...rows.querySelectorAll("tr[data-event]")].filter(
        (tr) => !body.querySelector('tr[data-event="' + CSS.escape(tr.dataset.event) + '"]'));
      if (fresh.length) {
        body.querySelector("tr.none")?.remove();
        body.prepend(...fresh);
        while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
        body.dataset.refreshed = String(Date.now());
      }
      if (after) body.dataset.after = after;
    });
  }
})();
