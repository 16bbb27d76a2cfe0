"""The console's style sheet and script: constants, served at ``/console/static/``.

The script only reads JSON and writes with ``textContent`` (never ``innerHTML``):
the feed polls ``<session path>/feed/events?after=N`` each second; the approvals page
asks ``<session path>/pending`` every few seconds (each path from a ``data-src``) and
offers a reload when the list changed.
"""

from __future__ import annotations

__all__ = ["CSS", "JS"]

CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1f24;
background:#f5f6f8}
header{background:#1b1f24;color:#fff;padding:.5rem .8rem;display:flex;flex-wrap:wrap;
align-items:center;gap:.6rem}
header a,header button{color:#fff;text-decoration:none;margin-right:.7rem;font:inherit}
header nav{display:flex;flex-wrap:wrap;align-items:center;gap:.2rem}
header button{background:none;border:1px solid #fff5;border-radius:4px;padding:.1rem .5rem;
cursor:pointer}
.brand{margin-right:1rem}.who{opacity:.75;font-size:.85em}
main{max-width:60rem;margin:0 auto;padding:.8rem}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}
.card{background:#fff;border:1px solid #d7dbe0;border-radius:8px;padding:.8rem;margin:.7rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem;margin:.4rem 0}
dt{color:#57606a}dd{margin:0;overflow-wrap:anywhere}
pre{background:#f0f2f4;padding:.5rem;border-radius:6px;white-space:pre-wrap;
overflow-wrap:anywhere;margin:.2rem 0;font-size:.9em}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin-top:.6rem}
.inline{display:inline}
button,.button{font:inherit;padding:.45rem .9rem;border-radius:6px;border:1px solid #8c959f;
background:#fff;cursor:pointer;color:#1b1f24;text-decoration:none;display:inline-block}
button.approve{background:#1f883d;border-color:#1f883d;color:#fff}
button.danger,.button.danger{background:#cf222e;border-color:#cf222e;color:#fff}
input[type=text]{font:inherit;padding:.4rem;border:1px solid #8c959f;border-radius:6px;
max-width:100%}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9em}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e4e7eb;vertical-align:top;
overflow-wrap:anywhere}
.ok{color:#1f883d;font-weight:600}.bad{color:#cf222e;font-weight:600}
.notice{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.5rem;margin:.5rem 0}
.muted{color:#57606a;font-size:.9em}
.outcome-denied,.outcome-broker_refused,.outcome-refused{color:#cf222e}
.outcome-allowed,.outcome-issued,.outcome-approved{color:#1f883d}
"""

JS = """
"use strict";
(function () {
  var feed = document.getElementById("feed");
  if (feed) {
    var after = Number(feed.getAttribute("data-after")) || 0;
    var fields = ["time", "outcome", "agent", "scope", "function", "detail", "source"];
    var body = feed.querySelector("tbody");
    var status = document.getElementById("feed-status");
    var poll = function () {
      fetch(feed.getAttribute("data-src") + "?after=" + after, {credentials: "same-origin",
        headers: {"accept": "application/json"}})
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (data) {
          data.events.forEach(function (event) {
            var row = document.createElement("tr");
            row.className = "outcome-" + String(event.outcome || "");
            fields.forEach(function (name) {
              var cell = document.createElement("td");
              cell.textContent = event[name] === undefined ? "" : String(event[name]);
              row.appendChild(cell);
            });
            body.insertBefore(row, body.firstChild);
          });
          while (body.rows.length > 500) { body.deleteRow(body.rows.length - 1); }
          after = data.latest;
          if (status) { status.textContent = "live: " + new Date().toLocaleTimeString(); }
          setTimeout(poll, 1000);
        })
        .catch(function (e) {
          if (status) { status.textContent = "not updating (" + e.message + "): reload"; }
        });
    };
    setTimeout(poll, 1000);
  }
  var pending = document.getElementById("pending");
  if (pending) {
    var shown = pending.getAttribute("data-ids");
    var check = function () {
      fetch(pending.getAttribute("data-src"), {credentials: "same-origin",
        headers: {"accept": "application/json"}})
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (data) {
          if (data.ids.join(" ") !== shown) {
            document.getElementById("pending-changed").hidden = false;
          }
          setTimeout(check, 3000);
        })
        .catch(function () {});
    };
    setTimeout(check, 3000);
  }
})();
"""
