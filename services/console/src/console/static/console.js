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
    function inUse() {
      return region.contains(document.activeElement) && document.activeElement !== document.body;
    }
    function refresh() {
      if (busy || document.hidden || inUse()) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        // someone may have started filling a form while the request was under way: keep what they typed
        .then(function (html) { if (html !== null && !inUse()) { region.innerHTML = html; } })
        .catch(function () { /* offline for a moment: the next tick tries again */ })
        .then(function () { busy = false; });
    }
    window.setInterval(refresh, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-live-url]"), live);
  });
})();
