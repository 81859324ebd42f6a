// StoreSight zone editor: a camera's picture on a canvas with its zones (polygons) and lines (line_crossing rules)
// drawn on it, edited with the mouse and saved to /api/cameras/<id>/zones. Coordinates are normalised (0..1), as in
// the config. Plain JavaScript, served from the bridge itself (the page's CSP allows no other script).
"use strict";

(function () {
  const root = document.getElementById("editor");
  const canvas = document.getElementById("canvas");
  const ctx = canvas.getContext("2d");
  const shapesBox = document.getElementById("shapes");
  const problemsBox = document.getElementById("problems");
  const statusBox = document.getElementById("status");
  const pictureNote = document.getElementById("picture-note");
  const buttons = {
    addZone: document.getElementById("add-zone"), addLine: document.getElementById("add-line"),
    setIn: document.getElementById("set-in"), del: document.getElementById("delete"),
    save: document.getElementById("save"),
  };
  const HANDLE = 7; // pixels: how near a corner or line end the mouse must be to grab it
  const picture = new Image();

  // zones: {id, was, polygon: [[x, y]...], used_by}; lines: {id, was, line: [[x, y], [x, y]], in_side, used_by}
  let zones = [];
  let lines = [];
  let selected = null; // {kind: "zone" | "line", index}
  let mode = "edit"; // edit | draw-zone | draw-line | set-in
  let drag = null; // {kind, index, point}
  let problems = []; // [{path, message, shape}] from the last refused save

  function setStatus(text, kind) {
    statusBox.textContent = text;
    statusBox.className = kind || "";
  }

  function px(p) { return [p[0] * canvas.width, p[1] * canvas.height]; }
  function norm(x, y) {
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return [clamp(x / canvas.width), clamp(y / canvas.height)];
  }
  function mouse(event) {
    const r = canvas.getBoundingClientRect();
    return [(event.clientX - r.left) * canvas.width / r.width, (event.clientY - r.top) * canvas.height / r.height];
  }
  function near(p, x, y) {
    const [a, b] = px(p);
    return Math.hypot(a - x, b - y) <= HANDLE;
  }
  function shape(sel) { return sel.kind === "zone" ? zones[sel.index] : lines[sel.index]; }
  function points(s) { return s.polygon || s.line; }
  function key(kind, s) { return `${kind}:${s.id}`; }
  function problemsOf(kind, s) { return problems.filter((p) => p.shape === key(kind, s)); }

  // which side of a->b a point is on, as plugin/rules/line_crossing.py counts it (image y points down)
  function side(a, b, p) {
    const s = -((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]));
    return s > 0 ? "left" : "right";
  }

  function insideZone(poly, x, y) {
    let inside = false;
    for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
      const [xi, yi] = px(poly[i]);
      const [xj, yj] = px(poly[j]);
      if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }

  function distanceToSegment(a, b, x, y) {
    const [ax, ay] = px(a);
    const [bx, by] = px(b);
    const len = (bx - ax) ** 2 + (by - ay) ** 2;
    const t = len ? Math.max(0, Math.min(1, ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / len)) : 0;
    return Math.hypot(ax + t * (bx - ax) - x, ay + t * (by - ay) - y);
  }

  // ---- drawing

  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (picture.complete && picture.naturalWidth) ctx.drawImage(picture, 0, 0, canvas.width, canvas.height);
    zones.forEach((z, i) => drawZone(z, selected && selected.kind === "zone" && selected.index === i));
    lines.forEach((l, i) => drawLine(l, selected && selected.kind === "line" && selected.index === i));
  }

  function label(text, x, y, colour) {
    ctx.font = "bold 13px system-ui, sans-serif";
    const w = ctx.measureText(text).width + 8;
    ctx.fillStyle = colour;
    ctx.fillRect(x - w / 2, y - 10, w, 18);
    ctx.fillStyle = "#fff";
    ctx.textAlign = "center";
    ctx.fillText(text, x, y + 3);
  }

  function handles(pts, colour) {
    pts.forEach((p) => {
      const [x, y] = px(p);
      ctx.fillStyle = "#fff";
      ctx.strokeStyle = colour;
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(x, y, HANDLE - 2, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    });
  }

  function drawZone(z, isSelected) {
    const bad = problemsOf("zone", z).length > 0;
    const colour = bad ? "#c62828" : isSelected ? "#1d5fd1" : "#f5a400";
    const pts = z.polygon.map(px);
    if (!pts.length) return;
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    const open = mode === "draw-zone" && isSelected;
    if (!open) ctx.closePath();
    ctx.fillStyle = bad ? "rgba(198,40,40,.18)" : "rgba(245,164,0,.18)";
    if (!open) ctx.fill();
    ctx.strokeStyle = colour;
    ctx.lineWidth = isSelected ? 3 : 2;
    ctx.stroke();
    if (isSelected) handles(z.polygon, colour);
    const cx = pts.reduce((s, p) => s + p[0], 0) / pts.length;
    const cy = pts.reduce((s, p) => s + p[1], 0) / pts.length;
    label(z.id, cx, cy, colour);
  }

  function drawLine(l, isSelected) {
    const bad = problemsOf("line", l).length > 0;
    const colour = bad ? "#c62828" : isSelected ? "#1d5fd1" : "#00a3a3";
    const [a, b] = l.line.map(px);
    ctx.strokeStyle = colour;
    ctx.lineWidth = isSelected ? 4 : 3;
    ctx.beginPath();
    ctx.moveTo(a[0], a[1]);
    if (b) ctx.lineTo(b[0], b[1]);
    ctx.stroke();
    if (isSelected || !b) handles(l.line, colour);
    if (!b) return;
    // an arrow from the middle towards the "in" side: the left normal of a->b on screen is (dy, -dx)
    const [dx, dy] = [b[0] - a[0], b[1] - a[1]];
    const len = Math.hypot(dx, dy) || 1;
    const sign = l.in_side === "left" ? 1 : -1;
    const [nx, ny] = [(sign * dy) / len, (sign * -dx) / len];
    const [mx, my] = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
    const [tx, ty] = [mx + nx * 28, my + ny * 28];
    ctx.beginPath();
    ctx.moveTo(mx, my);
    ctx.lineTo(tx, ty);
    ctx.lineTo(tx - nx * 8 + ny * 6, ty - ny * 8 - nx * 6);
    ctx.moveTo(tx, ty);
    ctx.lineTo(tx - nx * 8 - ny * 6, ty - ny * 8 + nx * 6);
    ctx.stroke();
    label("in", tx + nx * 14, ty + ny * 14, colour);
    label(l.id, a[0], a[1] - 16, colour);
  }

  // ---- the side panel: one card per shape, with its name, what uses it and its problems

  function renderPanel() {
    shapesBox.replaceChildren();
    const card = (kind, s, index) => {
      const div = document.createElement("div");
      const isSelected = selected && selected.kind === kind && selected.index === index;
      const mine = problemsOf(kind, s);
      div.className = "shape" + (isSelected ? " selected" : "") + (mine.length ? " bad" : "");
      div.id = `${kind}-${index}`;
      const kindSpan = document.createElement("span");
      kindSpan.className = "kind";
      kindSpan.textContent = kind === "zone" ? "zone" : `line, in: ${s.in_side}`;
      const name = document.createElement("input");
      name.className = "name";
      name.value = s.id;
      name.setAttribute("aria-label", `${kind} name`);
      name.addEventListener("input", () => { s.id = name.value.trim(); draw(); });
      div.append(kindSpan, name);
      const users = s.used_by || [];
      const ul = document.createElement("ul");
      ul.className = "used-by";
      (users.length ? users : ["not used by any rule"]).forEach((u) => {
        const li = document.createElement("li");
        li.textContent = u;
        ul.append(li);
      });
      div.append(ul);
      mine.forEach((p) => {
        const msg = document.createElement("p");
        msg.className = "problem";
        msg.textContent = `${p.path}: ${p.message}`;
        div.append(msg);
      });
      div.addEventListener("click", (e) => {
        if (e.target !== name) select({ kind, index });
      });
      shapesBox.append(div);
    };
    zones.forEach((z, i) => card("zone", z, i));
    lines.forEach((l, i) => card("line", l, i));
    problemsBox.replaceChildren();
    problems.filter((p) => !p.shape).forEach((p) => {
      const msg = document.createElement("p");
      msg.className = "problem";
      msg.textContent = `${p.path}: ${p.message}`;
      problemsBox.append(msg);
    });
    buttons.setIn.disabled = !(selected && selected.kind === "line");
    buttons.del.disabled = !selected;
  }

  function select(sel) {
    selected = sel;
    if (mode !== "edit") mode = "edit";
    renderPanel();
    draw();
  }

  function refresh() {
    renderPanel();
    draw();
  }

  // ---- the mouse

  function grab(x, y) {
    const order = [];
    if (selected) order.push(selected);
    zones.forEach((_, i) => order.push({ kind: "zone", index: i }));
    lines.forEach((_, i) => order.push({ kind: "line", index: i }));
    for (const sel of order) {
      const pts = points(shape(sel));
      for (let k = 0; k < pts.length; k++) if (near(pts[k], x, y)) return { ...sel, point: k };
    }
    return null;
  }

  function hit(x, y) {
    for (let i = 0; i < lines.length; i++) {
      if (distanceToSegment(lines[i].line[0], lines[i].line[1], x, y) <= HANDLE) return { kind: "line", index: i };
    }
    for (let i = zones.length - 1; i >= 0; i--) if (insideZone(zones[i].polygon, x, y)) return { kind: "zone", index: i };
    return null;
  }

  canvas.addEventListener("mousedown", (event) => {
    if (event.button !== 0) return;
    const [x, y] = mouse(event);
    if (mode === "draw-zone") {
      const z = shape(selected);
      if (z.polygon.length >= 3 && near(z.polygon[0], x, y)) {
        mode = "edit";
        setStatus(`Zone ${z.id} drawn: name it, then save.`);
      } else {
        z.polygon.push(norm(x, y));
      }
      return refresh();
    }
    if (mode === "draw-line") {
      const l = shape(selected);
      l.line.push(norm(x, y));
      if (l.line.length === 2) {
        mode = "edit";
        setStatus(`Line ${l.id} drawn: set its “in” side, name it, then save.`);
      }
      return refresh();
    }
    if (mode === "set-in") {
      const l = shape(selected);
      l.in_side = side(l.line[0], l.line[1], norm(x, y));
      mode = "edit";
      setStatus(`People crossing onto the ${l.in_side} of ${l.id} count as in.`);
      return refresh();
    }
    drag = grab(x, y);
    if (drag) {
      selected = { kind: drag.kind, index: drag.index };
      return refresh();
    }
    select(hit(x, y));
  });

  canvas.addEventListener("mousemove", (event) => {
    if (!drag) return;
    const [x, y] = mouse(event);
    points(shape(drag))[drag.point] = norm(x, y);
    draw();
  });

  window.addEventListener("mouseup", () => {
    drag = null;
  });

  canvas.addEventListener("dblclick", (event) => {
    if (mode !== "edit") return;
    const [x, y] = mouse(event);
    const order = zones.map((_, i) => i);
    if (selected && selected.kind === "zone") order.unshift(selected.index); // the selected zone first
    for (const i of order) {
      const poly = zones[i].polygon;
      for (let k = 0; k < poly.length; k++) {
        if (distanceToSegment(poly[k], poly[(k + 1) % poly.length], x, y) <= HANDLE) {
          poly.splice(k + 1, 0, norm(x, y));
          selected = { kind: "zone", index: i };
          return refresh();
        }
      }
    }
  });

  canvas.addEventListener("contextmenu", (event) => {
    const [x, y] = mouse(event);
    const found = grab(x, y);
    if (found && found.kind === "zone") {
      event.preventDefault();
      shape(found).polygon.splice(found.point, 1);
      selected = { kind: "zone", index: found.index };
      refresh();
    }
  });

  // ---- the buttons

  function freeName(prefix, list) {
    let n = 1;
    while (list.some((s) => s.id === `${prefix}-${n}`)) n++;
    return `${prefix}-${n}`;
  }

  buttons.addZone.addEventListener("click", () => {
    zones.push({ id: freeName("zone", zones), was: null, polygon: [], used_by: [] });
    selected = { kind: "zone", index: zones.length - 1 };
    mode = "draw-zone";
    setStatus("Click each corner of the new zone; click the first corner again to close it.");
    refresh();
  });

  buttons.addLine.addEventListener("click", () => {
    lines.push({ id: freeName("line", lines), was: null, line: [], in_side: "right", used_by: [] });
    selected = { kind: "line", index: lines.length - 1 };
    mode = "draw-line";
    setStatus("Click the two ends of the new line.");
    refresh();
  });

  buttons.setIn.addEventListener("click", () => {
    if (!selected || selected.kind !== "line") return;
    mode = "set-in";
    setStatus("Click on the side of the line that people enter.");
  });

  buttons.del.addEventListener("click", () => {
    if (!selected) return;
    (selected.kind === "zone" ? zones : lines).splice(selected.index, 1);
    selected = null;
    mode = "edit";
    refresh();
  });

  async function save() {
    const body = {
      zones: zones.map((z) => ({ id: z.id, polygon: z.polygon, was: z.was })),
      lines: lines.map((l) => ({ id: l.id, line: l.line, in_side: l.in_side, was: l.was })),
    };
    buttons.save.disabled = true;
    setStatus("Saving…");
    try {
      const response = await fetch(root.dataset.api, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": root.dataset.csrf },
        body: JSON.stringify(body),
      });
      const doc = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
      if (response.ok) {
        problems = [];
        load(doc);
        setStatus(`Saved into ${doc.saved} (previous file kept as ${doc.backup}); ${doc.applied}.`, "ok");
        picture.src = `${root.dataset.picture}?t=${Date.now()}`;
      } else {
        problems = doc.problems || [];
        // a 500 of ours says whether the file was written; every other refusal wrote nothing
        setStatus(response.status >= 500 ? doc.error : `Not saved: ${doc.error}`, "error");
        refresh();
      }
    } catch (error) {
      setStatus(`Not saved: ${error}`, "error");
    } finally {
      buttons.save.disabled = false;
    }
  }
  buttons.save.addEventListener("click", save);

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && mode !== "edit") {
      mode = "edit";
      refresh();
    }
  });

  // ---- start: the shapes, then the picture (the canvas takes the picture's size)

  function load(doc) {
    zones = doc.zones.map((z) => ({ id: z.id, was: z.id, polygon: z.polygon.map((p) => [...p]), used_by: z.used_by }));
    lines = doc.lines.map((l) => ({
      id: l.id, was: l.id, line: l.line.map((p) => [...p]), in_side: l.in_side, used_by: l.used_by,
    }));
    selected = null;
    mode = "edit";
    refresh();
  }

  picture.addEventListener("load", () => {
    const scale = Math.min(1, 960 / picture.naturalWidth);
    canvas.width = Math.round(picture.naturalWidth * scale);
    canvas.height = Math.round(picture.naturalHeight * scale);
    canvas.dataset.ready = "yes";
    pictureNote.textContent = "";
    draw();
  });
  picture.addEventListener("error", () => {
    pictureNote.textContent = "No picture from the camera (not running, or it sent none): the shapes are drawn on white.";
  });

  fetch(root.dataset.api, { credentials: "same-origin" })
    .then(async (response) => {
      if (!response.ok) throw new Error(await response.text());
      const doc = await response.json();
      load(doc);
      if (!doc.editable) {
        buttons.save.disabled = true;
        setStatus("This bridge was not started from a config file: changes cannot be saved.", "error");
      }
      root.dataset.loaded = "yes";
      picture.src = root.dataset.picture;
    })
    .catch((error) => setStatus(`Cannot load the zones: ${error.message}`, "error"));
})();
