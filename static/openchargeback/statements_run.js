/* The progress bar of a statements run (issue / send): poll the run's status until it is
 * finished, then reload the page, which lists what was issued and sent. A stale run (no
 * progress: its worker stopped) says so, and is polled more slowly in case it resumes. */
(function () {
  "use strict";
  var root = document.getElementById("ocb-run");
  if (!root || !window.fetch || root.dataset.finished === "1") return;
  var bar = document.getElementById("ocb-run-bar");
  var counts = document.getElementById("ocb-run-counts");
  var summary = document.getElementById("ocb-run-summary");
  var state = document.getElementById("ocb-run-state");
  function tick() {
    fetch(root.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (status) {
        var percent = status.total ? Math.round((100 * status.done) / status.total) : 0;
        bar.className = "ocb-progress-bar" + (status.total ? "" : " ocb-indeterminate");
        if (status.total) bar.style.width = percent + "%";
        counts.textContent = "PDFs " + status.pdfs.rendered + "/" + status.pdfs.total +
          " · emails " + status.emails.sent + "/" + status.emails.total +
          (status.emails.failed ? " · " + status.emails.failed + " failed" : "");
        summary.textContent = status.summary || "";
        state.textContent = status.state_text || "";
        state.className = "ocb-lead" + (status.stale ? " ocb-note" : "");
        if (status.finished) {
          bar.style.width = "100%";
          window.location.reload();
        } else {
          window.setTimeout(tick, status.stale ? 10000 : 1000);
        }
      })
      .catch(function () { window.setTimeout(tick, 3000); });
  }
  tick();
})();
