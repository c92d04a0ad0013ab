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

document.addEventListener("DOMContentLoaded", () => {
  setupOverlayToggle();
  setupEditor();
});
