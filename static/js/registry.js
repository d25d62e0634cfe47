// Registry version page: live ONNX export progress and "try it" results by polling, copy-to-clipboard.
(function () {
  "use strict";

  function text(el, value) { if (el) el.textContent = value == null ? "" : String(value); }

  function sig(x) {
    if (x == null) return "";
    return Number(x).toPrecision(3).replace(/\.?0+e/, "e").replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
  }

  function pollExport(box) {
    const url = box.dataset.exportUrl;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((data) => {
        const status = box.querySelector('[data-field="status"]');
        text(status, data.status.charAt(0).toUpperCase() + data.status.slice(1));
        if (status) status.className = "status status-" + data.status;
        text(box.querySelector('[data-field="stage"]'), data.stage);
        text(box.querySelector('[data-field="message"]'), data.message);
        const log = box.querySelector('[data-field="log"]');
        if (log && log.textContent !== data.log) { text(log, data.log); log.scrollTop = log.scrollHeight; }
        const bar = box.querySelector('[data-field="progress"]');
        if (bar) bar.style.width = Math.round((data.progress || 0) * 100) + "%";
        box.dataset.status = data.status;
        if (data.result_url) {
          const result = box.querySelector('[data-field="result"]');
          if (result && !result.querySelector("a")) {
            result.textContent = "→ ";
            const a = document.createElement("a");
            a.href = data.result_url;
            a.textContent = "v" + data.result_version;
            result.appendChild(a);
            if (data.parity) result.appendChild(document.createTextNode(" max diff " + sig(data.parity.max_abs_diff)));
          }
        }
        if (data.status === "queued" || data.status === "running") setTimeout(() => pollExport(box), 1000);
      })
      .catch(() => setTimeout(() => pollExport(box), 5000));
  }

  function pollTry(box) {
    fetch(box.dataset.tryUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((data) => {
        const status = box.querySelector('[data-field="status"]');
        text(status, data.status.charAt(0).toUpperCase() + data.status.slice(1));
        if (status) status.className = "status status-" + data.status;
        text(box.querySelector('[data-field="message"]'), data.message);
        box.dataset.status = data.status;
        const result = box.querySelector('[data-field="result"]');
        if (result && data.result) {
          result.textContent = "";
          if (data.result.top) {
            const table = document.createElement("table");
            table.className = "data";
            const head = table.createTHead().insertRow();
            ["Class", "Score"].forEach((h) => { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); });
            const body = table.createTBody();
            data.result.top.forEach((row) => {
              const tr = body.insertRow();
              tr.insertCell().textContent = row.class;
              const td = tr.insertCell(); td.className = "num"; td.textContent = Number(row.score).toPrecision(4);
            });
            result.appendChild(table);
          } else {
            const pre = document.createElement("pre");
            pre.textContent = JSON.stringify(data.result.output);
            result.appendChild(pre);
          }
        }
        if (data.status === "queued" || data.status === "running") setTimeout(() => pollTry(box), 1000);
      })
      .catch(() => setTimeout(() => pollTry(box), 5000));
  }

  document.querySelectorAll("[data-export-url]").forEach((box) => {
    if (box.dataset.status === "queued" || box.dataset.status === "running") pollExport(box);
  });
  document.querySelectorAll("[data-try-url]").forEach((box) => {
    if (box.dataset.status === "queued" || box.dataset.status === "running") pollTry(box);
  });
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const source = document.querySelector(button.dataset.copy);
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent).then(() => { button.textContent = "Copied"; });
    }
  });
})();
