// Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999). Written here rather than taken from npm:
// the `cobs` package (0.2.1) is unmaintained and stream-oriented, and the algorithm is ~30 lines that the
// MCU firmware must implement identically anyway, so owning it keeps both ends auditable together.

/** Encodes `data` so the result contains no 0x00; the caller appends the 0x00 frame delimiter. */
export function cobsEncode(data: Uint8Array): Buffer {
  const out = Buffer.alloc(data.length + Math.ceil(data.length / 254) + 1);
  let codeIndex = 0;
  let code = 1;
  let o = 1;
  for (const byte of data) {
    if (byte === 0) {
      out[codeIndex] = code;
      codeIndex = o++;
      code = 1;
    } else {
      out[o++] = byte;
      code++;
      if (code === 0xff) {
        out[codeIndex] = code;
        codeIndex = o++;
        code = 1;
      }
    }
  }
  out[codeIndex] = code;
  return out.subarray(0, o);
}

/** Decodes one frame (without its delimiter); returns null for anything that is not valid COBS. */
export function cobsDecode(data: Uint8Array): Buffer | null {
  const out = Buffer.alloc(data.length);
  let i = 0;
  let o = 0;
  while (i < data.length) {
    const code = data[i]!;
    if (code === 0) return null;
    i++;
    const end = i + code - 1;
    if (end > data.length) return null;
    for (; i < end; i++) {
      const byte = data[i]!;
      if (byte === 0) return null;
      out[o++] = byte;
    }
    // A block shorter than 254 data bytes stands for a zero, except at the very end of the frame.
    if (code !== 0xff && i < data.length) out[o++] = 0;
  }
  return out.subarray(0, o);
}
