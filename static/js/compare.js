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

  function hasWebGL() {
    try {
      const canvas = document.createElement("canvas");
      return !!(canvas.getContext("webgl") || canvas.getContext("experimental-webgl"));
    } catch (e) {
      return false;
    }
  }

  // Without WebGL (remote desktops, some VMs) plotly's parcoords cannot draw: draw the same
  // picture with SVG lines, one per run, each axis scaled to its own range.
  function drawLines(dims, metricValues) {
    const finite = metricValues.filter((v) => isFinite(v));
    const lo = Math.min(...finite), hi = Math.max(...finite);
    const palette = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
    const colour = (v) => (!isFinite(v) || hi === lo ? "#1971c2" : palette[Math.round(((v - lo) / (hi - lo)) * 4)]);
    const scaled = dims.map((d) => {
      const vals = d.values.filter((v) => isFinite(v));
      const min = d.range ? d.range[0] : Math.min(...vals);
      const max = d.range ? d.range[1] : Math.max(...vals);
      return d.values.map((v) => (isFinite(v) ? (max === min ? 0.5 : (v - min) / (max - min)) : null));
    });
    const raw = dims.map((d) => d.values.map((v) => (d.ticktext && isFinite(v) ? d.ticktext[v] : v)));
    const traces = data.runs.map((run, i) => ({
      type: "scatter", mode: "lines+markers", name: plain(run.name),
      x: dims.map((_, j) => j), y: scaled.map((col) => col[i]),
      text: raw.map((col) => String(col[i])),
      hovertemplate: "%{text}<extra>" + plain(run.name) + "</extra>",
      line: { color: colour(metricValues[i]), width: 2 }, marker: { size: 6 },
    }));
    Plotly.react(target, traces, {
      margin: { l: 40, r: 20, t: 20, b: 60 }, height: 380, showlegend: true,
      xaxis: { tickvals: dims.map((_, j) => j), ticktext: dims.map((d) => d.label), zeroline: false },
      yaxis: { visible: false, range: [-0.05, 1.05] },
    }, { displaylogo: false, responsive: true });
    target.dataset.kind = "lines";
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
    if (!hasWebGL()) {
      drawLines(dims, metricValues);
      target.dataset.drawn = "1";
      return;
    }
    const finite = metricValues.filter((v) => isFinite(v));
    const line = finite.length
      ? { color: metricValues.map((v) => (isFinite(v) ? v : Math.min(...finite))), colorscale: "Viridis", showscale: true,
          colorbar: { title: { text: plain(metric) } } }
      : { color: "#1971c2" };
    Plotly.react(target, [{ type: "parcoords", line: line, dimensions: dims }],
      { margin: { l: 60, r: 60, t: 50, b: 30 }, height: 380 }, { displaylogo: false, responsive: true })
      .then(() => {
        // A context can exist without what parcoords needs; plotly then only prints a notice.
        if (/WebGL is not supported/.test(target.textContent)) {
          Plotly.purge(target);
          drawLines(dims, metricValues);
        } else {
          target.dataset.kind = "parcoords";
        }
        target.dataset.drawn = "1";
      });
  }

  if (select) select.addEventListener("change", draw);
  draw();
})();
