// The job launch form: name/value rows, source kind switch, example defaults, submit once.
// No inline scripts (CSP): everything is wired from data-* attributes.
(function () {
  "use strict";
  const form = document.querySelector("[data-job-form]");
  if (!form) return;

  function blankRow(tbody) {
    const template = tbody.querySelector("tr.row-item");
    const row = template.cloneNode(true);
    row.querySelectorAll("input").forEach((input) => { input.value = ""; });
    return row;
  }

  form.addEventListener("click", (event) => {
    const add = event.target.closest("[data-add-row]");
    if (add) {
      const tbody = form.querySelector(`table[data-rows="${add.dataset.addRow}"] tbody`);
      const row = blankRow(tbody);
      tbody.appendChild(row);
      row.querySelector("input").focus();
      return;
    }
    const remove = event.target.closest("[data-remove-row]");
    if (remove) {
      const row = remove.closest("tr");
      const tbody = row.parentElement;
      if (tbody.querySelectorAll("tr.row-item").length > 1) row.remove();
      else row.querySelectorAll("input").forEach((input) => { input.value = ""; });
    }
  });

  // Source: show the example picker or the upload field.
  const kindInputs = form.querySelectorAll('input[name="source_kind"]');
  function showSource() {
    const checked = form.querySelector('input[name="source_kind"]:checked');
    const kind = checked ? checked.value : "example";
    form.querySelectorAll("[data-source]").forEach((box) => { box.hidden = box.dataset.source !== kind; });
  }
  kindInputs.forEach((input) => input.addEventListener("change", showSource));
  showSource();

  // Picking an example fills in its entry script unless the user typed another one.
  const exampleSelect = form.querySelector('select[name="example_name"]');
  const entry = form.querySelector('input[name="entry_script"]');
  function entryOf(name) {
    const item = form.querySelector(`[data-example="${CSS.escape(name || "")}"]`);
    return item ? item.dataset.entry : "";
  }
  function highlightExample() {
    form.querySelectorAll("[data-example]").forEach((item) => {
      item.classList.toggle("selected", exampleSelect && item.dataset.example === exampleSelect.value);
    });
  }
  if (exampleSelect && entry) {
    let previous = exampleSelect.value;
    exampleSelect.addEventListener("change", () => {
      if (!entry.value || entry.value === entryOf(previous)) entry.value = entryOf(exampleSelect.value);
      previous = exampleSelect.value;
      highlightExample();
    });
    highlightExample();
  }

  // New experiment name only matters when "new experiment" is picked.
  const experiment = form.querySelector('select[name="experiment"]');
  const newExperiment = form.querySelector(".field-new_experiment");
  function showNewExperiment() {
    if (experiment && newExperiment) newExperiment.hidden = experiment.value !== "";
  }
  if (experiment) experiment.addEventListener("change", showNewExperiment);
  showNewExperiment();

  // A second click does nothing (the server also dedupes by the form's token).
  form.addEventListener("submit", () => {
    const button = form.querySelector("[data-submit-once]");
    if (button) window.setTimeout(() => { button.disabled = true; button.textContent = "Submitting…"; }, 0);
  });
})();
