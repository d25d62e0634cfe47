/* Metric charts: every `.metric-chart` container on the page becomes one plotly chart.
 *
 * Container contract: data-key="<metric key>" and data-series='[{"label", "url", "live"}]'
 * (one entry per run). The JSON views answer with at most about N points, every interval's
 * min and max kept, plus `total_points`; this script draws one trace per series (SVG up to
 * 5,000 points, WebGL beyond), one extra "non-finite" trace when NaN/±Inf exist, its own
 * controls (x axis, log scale, smoothing, "showing M of N points"), re-fetches the visible
 * range on zoom, polls `since=` every 2 s while a series is live (Plotly.extendTraces), and
 * sets data-drawn="1" after the first draw.
 */
(function () {
  "use strict";

  var POLL_MS = 2000;
  var WEBGL_ABOVE = 5000;
  var COLORS = ["#2f6fde", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#1098ad", "#5f3dc4", "#e67700"];

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function withQuery(url, params) {
    var parts = [];
    Object.keys(params).forEach(function (k) {
      if (params[k] !== null && params[k] !== undefined && params[k] !== "") {
        parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(params[k]));
      }
    });
    return url + (url.indexOf("?") >= 0 ? "&" : "?") + parts.join("&");
  }

  function fetchJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }

  // Exponential moving average with bias correction (as TensorBoard does); nulls pass through.
  function smooth(ys, weight, state) {
    if (!weight) return ys.slice();
    var out = new Array(ys.length);
    var last = state ? state.last : 0;
    var n = state ? state.n : 0;
    for (var i = 0; i < ys.length; i++) {
      var y = ys[i];
      if (y === null || !isFinite(y)) { out[i] = null; continue; }
      last = last * weight + (1 - weight) * y;
      n += 1;
      out[i] = last / (1 - Math.pow(weight, n));
    }
    if (state) { state.last = last; state.n = n; }
    return out;
  }

  function xValue(v, axis) {
    if (v === null || v === undefined) return null;
    return axis === "time" ? new Date(v * 1000) : v;
  }

  function toServerX(v, axis) {
    if (axis === "time") {
      var t = typeof v === "number" ? v : Date.parse(String(v).replace(" ", "T") + (String(v).indexOf("Z") >= 0 ? "" : "Z"));
      return t / 1000;
    }
    return Number(v);
  }

  function Chart(container) {
    this.box = container;
    this.key = container.getAttribute("data-key");
    try {
      this.series = JSON.parse(container.getAttribute("data-series") || "[]");
    } catch (e) {
      this.series = [];
    }
    this.axis = "step";
    this.log = false;
    this.smoothing = 0;
    this.range = null; // [from, to] in server x units while zoomed
    this.data = []; // per series: last answer (+ raw y for smoothing)
    this.timer = null;
    this.busy = false;
    this.build();
    this.load();
  }

  Chart.prototype.build = function () {
    var self = this;
    var bar = el("div", { class: "chart-controls" });
    var axis = el("select", { "aria-label": "x axis", "data-control": "xaxis" });
    ["step", "time", "epoch"].forEach(function (a) { axis.appendChild(el("option", { value: a }, a)); });
    axis.addEventListener("change", function () { self.axis = axis.value; self.range = null; self.load(); });
    var logLabel = el("label", {});
    var log = el("input", { type: "checkbox", "data-control": "log" });
    log.addEventListener("change", function () { self.log = log.checked; self.relayoutAxes(); });
    logLabel.appendChild(log);
    logLabel.appendChild(document.createTextNode(" log scale"));
    var smLabel = el("label", {});
    var sm = el("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: "0", "data-control": "smoothing" });
    var smValue = el("span", { class: "muted" }, "0");
    sm.addEventListener("input", function () {
      self.smoothing = parseFloat(sm.value) || 0;
      smValue.textContent = sm.value;
      self.draw();
    });
    smLabel.appendChild(document.createTextNode("smoothing "));
    smLabel.appendChild(sm);
    smLabel.appendChild(smValue);
    var reset = el("button", { type: "button", class: "small", "data-control": "reset" }, "Reset zoom");
    reset.addEventListener("click", function () { self.range = null; self.load(); });
    this.badge = el("span", { class: "chart-badge muted", "data-badge": "" }, "loading…");
    [el("span", {}, "x: "), axis, logLabel, smLabel, reset, this.badge].forEach(function (n) { bar.appendChild(n); });
    this.plot = el("div", { class: "chart-plot" });
    this.box.textContent = "";
    this.box.appendChild(bar);
    this.box.appendChild(this.plot);
  };

  Chart.prototype.points = function () {
    var width = this.plot.clientWidth || this.box.clientWidth || 800;
    return Math.max(200, Math.min(4000, Math.round(width * 2)));
  };

  Chart.prototype.load = function () {
    var self = this;
    var query = { x: this.axis, points: this.points() };
    if (this.range) { query.from = this.range[0]; query.to = this.range[1]; }
    this.busy = true;
    return Promise.all(this.series.map(function (s) {
      return fetchJSON(withQuery(s.url, query)).catch(function () { return null; });
    })).then(function (answers) {
      self.data = answers.map(function (a, i) {
        if (!a) return { failed: true, x: [], y: [], steps: [], nonfinite: [], total_points: 0, returned_points: 0 };
        a.live = a.live !== undefined ? a.live : self.series[i].live;
        return a;
      });
      self.busy = false;
      self.draw();
      self.schedulePoll();
    });
  };

  Chart.prototype.traces = function () {
    var self = this;
    var traces = [];
    var top = null;
    var nonfinite = { x: [], y: [], text: [] };
    this.data.forEach(function (d, i) {
      var ys = smooth(d.y, self.smoothing, (d.ema = { last: 0, n: 0 }));
      var many = d.returned_points > WEBGL_ABOVE;
      traces.push({
        type: many ? "scattergl" : "scatter",
        mode: d.returned_points <= 1 ? "markers" : "lines",
        name: self.series[i].label || "run " + (i + 1),
        x: d.x.map(function (v) { return xValue(v, self.axis); }),
        y: ys,
        customdata: d.steps,
        hovertemplate: "%{y}<br>step %{customdata}<extra>%{fullData.name}</extra>",
        line: { width: 1.5, color: COLORS[i % COLORS.length] },
        connectgaps: false,
      });
      d.y.forEach(function (y) { if (y !== null && isFinite(y) && (top === null || y > top)) top = y; });
      (d.nonfinite || []).forEach(function (n) {
        nonfinite.x.push(xValue(n.x, self.axis));
        nonfinite.text.push((self.series[i].label || "") + ": " + n.value + " at step " + n.step);
      });
    });
    if (nonfinite.x.length) {
      var edge = top === null ? 0 : top;
      traces.push({
        type: "scatter",
        mode: "markers",
        name: "non-finite",
        x: nonfinite.x,
        y: nonfinite.x.map(function () { return edge; }),
        text: nonfinite.text,
        hoverinfo: "text",
        marker: { symbol: "x", color: "#d62828", size: 9 },
      });
    }
    return traces;
  };

  Chart.prototype.layout = function () {
    return {
      margin: { l: 50, r: 10, t: 10, b: 36 },
      height: 280,
      showlegend: this.series.length > 1 || this.data.some(function (d) { return d.nonfinite && d.nonfinite.length; }),
      legend: { orientation: "h", y: -0.2 },
      xaxis: { title: { text: this.axis }, type: this.axis === "time" ? "date" : "linear", autorange: !this.range,
        range: this.range ? [xValue(this.range[0], this.axis), xValue(this.range[1], this.axis)] : undefined },
      yaxis: { type: this.log ? "log" : "linear", autorange: true },
      uirevision: this.axis,
    };
  };

  Chart.prototype.draw = function () {
    var self = this;
    var shown = 0;
    var total = 0;
    this.data.forEach(function (d) { shown += d.returned_points || 0; total += d.total_points || 0; });
    this.badge.textContent = "showing " + shown.toLocaleString() + " of " + total.toLocaleString() + " points" +
      (this.data.some(function (d) { return d.failed; }) ? " (some series failed to load)" : "");
    this.badge.setAttribute("data-shown", String(shown));
    this.badge.setAttribute("data-total", String(total));
    var first = !this.drawn;
    var done = Plotly.react(this.plot, this.traces(), this.layout(), { responsive: true, displaylogo: false });
    Promise.resolve(done).then(function () {
      if (first) {
        self.drawn = true;
        self.plot.on("plotly_relayout", function (ev) { self.onRelayout(ev); });
      }
      self.box.setAttribute("data-drawn", "1");
    });
  };

  Chart.prototype.relayoutAxes = function () {
    Plotly.relayout(this.plot, { "yaxis.type": this.log ? "log" : "linear" });
  };

  Chart.prototype.onRelayout = function (ev) {
    if (!ev) return;
    if (ev["xaxis.autorange"]) {
      if (this.range) { this.range = null; this.load(); }
      return;
    }
    var lo = ev["xaxis.range[0]"], hi = ev["xaxis.range[1]"];
    if (lo === undefined && ev["xaxis.range"]) { lo = ev["xaxis.range"][0]; hi = ev["xaxis.range"][1]; }
    if (lo === undefined || hi === undefined) return;
    var from = toServerX(lo, this.axis), to = toServerX(hi, this.axis);
    if (!isFinite(from) || !isFinite(to)) return;
    if (this.axis === "step") { from = Math.max(0, Math.floor(from)); to = Math.ceil(to); }
    if (this.range && this.range[0] === from && this.range[1] === to) return;
    this.range = [from, to];
    this.load(); // the visible range, at full resolution when it holds few enough points
  };

  Chart.prototype.schedulePoll = function () {
    var self = this;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (!this.data.some(function (d) { return d.live; })) return;
    this.timer = setTimeout(function () { self.poll(); }, POLL_MS);
  };

  Chart.prototype.poll = function () {
    var self = this;
    if (this.busy || this.range || document.hidden) { this.schedulePoll(); return; }
    var live = [];
    this.data.forEach(function (d, i) { if (d.live) live.push(i); });
    Promise.all(live.map(function (i) {
      var d = self.data[i];
      var since = d.last_step === null || d.last_step === undefined ? -1 : d.last_step;
      return fetchJSON(withQuery(self.series[i].url, { x: self.axis, points: self.points(), since: since }))
        .catch(function () { return null; });
    })).then(function (answers) {
      var redraw = false;
      var ext = { x: [], y: [], customdata: [] }, idx = [];
      answers.forEach(function (a, j) {
        if (!a) return;
        var i = live[j], d = self.data[i];
        d.live = a.live;
        if (!a.x.length) return;
        if (a.downsampled || (a.nonfinite && a.nonfinite.length)) { redraw = true; return; }
        var ys = smooth(a.y, self.smoothing, d.ema);
        d.x = d.x.concat(a.x); d.y = d.y.concat(a.y); d.steps = d.steps.concat(a.steps);
        d.returned_points += a.returned_points;
        d.total_points += a.total_points;
        d.last_step = a.last_step;
        idx.push(i);
        ext.x.push(a.x.map(function (v) { return xValue(v, self.axis); }));
        ext.y.push(ys);
        ext.customdata.push(a.steps);
      });
      if (redraw) return self.load();
      if (idx.length) {
        Plotly.extendTraces(self.plot, ext, idx);
        var shown = 0, total = 0;
        self.data.forEach(function (d) { shown += d.returned_points || 0; total += d.total_points || 0; });
        self.badge.textContent = "showing " + shown.toLocaleString() + " of " + total.toLocaleString() + " points";
        self.badge.setAttribute("data-shown", String(shown));
        self.badge.setAttribute("data-total", String(total));
      }
      self.schedulePoll();
    });
  };

  function init() {
    if (typeof Plotly === "undefined") return;
    var boxes = document.querySelectorAll(".metric-chart");
    for (var i = 0; i < boxes.length; i++) {
      if (!boxes[i].chart) boxes[i].chart = new Chart(boxes[i]);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
  window.TorchlightCharts = { init: init, smooth: smooth };
})();
