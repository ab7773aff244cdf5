// Progressive enhancement: a region with data-live-url is refreshed from the console every
// data-live-ms milliseconds while the page is visible. Without JavaScript the page still works
// (reload it). Focus and scroll position stay where they are: only the region's content changes,
// silently (no live-region announcement every few seconds); a region holding the focus is left alone.
(function () {
  "use strict";
  function live(region) {
    var url = region.getAttribute("data-live-url");
    var every = parseInt(region.getAttribute("data-live-ms"), 10) || 3000;
    var busy = false;
    function refresh() {
      if (busy || document.hidden) { return; }
      if (region.contains(document.activeElement) && document.activeElement !== document.body) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { region.innerHTML = html; } })
        .catch(function () { /* offline for a moment: the next tick tries again */ })
        .then(function () { busy = false; });
    }
    window.setInterval(refresh, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-live-url]"), live);
  });
})();
