// Run page: confirm before deleting a tag. Charts poll for new points by themselves (charts.js).
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
