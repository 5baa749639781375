// Keyboard labelling: 0-5 and a (-2), p (-1) vote, s skips, u undoes the last label.
// Each key presses the button that carries it (data-key), so the page works without this too.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  const target = event.target;
  if (target instanceof HTMLInputElement || target instanceof HTMLSelectElement) return;
  const button = document.querySelector(`button[data-key="${CSS.escape(event.key)}"]`);
  if (button === null) return;
  event.preventDefault();
  document.querySelectorAll("button[data-key]").forEach((b) => { b.disabled = true; });
  button.disabled = false;
  button.click();
});
