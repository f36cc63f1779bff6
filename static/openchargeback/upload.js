/* The admin's upload page: drag and drop several FOCUS files, check the source and period
 * guessed from each name, upload them one by one with a progress bar, then poll each import's
 * state until its result (charges, rows, billed, flagged, or the errors by line) is known.
 * No build step: plain JavaScript. Without JavaScript the form posts the files as they are. */
(function () {
  "use strict";

  var root = document.getElementById("ocb-upload");
  if (!root || !window.FormData || !window.fetch) {
    return;
  }
  root.classList.add("ocb-js");

  var form = document.getElementById("ocb-upload-form");
  var input = document.getElementById("id_file");
  var drop = document.getElementById("ocb-dropzone");
  var queue = document.getElementById("ocb-queue");
  var tbody = queue.querySelector("tbody");
  var start = document.getElementById("ocb-start");
  var summary = document.getElementById("ocb-summary");
  var sources = JSON.parse(document.getElementById("ocb-sources").textContent);
  var maxBytes = parseInt(root.dataset.maxBytes, 10);
  var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var items = [];
  var running = false;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") {
        node.textContent = attrs[key];
      } else if (key === "className") {
        node.className = attrs[key];
      } else {
        node.setAttribute(key, attrs[key]);
      }
    });
    (children || []).forEach(function (child) {
      if (child) {
        node.appendChild(child);
      }
    });
    return node;
  }

  function accepted(name) {
    var lower = name.toLowerCase();
    return lower.slice(-4) === ".csv" || lower.slice(-7) === ".csv.gz";
  }

  function humanSize(bytes) {
    var units = ["B", "KB", "MB", "GB"];
    var i = 0;
    while (bytes >= 1024 && i < units.length - 1) {
      bytes /= 1024;
      i += 1;
    }
    return (i ? bytes.toFixed(1) : bytes) + " " + units[i];
  }

  function setStatus(item, state, text, percent) {
    item.status.className = "ocb-status ocb-status-" + state;
    item.label.textContent = text;
    if (percent === null) {
      item.bar.className = "ocb-progress-bar ocb-indeterminate";
      item.bar.style.width = "";
    } else {
      item.bar.className = "ocb-progress-bar";
      item.bar.style.width = Math.max(0, Math.min(100, percent)) + "%";
    }
    item.progress.hidden = state === "done" || state === "failed" || state === "rejected" || state === "waiting";
  }

  function updateControls() {
    var waiting = items.filter(function (i) { return i.state === "waiting"; });
    var ready = waiting.filter(function (i) { return i.source.value.trim(); });
    start.disabled = running || ready.length === 0 || ready.length !== waiting.length;
    start.value = waiting.length > 1 ? "Import " + waiting.length + " files" : "Import";
    queue.hidden = items.length === 0;
    if (waiting.length && ready.length !== waiting.length) {
      summary.textContent = "Choose or name the source of every file first.";
    } else if (!running) {
      summary.textContent = "";
    }
  }

  // Known sources to pick from; a name not in the list creates that source on import.
  var sourceList = el("datalist", { id: "ocb-source-list" });
  sources.forEach(function (s) {
    sourceList.appendChild(el("option", { value: s.slug, text: s.name }));
  });
  root.appendChild(sourceList);
  var knownSlugs = sources.map(function (s) { return s.slug; });

  function markNewSource(select) {
    var name = select.value.trim().toLowerCase();
    var isNew = name !== "" && knownSlugs.indexOf(name) < 0;
    select.classList.toggle("ocb-new-source", isNew);
    select.title = isNew ? "New source: created when this file is imported" : "";
  }

  function addFile(file) {
    var select = el("input", {
      type: "text", size: "12", placeholder: "source", "aria-label": "Source of " + file.name,
    });
    select.setAttribute("list", "ocb-source-list");
    var period = el("input", {
      type: "text", size: "8", placeholder: "from file", pattern: "[0-9]{4}-[0-9]{2}",
      "aria-label": "Period of " + file.name,
    });
    var replace = el("input", {
      type: "checkbox", "aria-label": "Replace every earlier import of the source and period with " + file.name,
    });
    var bar = el("div", { className: "ocb-progress-bar" });
    var progress = el("div", { className: "ocb-progress" }, [bar]);
    var label = el("span", { className: "ocb-status-text" });
    var details = el("div", { className: "ocb-status-details" });
    var status = el("div", { className: "ocb-status" }, [progress, label, details]);
    var remove = el("button", { type: "button", className: "ocb-remove", title: "Remove from the list", text: "×" });
    var row = el("tr", {}, [
      el("td", {}, [remove, el("span", { className: "ocb-file-name", text: file.name })]),
      el("td", { className: "ocb-num", text: humanSize(file.size) }),
      el("td", {}, [select]),
      el("td", {}, [period]),
      el("td", {}, [replace]),
      el("td", {}, [status]),
    ]);
    var item = {
      file: file, row: row, source: select, period: period, replace: replace, bar: bar,
      progress: progress, label: label, details: details, status: status, state: "waiting",
    };
    remove.addEventListener("click", function () {
      if (item.state !== "waiting" && item.state !== "rejected") {
        return;
      }
      items.splice(items.indexOf(item), 1);
      row.remove();
      updateControls();
    });
    select.addEventListener("input", function () { markNewSource(select); updateControls(); });
    tbody.appendChild(row);
    items.push(item);
    if (!accepted(file.name)) {
      reject(item, "Only .csv and .csv.gz files can be imported.");
    } else if (file.size > maxBytes) {
      reject(item, "Larger than the upload limit of " + humanSize(maxBytes) + ".");
    } else {
      setStatus(item, "waiting", "ready", 0);
    }
    return item;
  }

  function reject(item, message) {
    item.state = "rejected";
    [item.source, item.period, item.replace].forEach(function (field) { field.disabled = true; });
    setStatus(item, "rejected", message, 0);
  }

  function guess(newItems) {
    var pending = newItems.filter(function (i) { return i.state === "waiting"; });
    var names = pending.map(function (i) { return i.file.name; });
    if (!names.length) {
      return;
    }
    var query = names.map(function (n) { return "name=" + encodeURIComponent(n); }).join("&");
    fetch(root.dataset.guessUrl + "?" + query, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        data.guesses.forEach(function (g, index) {
          var item = pending[index];
          if (!item || item.state !== "waiting") {
            return;
          }
          if ((g.source || g.new_source) && !item.source.value) {
            item.source.value = g.source || g.new_source;
            item.source.classList.add("ocb-guessed");
            markNewSource(item.source);
          }
          if (g.period && !item.period.value) {
            item.period.value = g.period;
            item.period.classList.add("ocb-guessed");
          }
        });
        updateControls();
      })
      .catch(function () { updateControls(); });
  }

  function addFiles(fileList) {
    var added = Array.prototype.map.call(fileList, addFile);
    guess(added);
    updateControls();
  }

  function showResult(item, result) {
    item.details.textContent = "";
    if (result.ok) {
      item.state = "done";
      var text = result.charges.toLocaleString() + " charges from " + result.rows.toLocaleString() +
        " rows · billed " + result.billed_total + " · " + result.period;
      setStatus(item, "done", "✓ Imported", 100);
      item.details.appendChild(el("span", { text: text }));
      if (result.flagged) {
        item.details.appendChild(document.createTextNode(" · "));
        item.details.appendChild(el("a", { href: result.review_url, text: result.flagged.toLocaleString() + " flagged" }));
      }
      if (result.supersedes) {
        item.details.appendChild(document.createTextNode(" · supersedes import #" + result.supersedes));
      }
      item.details.appendChild(document.createTextNode(" · "));
      item.details.appendChild(el("a", { href: result.url, text: "import #" + result.id }));
      return;
    }
    item.state = result.status === "rejected" ? "rejected" : "failed";
    setStatus(item, item.state, result.status === "rejected" ? "Not imported" : "✗ Failed", 100);
    item.details.appendChild(el("div", { className: "ocb-error", text: result.error || "The import failed." }));
    if (result.errors && result.errors.length) {
      var list = el("ul", { className: "ocb-errors" });
      result.errors.slice(0, 10).forEach(function (e) {
        var where = e.line ? "line " + e.line : "file";
        if (e.column) {
          where += ", " + e.column;
        }
        if (e.value) {
          where += ", “" + String(e.value).slice(0, 60) + "”";
        }
        list.appendChild(el("li", { text: where + ": " + e.message }));
      });
      item.details.appendChild(list);
      if (result.error_count > 10) {
        item.details.appendChild(el("a", { href: result.url, text: "all " + result.error_count + " errors" }));
      }
    }
  }

  function poll(item, url) {
    return new Promise(function (resolve) {
      function check() {
        fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (response) { return response.json(); })
          .then(function (result) {
            if (result.done) {
              showResult(item, result);
              resolve();
              return;
            }
            var text = result.status === "pending" ? "queued…" : "importing… " + Math.round(result.seconds) + " s";
            setStatus(item, "running", text, null);
            window.setTimeout(check, 1000);
          })
          .catch(function () { window.setTimeout(check, 3000); });
      }
      check();
    });
  }

  function upload(item) {
    return new Promise(function (resolve) {
      var data = new FormData();
      data.append("csrfmiddlewaretoken", csrf);
      data.append("file", item.file, item.file.name);
      data.append("source", item.source.value.trim());
      data.append("period", item.period.value.trim());
      if (item.replace.checked) {
        data.append("replace", "on");
      }
      [item.source, item.period, item.replace].forEach(function (field) { field.disabled = true; });
      item.state = "uploading";
      setStatus(item, "uploading", "uploading…", 0);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", root.dataset.uploadUrl);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) {
          var percent = (100 * event.loaded) / event.total;
          setStatus(item, "uploading", percent < 100 ? "uploading… " + Math.round(percent) + " %" : "importing…",
            percent < 100 ? percent : null);
        }
      });
      xhr.addEventListener("load", function () {
        var payload = null;
        try {
          payload = JSON.parse(xhr.responseText);
        } catch (err) {
          payload = null;
        }
        if (xhr.status !== 200 || !payload || !payload.results || !payload.results.length) {
          var message = payload && payload.errors ? JSON.stringify(payload.errors) : "The server answered " + xhr.status + ".";
          showResult(item, { ok: false, status: "failed", error: message });
          resolve();
          return;
        }
        var result = payload.results[0];
        if (result.done) {
          showResult(item, result);
          resolve();
        } else {
          item.state = "running";
          setStatus(item, "running", "queued…", null);
          poll(item, result.status_url).then(resolve);
        }
      });
      xhr.addEventListener("error", function () {
        showResult(item, { ok: false, status: "failed", error: "The upload was interrupted." });
        resolve();
      });
      xhr.send(data);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var waiting = items.filter(function (i) { return i.state === "waiting"; });
    if (!waiting.length || running) {
      return;
    }
    running = true;
    updateControls();
    var done = 0;
    summary.textContent = "0 of " + waiting.length + " done";
    waiting.reduce(function (chain, item) {
      return chain.then(function () {
        return upload(item).then(function () {
          done += 1;
          summary.textContent = done + " of " + waiting.length + " done";
        });
      });
    }, Promise.resolve()).then(function () {
      running = false;
      var failed = items.filter(function (i) { return i.state === "failed"; }).length;
      updateControls();
      summary.textContent = done + " file" + (done === 1 ? "" : "s") + " processed" + (failed ? ", " + failed + " failed" : "") + ".";
    });
  });

  input.addEventListener("change", function () {
    addFiles(input.files);
    input.value = "";
  });
  ["dragenter", "dragover"].forEach(function (name) {
    drop.addEventListener(name, function (event) {
      event.preventDefault();
      drop.classList.add("ocb-dragging");
    });
  });
  ["dragleave", "dragend"].forEach(function (name) {
    drop.addEventListener(name, function () { drop.classList.remove("ocb-dragging"); });
  });
  drop.addEventListener("drop", function (event) {
    event.preventDefault();
    drop.classList.remove("ocb-dragging");
    if (event.dataTransfer && event.dataTransfer.files.length) {
      addFiles(event.dataTransfer.files);
    }
  });
  // Dropping a file anywhere else on the page must not navigate away from it.
  window.addEventListener("dragover", function (event) { event.preventDefault(); });
  window.addEventListener("drop", function (event) { event.preventDefault(); });
  updateControls();
})();
