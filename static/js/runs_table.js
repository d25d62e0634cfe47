// Experiment page: column chooser, select-all and the Compare button.
(function () {
  "use strict";

  const filterForm = document.querySelector("[data-runs-filter]");
  if (filterForm) {
    // The chooser's checkboxes become the comma-separated ?params= and ?metrics= fields.
    filterForm.addEventListener("change", (event) => {
      const box = event.target.closest("input[data-column-kind]");
      if (!box) return;
      const kind = box.dataset.columnKind;
      const hidden = filterForm.querySelector(`input[data-columns="${kind}"]`);
      const keys = Array.from(filterForm.querySelectorAll(`input[data-column-kind="${kind}"]:checked`)).map((b) => b.value);
      hidden.value = keys.join(",");
      filterForm.requestSubmit();
    });
  }

  const compareForm = document.querySelector("[data-compare-form]");
  if (!compareForm) return;
  const button = compareForm.querySelector("[data-compare-button]");
  const boxes = () => Array.from(compareForm.querySelectorAll('input[name="run"]'));

  function update() {
    const count = boxes().filter((b) => b.checked).length;
    button.disabled = count < 2 || count > 20;
    button.textContent = count ? `Compare selected (${count})` : "Compare selected";
  }

  compareForm.addEventListener("change", (event) => {
    if (event.target.matches("[data-select-all]")) {
      boxes().forEach((b) => { b.checked = event.target.checked; });
    }
    update();
  });

  // One ?runs=a,b,c parameter instead of many ?run= (both work on the server).
  compareForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const ids = boxes().filter((b) => b.checked).map((b) => b.value);
    window.location.assign(`${compareForm.action}?runs=${ids.map(encodeURIComponent).join(",")}`);
  });
  update();
})();
