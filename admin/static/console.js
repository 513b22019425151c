// Tollgate console: small enhancements; every page works without this file.
(function () {
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) t.title = d.toLocaleString();
    });
  }
  function outputs(root) {
    root.querySelectorAll("input[type=range]").forEach(function (r) {
      var out = root.querySelector('output[for="' + r.id + '"]');
      if (out) r.addEventListener("input", function () { out.textContent = r.value + " %"; });
    });
  }
  document.addEventListener("click", function (e) {
    var b = e.target.closest("button.copy");
    if (!b) return;
    var el = document.getElementById(b.dataset.copy);
    if (el && navigator.clipboard) navigator.clipboard.writeText(el.textContent).then(function () { b.textContent = "Copied"; });
  });
  function enhance(root) { localTimes(root); outputs(root); }
  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  document.addEventListener("htmx:afterSettle", function (e) { enhance(e.target); });
})();
