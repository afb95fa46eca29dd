// Pixel and canvas helpers of the annotation page (pure functions of their arguments).
// Masks are row-major Uint8Array of h*w (1 = inside); coordinates are image pixels.
"use strict";

const Draw = (() => {
  // Colour the mask's pixels in RGBA `data` (an ImageData buffer of the same w*h); pixels on
  // the mask's edge are fully opaque so that neighbouring masks stay distinguishable.
  function fill(data, mask, w, h, rgb, alpha) {
    const [r, g, b] = rgb;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const p = y * w + x;
        if (!mask[p]) continue;
        const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1
          || !mask[p - 1] || !mask[p + 1] || !mask[p - w] || !mask[p + w];
        const q = 4 * p;
        data[q] = r; data[q + 1] = g; data[q + 2] = b; data[q + 3] = edge ? 255 : alpha;
      }
    }
  }

  // Set a disc of radius r around (x, y) to value (1 brush, 0 eraser).
  function paint(mask, w, h, x, y, r, value) {
    const x0 = Math.max(0, Math.floor(x - r)), x1 = Math.min(w - 1, Math.ceil(x + r));
    const y0 = Math.max(0, Math.floor(y - r)), y1 = Math.min(h - 1, Math.ceil(y + r));
    for (let yy = y0; yy <= y1; yy++) {
      for (let xx = x0; xx <= x1; xx++) {
        if ((xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= r * r) mask[yy * w + xx] = value;
      }
    }
  }

  // Paint discs along the segment from -> to (points {x, y}), spaced half a radius apart.
  function paintLine(mask, w, h, from, to, r, value) {
    const steps = Math.max(1, Math.ceil(Math.hypot(to.x - from.x, to.y - from.y) / (r / 2)));
    for (let i = 1; i <= steps; i++) {
      const t = i / steps;
      paint(mask, w, h, from.x + (to.x - from.x) * t, from.y + (to.y - from.y) * t, r, value);
    }
  }

  // An XYXY box outline; `scale` = image pixels per screen pixel (constant on-screen width).
  function box(ctx, xyxy, colour, scale) {
    ctx.lineWidth = 2 * scale;
    ctx.strokeStyle = colour;
    ctx.strokeRect(xyxy[0], xyxy[1], xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]);
  }

  // A click: green for positive, red for negative, with a white ring.
  function point(ctx, x, y, positive, scale) {
    ctx.beginPath();
    ctx.arc(x, y, 5 * scale, 0, 2 * Math.PI);
    ctx.fillStyle = positive ? "#2ecc40" : "#ff4136";
    ctx.fill();
    ctx.lineWidth = 1.5 * scale;
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
  }

  return { fill, paint, paintLine, box, point };
})();
