/* moduseg report.html: gallery sort/filter (state in the URL hash, e.g. #sort=iou-asc&class=person),
   sortable tables, overlay opacity. Plain JavaScript, no library. */
(function () {
  "use strict";
  var errors = document.getElementById("js-errors");
  window.addEventListener("error", function (e) {
    if (errors) errors.textContent += "error: " + e.message + "\n";
  });

  function num(value) {
    if (value === undefined || value === null || value === "") return null;
    var n = Number(value);
    return isNaN(n) ? null : n;
  }

  function parseHash() {
    var state = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      if (!part) return;
      var kv = part.split("=");
      state[decodeURIComponent(kv[0])] = decodeURIComponent(kv.slice(1).join("="));
    });
    return state;
  }

  function writeHash(state) {
    var parts = [];
    Object.keys(state).forEach(function (k) {
      if (state[k] !== "" && state[k] !== undefined) parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(state[k]));
    });
    var hash = parts.length ? "#" + parts.join("&") : "";
    if (location.hash !== hash) history.replaceState(null, "", hash || location.pathname + location.search);
  }

  /* -- gallery ---------------------------------------------------------------------------- */
  var gallery = document.getElementById("gallery");
  var sortSel = document.getElementById("sort");
  var classSel = document.getElementById("class");
  var shown = document.getElementById("shown");

  function compare(key, dir) {
    return function (a, b) {
      var x, y, r;
      if (key === "id") {
        x = a.dataset.id; y = b.dataset.id;
        r = x < y ? -1 : x > y ? 1 : 0;
      } else {
        x = num(a.dataset[key]); y = num(b.dataset[key]);
        if (x === null && y === null) r = 0;
        else if (x === null) return 1;   /* images without a score last, either way */
        else if (y === null) return -1;
        else r = x - y;
      }
      if (r === 0) r = Number(a.dataset.order) - Number(b.dataset.order);
      return dir === "desc" ? -r : r;
    };
  }

  function applyGallery() {
    if (!gallery) return;
    var state = parseHash();
    var sort = state.sort || gallery.dataset.defaultSort || "iou-asc";
    if (sortSel && !Array.prototype.some.call(sortSel.options, function (o) { return o.value === sort; })) sort = sortSel.value;
    var cls = state["class"] || "";
    if (sortSel) sortSel.value = sort;
    if (classSel) classSel.value = cls;
    if (classSel && classSel.value !== cls) cls = "";
    var parts = sort.split("-");
    var items = Array.prototype.slice.call(gallery.querySelectorAll(":scope > .item"));
    items.sort(compare(parts[0], parts[1] || "asc"));
    var count = 0;
    items.forEach(function (item) {
      var names = (item.dataset.classes || "").split("|");
      var visible = !cls || names.indexOf(cls) >= 0;
      item.hidden = !visible;
      if (visible) count += 1;
      gallery.appendChild(item);
    });
    if (shown) shown.textContent = count + " of " + items.length + " shown";
    document.querySelectorAll(".legend .key").forEach(function (key) {
      key.classList.toggle("on", key.dataset.name === cls);
    });
  }

  function update(change) {
    var state = parseHash();
    Object.keys(change).forEach(function (k) { state[k] = change[k]; });
    writeHash(state);
    applyGallery();
  }

  if (sortSel) sortSel.addEventListener("change", function () { update({ sort: sortSel.value }); });
  if (classSel) classSel.addEventListener("change", function () { update({ "class": classSel.value }); });
  document.querySelectorAll(".legend .key").forEach(function (key) {
    key.addEventListener("click", function () {
      update({ "class": parseHash()["class"] === key.dataset.name ? "" : key.dataset.name });
    });
  });
  window.addEventListener("hashchange", applyGallery);

  var alpha = document.getElementById("alpha");
  if (alpha) {
    alpha.addEventListener("input", function () {
      document.documentElement.style.setProperty("--fill", String(Number(alpha.value) / 100));
    });
  }

  /* -- sortable tables -------------------------------------------------------------------- */
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, column) {
      th.addEventListener("click", function () {
        var dir = th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir);
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var ca = a.cells[column], cb = b.cells[column];
          var x = ca.dataset.v !== undefined ? ca.dataset.v : ca.textContent;
          var y = cb.dataset.v !== undefined ? cb.dataset.v : cb.textContent;
          var nx = num(x), ny = num(y), r;
          if (nx !== null && ny !== null) r = nx - ny;
          else if (nx === null && ny !== null) return 1;
          else if (ny === null && nx !== null) return -1;
          else r = String(x).localeCompare(String(y));
          if (r === 0) r = Number(a.dataset.order) - Number(b.dataset.order);
          return dir === "ascending" ? r : -r;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });

  applyGallery();
  document.body.setAttribute("data-ready", "1");
})();
