// Run page: confirm tag deletion; reload the overview while the run is live (charts poll by themselves).
(function () {
  "use strict";

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.action && form.action.endsWith("/tags/delete/")) {
      const key = form.querySelector('input[name="key"]').value;
      if (!window.confirm(`Delete the tag “${key}”?`)) event.preventDefault();
    }
  });
})();
