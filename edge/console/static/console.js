// The console's own script (served by the gateway; the CSP allows no inline script).
"use strict";

function setupOverlayToggle() {
  const img = document.getElementById("preview");
  const box = document.getElementById("overlay");
  if (!img || !box) return;
  box.addEventListener("change", () => {
    // A new stream URL: the old MJPEG connection closes, the new one asks capture for the other overlay.
    img.src = img.dataset.base + "?overlay=" + (box.checked ? "1" : "0") + "&t=" + Date.now();
  });
}

function setupEditor() {
  const img = document.getElementById("snapshot");
  const canvas = document.getElementById("drawing");
  if (!img || !canvas) return;
  const ids = ["ax", "ay", "bx", "by"];
  const field = (id) => document.getElementById(id);
  let next = 0;
  // Camera pixels per snapshot pixel: the preview is scaled down to at most 720 lines.
  const scale = () => {
    const w = parseFloat(img.dataset.width);
    return w > 0 && img.naturalWidth > 0 ? w / img.naturalWidth : 1;
  };
  const draw = () => {
    canvas.width = img.clientWidth;
    canvas.height = img.clientHeight;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const v = ids.map((id) => parseFloat(field(id).value));
    if (v.some(Number.isNaN)) return;
    const k = img.clientWidth / (img.naturalWidth * scale() || 1);
    ctx.strokeStyle = "#00dcff";
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.moveTo(v[0] * k, v[1] * k);
    ctx.lineTo(v[2] * k, v[3] * k);
    ctx.stroke();
    ctx.fillStyle = "#00dcff";
    ctx.fillText("A", v[0] * k + 4, v[1] * k - 4);
    ctx.fillText("B", v[2] * k + 4, v[3] * k - 4);
  };
  canvas.addEventListener("click", (ev) => {
    const r = canvas.getBoundingClientRect();
    const k = (img.naturalWidth * scale()) / r.width;
    const x = Math.round((ev.clientX - r.left) * k);
    const y = Math.round((ev.clientY - r.top) * k);
    field(ids[next * 2]).value = x;
    field(ids[next * 2 + 1]).value = y;
    next = 1 - next;
    draw();
  });
  ids.forEach((id) => field(id).addEventListener("input", draw));
  img.addEventListener("load", draw);
  window.addEventListener("resize", draw);
  if (img.complete) draw();
}

function setupShapes() {
  // The zone and mask editor: each row's points are "x,y x,y ..." in camera pixels; a click on the
  // snapshot appends a corner to the row whose "draw" radio is picked.
  const img = document.getElementById("snapshot");
  const canvas = document.getElementById("shapes-drawing");
  const body = document.querySelector("#shapes tbody");
  if (!img || !canvas || !body) return;
  const camWidth = () => parseFloat(img.dataset.width) || img.naturalWidth || 1;
  const parse = (text) => text.trim().split(/[\s;]+/).filter((t) => t).map((t) => t.split(",").map(Number))
    .filter((p) => p.length === 2 && !p.some(Number.isNaN));
  const rows = () => Array.from(body.querySelectorAll("tr.shape"));
  const active = () => rows().find((r) => r.querySelector("input.active").checked) || rows()[0];
  const draw = () => {
    canvas.width = img.clientWidth;
    canvas.height = img.clientHeight;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const k = img.clientWidth / camWidth();
    rows().forEach((row) => {
      const pts = parse(row.querySelector("input.points").value);
      if (!pts.length) return;
      const mask = row.dataset.kind === "mask";
      ctx.strokeStyle = mask ? "#222" : "#ff3c3c";
      ctx.fillStyle = mask ? "rgba(0,0,0,0.55)" : "rgba(255,60,60,0.18)";
      ctx.lineWidth = row === active() ? 3 : 2;
      ctx.beginPath();
      pts.forEach(([x, y], i) => (i ? ctx.lineTo(x * k, y * k) : ctx.moveTo(x * k, y * k)));
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
      ctx.fillStyle = mask ? "#fff" : "#ff3c3c";
      ctx.fillText(row.querySelector("input.shape-id").value || row.dataset.kind, pts[0][0] * k + 4, pts[0][1] * k + 12);
    });
  };
  const wire = (row) => {
    row.querySelectorAll("input, select").forEach((el) => el.addEventListener("input", draw));
    row.querySelector("input.active").addEventListener("change", draw);
    row.querySelector("button.clear").addEventListener("click", () => {
      row.querySelector("input.points").value = "";
      draw();
    });
  };
  rows().forEach(wire);
  const add = (kind) => {
    const blank = rows().filter((r) => r.dataset.kind === kind).pop();
    const row = blank.cloneNode(true);
    row.querySelectorAll("input:not([type=hidden]):not([type=radio])").forEach((el) => { el.value = ""; });
    row.querySelector("input.active").value = String(rows().length);
    body.appendChild(row);
    wire(row);
    row.querySelector("input.active").checked = true;
    row.querySelector("input.shape-id").focus();
    draw();
  };
  document.getElementById("add-zone").addEventListener("click", () => add("zone"));
  document.getElementById("add-mask").addEventListener("click", () => add("mask"));
  canvas.addEventListener("click", (ev) => {
    const r = canvas.getBoundingClientRect();
    const k = camWidth() / r.width;
    const field = active().querySelector("input.points");
    // A click on the very edge may land a fraction of a pixel off the picture: keep it on.
    const camHeight = parseFloat(img.dataset.height) || img.naturalHeight || 1;
    const clamp = (v, hi) => Math.min(Math.max(Math.round(v), 0), Math.round(hi) - 1);
    const pt = clamp((ev.clientX - r.left) * k, camWidth()) + "," + clamp((ev.clientY - r.top) * k, camHeight);
    field.value = (field.value.trim() + " " + pt).trim();
    draw();
  });
  img.addEventListener("load", draw);
  window.addEventListener("resize", draw);
  if (img.complete) draw();
}

document.addEventListener("DOMContentLoaded", () => {
  setupOverlayToggle();
  setupEditor();
  setupShapes();
});
