/* report.html, --explain: click a predicted region to see its evidence (or #explain=ID@X,Y in the URL). */
(function () {
  "use strict";
  var node = document.getElementById("evidence-data");
  var panel = document.getElementById("evidence");
  var body = document.getElementById("evidence-body");
  if (!node || !panel || !body) return;
  var data = JSON.parse(node.textContent);
  var maps = {};

  function esc(text) {
    return String(text).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; });
  }
  function colour(c) { return data.colours[c] || "#888"; }
  function name(c) { return data.names[c] !== undefined ? data.names[c] : String(c); }
  function ownerMap(id) {
    if (!maps[id]) {
      var info = data.images[id], out = new Int32Array(info.w * info.h), at = 0;
      for (var i = 0; i < info.map.length; i += 2) { out.fill(info.map[i], at, at + info.map[i + 1]); at += info.map[i + 1]; }
      maps[id] = out;
    }
    return maps[id];
  }
  function maskAt(id, fx, fy) {
    var info = data.images[id];
    var x = Math.min(info.w - 1, Math.max(0, Math.floor(fx * info.w)));
    var y = Math.min(info.h - 1, Math.max(0, Math.floor(fy * info.h)));
    var owner = ownerMap(id)[y * info.w + x];
    return owner > 0 ? info.m[owner - 1] : null;
  }
  /* a bank region: its picture (or its row and image in text), class colour, similarity */
  function region(row, sim, extra) {
    var info = data.rows[String(row)] || [-1, null], cls = info[0], image = info[1];
    var uri = data.thumbs[String(row)];
    var label = esc(name(cls)) + " " + Number(sim).toFixed(3) + (extra || "");
    var pic = uri ? '<img alt="" src="' + uri + '" style="border-color:' + colour(cls) + '">'
                  : '<div class="ev-text" style="border-color:' + colour(cls) + '">row ' + row + (image ? "<br>" + esc(image) : "") + "</div>";
    return '<figure class="ev-n" data-class="' + esc(name(cls)) + '" data-row="' + row + '">' + pic +
           "<figcaption>" + label + (image ? "<br>" + esc(image) : "") + "</figcaption></figure>";
  }
  /* mask: [label, score, margin votes, margin similarity, votes, neighbours or null, truth or null] */
  function show(id, mask) {
    var votes = mask[4], neighbours = mask[5], truth = mask[6];
    var html = '<div class="ev-head"><span class="sw" style="background:' + colour(mask[0]) + '"></span><b id="ev-label">' +
      esc(name(mask[0])) + "</b> · image <code>" + esc(id) + "</code> · score " + Number(mask[1]).toFixed(3) + "</div>";
    html += '<div class="ev-votes">votes: ' + votes.map(function (v) {
      return '<span class="sw" style="background:' + colour(v[0]) + '"></span>' + esc(name(v[0])) + " <b>" + v[1] + "</b> (" + Number(v[2]).toFixed(2) + ")";
    }).join(" · ") + "<br>margin to the runner-up: " + mask[2] + " neighbours, " + Number(mask[3]).toFixed(2) + " similarity</div>";
    var k = votes.reduce(function (a, v) { return a + v[1]; }, 0);
    html += neighbours ? '<div class="ev-grid" id="ev-neighbours">' + neighbours.map(function (n, i) {
      return region(n[0], n[1], " #" + (i + 1));
    }).join("") + "</div>" : '<p class="note" id="ev-neighbours-left-out">Its ' + k + " neighbours are left out of this page (its size cap); explain.jsonl has them.</p>";
    if (truth) {
      html += '<div class="ev-truth" id="ev-truth">wrong label: the ground truth here is <b>' + esc(name(truth[0])) + "</b>; ";
      html += truth[1] === null ? "the bank holds no " + esc(name(truth[0])) + " region.</div>"
        : "its nearest " + esc(name(truth[0])) + " bank region is rank <b>" + truth[2] + "</b> of the bank (k = " + k + "):" +
          region(truth[1], truth[3], " rank " + truth[2]) + "</div>";
    }
    body.innerHTML = html;
    panel.hidden = false;
    panel.dataset.image = id;
  }
  function photoOf(item) {
    var panels = item.querySelectorAll(".panel .ph");
    return panels.length ? panels[panels.length - 1] : null;
  }
  function locate(ph, e) {
    var rect = ph.getBoundingClientRect();
    return [(e.clientX - rect.left) / rect.width, (e.clientY - rect.top) / rect.height];
  }
  document.querySelectorAll("#gallery > .item").forEach(function (item) {
    var id = item.dataset.id, ph = photoOf(item);
    if (!ph || !data.images[id]) return;
    ph.classList.add("ev-click");
    ph.addEventListener("click", function (e) {
      var at = locate(ph, e), mask = maskAt(id, at[0], at[1]);
      document.querySelectorAll(".ev-on").forEach(function (el) { el.classList.remove("ev-on"); });
      if (mask) { ph.classList.add("ev-on"); show(id, mask); }
    });
    ph.addEventListener("mousemove", function (e) {
      var at = locate(ph, e), mask = maskAt(id, at[0], at[1]);
      ph.title = mask ? name(mask[0]) + " " + Number(mask[1]).toFixed(3) + " (click: why)" : "";
    });
  });
  document.getElementById("evidence-close").addEventListener("click", function () { panel.hidden = true; });
  var match = /(?:^#|&)explain=([^&]*)/.exec(location.hash);
  if (match) {
    var spec = decodeURIComponent(match[1]), cut = spec.lastIndexOf("@");
    var id = spec.slice(0, cut), xy = spec.slice(cut + 1).split(",");
    var item = Array.prototype.find.call(document.querySelectorAll("#gallery > .item"), function (el) { return el.dataset.id === id; });
    var ph = item && photoOf(item);
    if (ph) {
      var rect = ph.getBoundingClientRect();
      ph.dispatchEvent(new MouseEvent("click", { bubbles: true, clientX: rect.left + Number(xy[0]) * rect.width,
                                                 clientY: rect.top + Number(xy[1]) * rect.height }));
    }
  }
})();
