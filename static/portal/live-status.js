// Live VM status: polls the JSON endpoint and updates elements marked data-vm-status / data-vm-progress.
// Without JS the pages still work: reload them.
(function () {
  const endpoint = document.body.dataset.vmStatusUrl;
  const cells = document.querySelectorAll("[data-vm-status]");
  if (!endpoint || cells.length === 0) return;
  async function refresh() {
    try {
      const answer = await fetch(endpoint, {headers: {"Accept": "application/json"}, credentials: "same-origin"});
      if (!answer.ok) return;
      const vms = (await answer.json()).vms;
      cells.forEach(function (cell) {
        const vm = vms[cell.dataset.vmStatus];
        if (!vm) return;
        cell.textContent = vm.label;
        cell.className = "badge status-" + vm.status;
        cell.title = vm.message || "";
        const progress = document.querySelector('[data-vm-progress="' + cell.dataset.vmStatus + '"]');
        if (progress) {
          progress.textContent = vm.operation ? vm.operation.kind + " " + vm.operation.progress + "%" : "";
        }
      });
    } catch (error) { /* offline for a moment: try again next tick */ }
  }
  setInterval(refresh, 3000);
})();
