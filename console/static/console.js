// Conduit console: the live decision on the compose page, the fields
// that depend on the grading, and attachment uploads with their
// progress. Everything else works without it.
(function () {
  "use strict";
  var form = document.getElementById("compose");
  if (!form) { return; }
  var preview = document.getElementById("preview");
  var csrf = preview.getAttribute("data-csrf");

  function checked(name) {
    var el = form.querySelector("input[name='" + name + "']:checked");
    return el ? el.value : "";
  }

  // Only the chosen scheme's codes are shown; the authorisation and the
  // conditions appear when the handling code needs them.
  function dependents() {
    var scheme = checked("grading") || "5x5x5";
    var schemes = form.querySelectorAll(".scheme");
    for (var i = 0; i < schemes.length; i++) {
      schemes[i].hidden = schemes[i].getAttribute("data-scheme") !== scheme;
    }
    var auth = document.getElementById("authorisation");
    var cond = document.getElementById("conditions");
    var h5 = document.getElementById("handling5").value;
    var h3 = document.getElementById("handling3").value;
    document.getElementById("authorisation-field").hidden = !(scheme === "5x5x5" && h5 === "2") && auth.value === "";
    document.getElementById("conditions-field").hidden = !(scheme === "3x5x2" && h3 === "C") && cond.value === "";
  }

  var timer = null;
  var seq = 0;
  function refresh() {
    var mine = ++seq;
    var body = new URLSearchParams(new FormData(form));
    fetch("/compose/preview", {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded" }
    }).then(function (r) {
      if (r.status === 303 || r.redirected) { window.location = "/signin?expired=1"; return null; }
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (html !== null && html !== undefined && mine === seq) {
        preview.innerHTML = html;
        preview.setAttribute("data-ready", String(mine));
      }
    }).catch(function () {});
  }
  function changed() {
    dependents();
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  }
  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
  dependents();
  refresh();

  // Uploads: each file is streamed to the gateway, which holds it
  // encrypted until the package is sent.
  var attach = document.getElementById("attach");
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  var list = document.getElementById("uploads");
  var send = document.getElementById("send");
  function uploadNext(files, i) {
    if (i >= files.length) { send.disabled = false; attach.value = ""; return; }
    var f = files[i];
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/uploads");
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("X-Filename", encodeURIComponent(f.name));
    xhr.setRequestHeader("Content-Type", f.type || "application/octet-stream");
    bar.hidden = false;
    bar.value = 0;
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) {
        var pc = Math.floor(100 * e.loaded / e.total);
        bar.value = pc;
        bar.setAttribute("data-max-seen", String(Math.max(pc, Number(bar.getAttribute("data-max-seen") || 0))));
        status.textContent = "Uploading " + f.name + ": " + pc + "%";
      }
    };
    xhr.onload = function () {
      if (xhr.status === 201) {
        var r = JSON.parse(xhr.responseText);
        var li = document.createElement("li");
        var inp = document.createElement("input");
        inp.type = "hidden"; inp.name = "upload"; inp.value = r.id;
        li.appendChild(inp);
        li.appendChild(document.createTextNode(r.name + " (" + r.size + " bytes)"));
        list.appendChild(li);
        bar.value = 100;
        status.textContent = f.name + " uploaded and held encrypted.";
      } else {
        var msg = "the gateway refused it";
        try { msg = JSON.parse(xhr.responseText).error; } catch (e) {}
        status.textContent = f.name + " was not uploaded: " + msg;
      }
      uploadNext(files, i + 1);
    };
    xhr.onerror = function () {
      status.textContent = f.name + " was not uploaded: the connection failed.";
      uploadNext(files, i + 1);
    };
    xhr.send(f);
  }
  attach.addEventListener("change", function () {
    if (!attach.files.length) { return; }
    send.disabled = true;
    uploadNext(Array.prototype.slice.call(attach.files), 0);
  });
})();
