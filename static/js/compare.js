// Compare page: "show only differences" and the parallel-coordinates plot.
(function () {
  "use strict";

  const onlyDiff = document.querySelector("[data-only-diff]");
  if (onlyDiff) {
    onlyDiff.addEventListener("change", () => {
      document.querySelectorAll("#params-table tbody tr").forEach((row) => {
        row.hidden = onlyDiff.checked && !row.classList.contains("diff");
      });
    });
  }

  const dataNode = document.getElementById("parcoords-data");
  const target = document.getElementById("parcoords");
  const select = document.querySelector("[data-parcoords-metric]");
  if (!dataNode || !target || !window.Plotly) return;
  const data = JSON.parse(dataNode.textContent);

  function isNumber(value) {
    return value !== null && value !== "" && isFinite(Number(value));
  }

  // Plotly renders a subset of HTML in labels; names are user input, so show them as plain text.
  function plain(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function dimension(label, values) {
    const present = values.filter((v) => v !== null && v !== undefined);
    if (present.length && present.every(isNumber)) {
      const numbers = values.map((v) => (isNumber(v) ? Number(v) : NaN));
      return { label: plain(label), values: numbers };
    }
    // Categorical: one tick per distinct value.
    const categories = Array.from(new Set(values.map((v) => (v === null || v === undefined ? "—" : String(v))))).sort();
    const index = new Map(categories.map((c, i) => [c, i]));
    return {
      label: plain(label),
      values: values.map((v) => index.get(v === null || v === undefined ? "—" : String(v))),
      tickvals: categories.map((_, i) => i),
      ticktext: categories.map(plain),
      range: [-0.5, Math.max(categories.length - 0.5, 0.5)],
    };
  }

  function draw() {
    const metric = select ? select.value : null;
    const dims = Object.keys(data.params).map((key) => dimension(key, data.params[key]));
    const metricValues = metric ? data.metrics[metric].map((v) => (v === null ? NaN : v)) : [];
    if (metric) dims.push({ label: plain(metric), values: metricValues });
    if (!dims.length) {
      target.textContent = "Nothing to plot: these runs logged no params.";
      return;
    }
    const finite = metricValues.filter((v) => isFinite(v));
    const line = finite.length
      ? { color: metricValues.map((v) => (isFinite(v) ? v : Math.min(...finite))), colorscale: "Viridis", showscale: true,
          colorbar: { title: { text: plain(metric) } } }
      : { color: "#1971c2" };
    Plotly.react(target, [{ type: "parcoords", line: line, dimensions: dims }],
      { margin: { l: 60, r: 60, t: 50, b: 30 }, height: 380 }, { displaylogo: false, responsive: true });
    target.dataset.drawn = "1";
  }

  if (select) select.addEventListener("change", draw);
  draw();
})();
