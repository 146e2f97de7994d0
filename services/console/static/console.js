// Tollgate console: progressive enhancement only. Every page works without this file.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function dropDialogParam() {
    var url = new URL(window.location.href);
    if (url.searchParams.has("dialog")) {
      url.searchParams.delete("dialog");
      window.history.replaceState(null, "", url.pathname + url.search);
    }
  }

  // Dialogs: modal, focus kept inside by the browser, focus back to the opener on close.
  var opener = null;
  function openDialog(dialog, from) {
    opener = from || document.activeElement;
    // A dialog the server rendered open (no script needed) becomes modal; removing the
    // attribute, unlike close(), fires no close event.
    if (dialog.open) dialog.removeAttribute("open");
    dialog.showModal();
    var first = dialog.querySelector("[autofocus]") || dialog.querySelector("input, button, a");
    if (first) first.focus();
  }

  document.querySelectorAll("dialog").forEach(function (dialog) {
    dialog.addEventListener("close", function () {
      if (dialog.hasAttribute("data-secret")) {
        // The secret leaves the page with the dialog: only the hint remains.
        var target = dialog.getAttribute("data-return-url");
        dialog.remove();
        window.location.replace(target);
        return;
      }
      dropDialogParam();
      if (opener && document.contains(opener)) opener.focus();
      opener = null;
    });
    // A click on the backdrop closes a dialog (the secret one must be closed on purpose).
    dialog.addEventListener("click", function (event) {
      if (event.target === dialog && !dialog.hasAttribute("data-secret")) dialog.close();
    });
    if (dialog.hasAttribute("data-open-modal")) {
      var invalid = dialog.querySelector("[aria-invalid=true]");
      openDialog(dialog, null);
      if (invalid) invalid.focus();
    }
  });

  document.addEventListener("click", function (event) {
    var link = event.target.closest("[data-dialog]");
    if (link) {
      var dialog = document.getElementById(link.getAttribute("data-dialog"));
      if (dialog) {
        event.preventDefault();
        openDialog(dialog, link);
      }
      return;
    }
    var close = event.target.closest("[data-close-dialog]");
    if (close) {
      event.preventDefault();
      close.closest("dialog").close();
      return;
    }
    var copy = event.target.closest("[data-copy]");
    if (copy) {
      event.preventDefault();
      copyFrom(copy);
    }
  });

  // Links styled and announced as buttons answer the space bar as buttons do.
  document.addEventListener("keydown", function (event) {
    var link = event.target.closest && event.target.closest("a[role=button]");
    if (link && (event.key === " " || event.key === "Spacebar")) {
      event.preventDefault();
      link.click();
    }
  });

  function copyFrom(button) {
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = "value" in source && source.value !== undefined ? source.value : source.textContent;
    var status = button.closest("dialog, section, div").parentNode.querySelector(".copy-status");
    function done(ok) {
      var label = ok ? "Copied" : "Press Ctrl+C to copy";
      button.textContent = label;
      if (status) status.textContent = ok ? "Copied to the clipboard." : "Copy it by hand: it is selected.";
      window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { fallback(); });
    } else {
      fallback();
    }
    function fallback() {
      if (source.select) source.select();
      else window.getSelection().selectAllChildren(source);
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      done(ok);
    }
  }

  // A chart wider than a narrow screen scrolls; its latest buckets are the ones in view.
  document.querySelectorAll(".chart-scroll").forEach(function (box) {
    box.scrollLeft = box.scrollWidth;
  });

  // The project switcher opens the chosen project at once.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { if (select.value) select.form.submit(); });
  });

  // The custom date range shows only for the custom period.
  var period = document.querySelector("[data-period]");
  var range = document.querySelector("[data-custom-range]");
  if (period && range) {
    var sync = function () { range.hidden = period.value !== "custom"; };
    period.addEventListener("change", function () {
      sync();
      if (period.value === "custom") range.querySelector("input").focus();
    });
    sync();
  }
})();
