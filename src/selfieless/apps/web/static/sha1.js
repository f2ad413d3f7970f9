/*
 * Pure-JavaScript SHA-1, used when crypto.subtle is missing.
 *
 * Why this exists: browsers only expose crypto.subtle on secure origins (https, localhost), and
 * the gateway may well be reached over plain http on a LAN address. The users API wants the
 * password's SHA-1 hex digest, so the page must be able to compute it either way.
 * Public domain style implementation of FIPS 180-4, working on UTF-8 bytes.
 */
"use strict";

// Returns the lowercase hex SHA-1 digest of a string (hashed as UTF-8).
function sha1HexFallback(text) {
  const bytes = new TextEncoder().encode(text);
  const words = sha1Pad(bytes);
  const h = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];
  const w = new Array(80);
  for (let block = 0; block < words.length; block += 16) {
    sha1Block(h, words, block, w);
  }
  return h.map((x) => (x >>> 0).toString(16).padStart(8, "0")).join("");
}

// Big-endian 32-bit words of the message, a 1 bit, zeros and the 64-bit bit length.
function sha1Pad(bytes) {
  const wordCount = (((bytes.length + 8) >> 6) + 1) * 16;
  const words = new Array(wordCount).fill(0);
  for (let i = 0; i < bytes.length; i++) {
    words[i >> 2] |= bytes[i] << (24 - (i % 4) * 8);
  }
  words[bytes.length >> 2] |= 0x80 << (24 - (bytes.length % 4) * 8);
  // Bit length: split in two words because JS bit operators only see 32 bits.
  const bitLength = bytes.length * 8;
  words[wordCount - 2] = Math.floor(bitLength / 0x100000000);
  words[wordCount - 1] = bitLength >>> 0;
  return words;
}

// One 512-bit block: 80 rounds updating the state h in place.
function sha1Block(h, words, offset, w) {
  for (let t = 0; t < 80; t++) {
    w[t] = t < 16 ? words[offset + t] : rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
  }
  let [a, b, c, d, e] = h;
  for (let t = 0; t < 80; t++) {
    let f, k;
    if (t < 20) { f = (b & c) | (~b & d); k = 0x5a827999; }
    else if (t < 40) { f = b ^ c ^ d; k = 0x6ed9eba1; }
    else if (t < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8f1bbcdc; }
    else { f = b ^ c ^ d; k = 0xca62c1d6; }
    const temp = (rotl(a, 5) + f + e + k + w[t]) | 0;
    e = d; d = c; c = rotl(b, 30); b = a; a = temp;
  }
  h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0;
  h[3] = (h[3] + d) | 0; h[4] = (h[4] + e) | 0;
}

function rotl(x, n) {
  return (x << n) | (x >>> (32 - n));
}

// The digest the users API expects: native when available (faster), else the fallback above.
async function sha1Hex(text) {
  if (window.crypto && window.crypto.subtle) {
    const digest = await window.crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }
  return sha1HexFallback(text);
}
