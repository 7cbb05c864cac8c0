// opgate pages: the WebAuthn calls of card login and enrollment, and the
// idle screen lock. Plain script, no build step; served from /static/ under
// a Content-Security-Policy that allows no inline code. Tokens never reach
// this script: the server keeps them in HttpOnly cookies.
"use strict";
(function () {
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function b64urlToBytes(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function bytesToB64url(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) { var e = new Error(j.error || String(r.status)); e.code = j.code; throw e; }
        return j;
      });
    });
  }

  function say(el, text, isError) {
    el.textContent = text;
    el.className = isError ? "status error" : "status";
    if (isError) el.setAttribute("role", "alert");
  }

  function credentialJSON(c) {
    var r = c.response, out = { id: c.id, rawId: bytesToB64url(c.rawId), type: c.type, response: {} };
    out.response.clientDataJSON = bytesToB64url(r.clientDataJSON);
    if (r.attestationObject) {
      out.response.attestationObject = bytesToB64url(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    }
    if (r.authenticatorData) out.response.authenticatorData = bytesToB64url(r.authenticatorData);
    if (r.signature) out.response.signature = bytesToB64url(r.signature);
    if (r.userHandle) out.response.userHandle = bytesToB64url(r.userHandle);
    out.clientExtensionResults = c.getClientExtensionResults ? c.getClientExtensionResults() : {};
    if (c.authenticatorAttachment) out.authenticatorAttachment = c.authenticatorAttachment;
    return out;
  }

  function webauthnError(status, e) {
    if (e && (e.name === "NotAllowedError" || e.name === "AbortError")) return status.dataset.cancelled;
    return (e && e.message) || status.dataset.cancelled;
  }

  var login = document.getElementById("card-login");
  if (login) {
    login.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var status = document.getElementById("card-status");
      if (!window.PublicKeyCredential) { say(status, status.dataset.unsupported, true); return; }
      var pwRow = document.getElementById("card-password-row");
      var pw = document.getElementById("card-password");
      var button = login.querySelector("button");
      button.disabled = true;
      var begin = { operator_id: login.operator_id.value.trim() };
      if (login.terminal_id) begin.terminal_id = login.terminal_id.value.trim();
      post("/login/card/begin", begin).then(function (b) {
        if (b.password_required && !pw.value) {
          pwRow.hidden = false;
          pw.focus();
          say(status, status.dataset.password, false);
          return null;
        }
        var pk = b.publicKey;
        pk.challenge = b64urlToBytes(pk.challenge);
        (pk.allowCredentials || []).forEach(function (c) { c.id = b64urlToBytes(c.id); });
        say(status, status.dataset.touch, false);
        return navigator.credentials.get({ publicKey: pk }).then(function (cred) {
          var body = { login_id: b.login_id, credential: credentialJSON(cred) };
          if (b.password_required) body.password = pw.value;
          return post("/login/card/finish", body);
        });
      }).then(function (done) {
        if (done && done.redirect) window.location.assign(done.redirect);
      }).catch(function (e) {
        say(status, webauthnError(status, e), true);
      }).then(function () { button.disabled = false; });
    });
  }

  var enroll = document.getElementById("enroll-form");
  if (enroll) {
    enroll.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var status = document.getElementById("enroll-status");
      if (!window.PublicKeyCredential) { say(status, status.dataset.unsupported, true); return; }
      var button = enroll.querySelector("button");
      button.disabled = true;
      post("/enroll/begin", { enrollment_code: enroll.enrollment_code.value.trim() }).then(function (b) {
        var pk = b.publicKey;
        pk.challenge = b64urlToBytes(pk.challenge);
        pk.user.id = b64urlToBytes(pk.user.id);
        (pk.excludeCredentials || []).forEach(function (c) { c.id = b64urlToBytes(c.id); });
        say(status, status.dataset.touch, false);
        return navigator.credentials.create({ publicKey: pk }).then(function (cred) {
          return post("/enroll/finish", { enrollment_id: b.enrollment_id, credential: credentialJSON(cred) });
        });
      }).then(function (done) {
        say(status, done.message, false);
        enroll.enrollment_code.value = "";
      }).catch(function (e) {
        say(status, webauthnError(status, e), true);
      }).then(function () { button.disabled = false; });
    });
  }

  // Idle screen lock (R2.8): the server ends a session the policy's idle
  // time after its last request, which for these pages is the page load.
  // Just before that the screen locks and the session is ended for sure.
  var idle = parseInt(document.body.dataset.idleSeconds || "0", 10);
  var logout = document.getElementById("logout-form");
  if (idle > 0 && logout) {
    var lockAt = Math.max(idle - 2, 1) * 1000;
    window.setTimeout(function () {
      var lock = document.getElementById("idle-lock");
      if (lock) lock.hidden = false;
      logout.reason.value = "idle";
      logout.submit();
    }, lockAt);
  }

  // The language switch submits on change as well as with its button.
  var lang = document.getElementById("lang-select");
  if (lang) lang.addEventListener("change", function () { lang.form.submit(); });
})();
