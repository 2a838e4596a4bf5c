// Forms with data-confirm ask before they submit. Inline onsubmit handlers are not allowed by the
// site's Content-Security-Policy, so this one listener does it for every page.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
}, true);
