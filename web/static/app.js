// session-tally web: a little JavaScript on server-rendered pages (no build step).
// - follows the page's server-sent events stream (body[data-stream]) and swaps in the HTML it sends;
// - opens and closes <dialog>s (the Edit modal), shows "Other…" inputs of window selects;
// - shows <time> elements in the browser's time zone.
(function () {
  "use strict";

  function localize(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) {
        el.textContent = d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
        el.title = el.getAttribute("datetime");
      }
    });
  }

  function customInputs(root) {
    root.querySelectorAll("select[data-custom]").forEach(function (sel) {
      var box = document.getElementById(sel.dataset.custom);
      if (!box) return;
      var update = function () { box.hidden = sel.value !== "custom"; };
      sel.addEventListener("change", update);
      update();
    });
  }

  function follow(url) {
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    window.sessionTallyStream = { source: source, updates: 0 };
    source.addEventListener("tab", function (e) {
      var data = JSON.parse(e.data);
      var tab = document.getElementById("tab");
      if (!tab) return;
      var open = Array.prototype.map.call(tab.querySelectorAll("details[open]"), function (d) {
        return d.closest("tr") && d.closest("tr").dataset.meeting;
      });
      tab.innerHTML = data.html;
      open.forEach(function (id) {
        var row = id && tab.querySelector('tr[data-meeting="' + id + '"] details');
        if (row) row.open = true;
      });
      localize(tab);
      window.sessionTallyStream.updates += 1;
    });
    source.addEventListener("notices", function (e) {
      var data = JSON.parse(e.data);
      var box = document.getElementById("notices");
      if (box) box.innerHTML = data.html;
      // a page that shows pending changes reloads once the pipeline has answered one of them
      if (document.body.dataset.reloadOnNotice && String(data.pending) !== document.body.dataset.pending) {
        window.location.reload();
      }
    });
  }

  document.addEventListener("click", function (e) {
    var opener = e.target.closest("[data-open-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.dataset.openDialog);
      if (dialog) dialog.showModal();
    }
    var closer = e.target.closest("[data-close-dialog]");
    if (closer) closer.closest("dialog").close();
  });

  document.addEventListener("DOMContentLoaded", function () {
    localize(document);
    customInputs(document);
    var verification = document.getElementById("session_verification");
    if (verification) {
      var update = function () {
        document.querySelectorAll("[data-needs-verification]").forEach(function (el) {
          el.classList.toggle("dimmed", !verification.checked);
        });
      };
      verification.addEventListener("change", update);
      update();
    }
    follow(document.body.dataset.stream);
  });
})();
