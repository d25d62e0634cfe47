// Behaviour shared by every page. No inline scripts: the CSP forbids them.
document.addEventListener("change", (event) => {
  const select = event.target.closest("select[data-navigate]");
  if (select && select.value) window.location.assign(select.value);
});
