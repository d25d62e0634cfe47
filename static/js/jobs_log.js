// The run page's job panel: live log (offset polling), status and progress, cancel confirmation.
(function () {
  "use strict";
  const POLL_MS = 1000;
  const MAX_LINES = 20000;

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  const pre = document.getElementById("job-log");
  if (!pre) return;
  const panel = pre.closest(".job-panel");
  const url = pre.dataset.logsUrl;
  const nodeSelect = panel.querySelector("[data-log-node]");
  const rankInput = panel.querySelector("[data-log-rank]");
  const follow = panel.querySelector("[data-log-follow]");
  const state = panel.querySelector("[data-log-state]");
  let offset = 0;
  let live = pre.dataset.live === "1";
  let timer = null;
  let generation = 0;  // a filter change abandons requests already in flight
  let shown = 0;

  function formatDuration(seconds) {
    if (seconds < 60) return `${Math.round(seconds)}s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes}m ${String(Math.round(seconds % 60)).padStart(2, "0")}s`;
    return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
  }

  function append(lines) {
    if (!lines.length) return;
    const fragment = document.createDocumentFragment();
    for (const line of lines) {
      const span = document.createElement("span");
      span.className = `log-line log-${line.stream}`;
      const where = line.rank === null || line.rank === undefined ? `node ${line.node_rank}` : `node ${line.node_rank} rank ${line.rank}`;
      span.dataset.node = line.node_rank;
      span.title = `${where} · ${line.stream}${line.source ? " " + line.source : ""} · ${line.time}`;
      // textContent: whatever the script printed is shown as text, never as HTML.
      span.textContent = `[${where}] ${line.text}\n`;
      fragment.appendChild(span);
    }
    pre.appendChild(fragment);
    shown += lines.length;
    while (shown > MAX_LINES && pre.firstChild) { pre.removeChild(pre.firstChild); shown -= 1; }
    if (follow && follow.checked) pre.scrollTop = pre.scrollHeight;
  }

  function showStatus(data) {
    const badge = panel.querySelector("[data-job-status]");
    if (badge) { badge.textContent = data.status_display; badge.className = `status status-${data.status}`; }
    const headerBadge = document.getElementById("run-status");
    if (headerBadge) { headerBadge.textContent = data.status_display; headerBadge.className = `status status-${data.status}`; }
    const reason = panel.querySelector("[data-job-reason]");
    if (reason) reason.textContent = data.status_reason || "";
    const progress = panel.querySelector("[data-job-progress]");
    if (progress && data.progress !== null && data.progress !== undefined) {
      progress.hidden = false;
      progress.querySelector("progress").value = data.progress;
      let text = `${Math.round(data.progress * 100)}%`;
      if (data.live && data.eta_seconds) text += ` · about ${formatDuration(data.eta_seconds)} left`;
      progress.querySelector("[data-job-progress-text]").textContent = text;
    }
    if (!data.live) {
      const cancel = panel.querySelector("[data-cancel-button]");
      if (cancel) cancel.closest("form").remove();
    }
  }

  function query() {
    const params = new URLSearchParams({ after: String(offset) });
    if (nodeSelect && nodeSelect.value !== "") params.set("node", nodeSelect.value);
    if (rankInput && rankInput.value !== "") params.set("rank", rankInput.value);
    return `${url}?${params}`;
  }

  async function poll() {
    const mine = generation;
    timer = null;
    try {
      const response = await fetch(query(), { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (mine !== generation) return;
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      if (mine !== generation) return;
      append(data.lines);
      offset = data.next_offset;
      const wasLive = live;
      live = data.live;
      showStatus(data);
      if (state) state.textContent = live ? "live" : (wasLive ? "finished — reload the page for outputs" : "");
      if (data.more) { schedule(0); return; }
      if (live || wasLive) schedule(POLL_MS);  // one more poll after the end drains the last lines
    } catch (error) {
      if (mine !== generation) return;
      if (state) state.textContent = `log unavailable (${error.message}), retrying`;
      schedule(POLL_MS * 3);
    }
  }

  function schedule(delay) {
    if (timer) window.clearTimeout(timer);
    timer = window.setTimeout(poll, delay);
  }

  function restart() {
    generation += 1;
    offset = 0;
    shown = 0;
    pre.textContent = "";
    schedule(0);
  }
  if (nodeSelect) nodeSelect.addEventListener("change", restart);
  if (rankInput) rankInput.addEventListener("change", restart);
  schedule(0);
})();
