// COCO compressed RLE in the browser: {size: [h, w], counts: str} <-> row-major Uint8Array.
//
// Runs alternate 0s and 1s (starting with 0s) over the column-major pixel order. The counts
// string stores each run as 5-bit groups (6 bits per character, offset 48, bit 0x20 =
// "more groups follow", 0x10 in the last group = sign); from the third run on, the value
// stored is the difference to the run two places before (pycocotools' rleToString).
"use strict";

const RLE = (() => {
  function countsToString(counts) {
    let out = "";
    for (let i = 0; i < counts.length; i++) {
      let x = counts[i];
      if (i > 2) x -= counts[i - 2];
      let more = true;
      while (more) {
        let c = x & 0x1f;
        x = Math.floor(x / 32); // arithmetic shift by 5, exact for any safe integer
        more = (c & 0x10) ? x !== -1 : x !== 0;
        if (more) c |= 0x20;
        out += String.fromCharCode(c + 48);
      }
    }
    return out;
  }

  function stringToCounts(s) {
    const counts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0;
      let k = 0;
      let more = true;
      while (more) {
        if (p >= s.length) throw new Error("truncated RLE counts");
        const c = s.charCodeAt(p) - 48;
        x += (c & 0x1f) * 2 ** (5 * k);
        more = (c & 0x20) !== 0;
        p++;
        k++;
        if (!more && (c & 0x10)) x -= 2 ** (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  }

  // Decode to a row-major h*w Uint8Array of 0/1.
  function decode(rle) {
    const [h, w] = rle.size;
    const out = new Uint8Array(h * w);
    const counts = stringToCounts(rle.counts);
    let pos = 0; // column-major index
    for (let i = 0; i < counts.length; i++) {
      const n = counts[i];
      if (i % 2 === 1) {
        let x = Math.floor(pos / h);
        let y = pos % h;
        for (let k = 0; k < n; k++) {
          out[y * w + x] = 1;
          if (++y === h) { y = 0; x++; }
        }
      }
      pos += n;
    }
    if (pos !== h * w) throw new Error(`RLE covers ${pos} pixels, expected ${h * w}`);
    return out;
  }

  // Encode a row-major h*w array (truthy = inside) as compressed COCO RLE.
  function encode(mask, h, w) {
    const counts = [];
    let value = 0;
    let run = 0;
    for (let x = 0; x < w; x++) {
      for (let y = 0; y < h; y++) {
        const v = mask[y * w + x] ? 1 : 0;
        if (v !== value) {
          counts.push(run);
          run = 0;
          value = v;
        }
        run++;
      }
    }
    counts.push(run);
    return { size: [h, w], counts: countsToString(counts) };
  }

  return { decode, encode, countsToString, stringToCounts };
})();
