// The cluster sample kernel of csrc/cuda/sampling.cu emulated on the CPU, step by step (slices of C blocks,
// fixed-point bins, candidate bounds, the fast path's scans, the deep path's selections with key-digit refinement),
// against the CPU algorithm (csrc/cpu/sampling.cc) on many random rows. It checks the algorithm, not the CUDA
// (barriers and lanes are not modelled): run it after changing the kernel's logic.
//   node bench/kernels/sampling_emulate.mjs [rows=400] [seed=1]
// Exact agreement is required where u and the cuts keep 1e-5 from every boundary; otherwise the pick must be
// within 1e-5 (the kernel's documented tolerance). Prints the counts and the failing rows, exit 1 on a failure.

const K_CAP = 2048, K_BINS = 512, BPN = 16, K_DIGITS = 256, SCALE = 2 ** 42, UNIT = 2 ** -42;
const f32 = Math.fround;

// ---- keys: orderable f32 bits << 32 | ~id, as BigInt
const fbuf = new Float32Array(1), ubuf = new Uint32Array(fbuf.buffer);
function ordBits(f) {
  fbuf[0] = f === 0 ? 0 : f;
  const u = ubuf[0];
  return u & 0x80000000 ? ~u >>> 0 : (u | 0x80000000) >>> 0;
}
function keyOf(logit, j) {
  return (BigInt(ordBits(logit)) << 32n) | BigInt((0xffffffff - j) >>> 0);
}
function keyLogit(key) {
  const o = Number(key >> 32n);
  ubuf[0] = o & 0x80000000 ? o & 0x7fffffff : ~o >>> 0;
  return fbuf[0];
}
const keyId = (key) => 0xffffffff - Number(key & 0xffffffffn);

function penalize(v, p) {
  return v > 0 ? f32(v / p) : f32(v * p);
}

// ---- the CPU algorithm (csrc/cpu/sampling.cc), with margins of u and the cuts to every decision boundary
function cpuPick(r, p) {
  const V = r.length;
  if (!(p.t > 0)) {
    let best = 0;
    for (let j = 1; j < V; ++j) if (r[j] > r[best]) best = j;
    return { id: best, margin: Infinity };
  }
  let mx = -Infinity;
  for (let j = 0; j < V; ++j) if (r[j] / p.t > mx) mx = r[j] / p.t; // std::max ignores a NaN argument
  const pr = new Float64Array(V);
  let sum = 0;
  for (let j = 0; j < V; ++j) sum += pr[j] = Math.exp(r[j] / p.t - mx);
  for (let j = 0; j < V; ++j) pr[j] /= sum;
  const idx = Array.from({ length: V }, (_, j) => j);
  if (!Number.isNaN(sum)) idx.sort((a, b) => pr[b] - pr[a] || a - b);
  let keep = V, margin = Infinity;
  if (p.k > 0) keep = Math.min(keep, p.k);
  if (p.minP > 0) {
    const floor = p.minP * pr[idx[0]];
    let n = 1;
    while (n < keep && pr[idx[n]] >= floor) ++n;
    for (let j = 1; j < keep; ++j) margin = Math.min(margin, Math.abs(pr[idx[j]] - floor));
    keep = n;
  }
  if (p.topP > 0 && p.topP < 1) {
    let cum = 0, n = 0;
    while (n < keep) {
      cum += pr[idx[n++]];
      margin = Math.min(margin, Math.abs(cum - p.topP));
      if (cum >= p.topP) break;
    }
    keep = Math.max(n, 1);
  }
  let mass = 0;
  for (let j = 0; j < keep; ++j) mass += pr[idx[j]];
  const target = p.u * mass;
  let cum = 0, pick = idx[keep - 1];
  for (let j = 0; j < keep; ++j) {
    cum += pr[idx[j]];
    if (j < keep - 1) margin = Math.min(margin, Math.abs(target - cum));
    if (target < cum) {
      pick = idx[j];
      break;
    }
  }
  // u's margin over the rest of the kept set (the loop above stopped at the pick)
  for (let j = 0, c = 0; j < keep - 1; ++j) margin = Math.min(margin, Math.abs(target - (c += pr[idx[j]])));
  return { id: pick, margin: Number.isNaN(margin) ? Infinity : margin, pr, idx };
}

// ---- the kernel, emulated
function firstMaxMerge(s, ov, oi, ofn) {
  s.fn = Math.min(s.fn, ofn);
  if (oi !== Infinity && (s.bi === Infinity || ov > s.bv || (ov === s.bv && oi < s.bi))) {
    s.bv = ov;
    s.bi = oi;
  }
}

function emulate(raw, p, C, penIds) {
  const V = raw.length;
  const chunk = Math.ceil(Math.ceil(V / C) / 4) * 4;
  // 1. slices (penalized), first max ignoring NaN, first NaN
  const vals = Float32Array.from(raw);
  if (penIds && p.pen !== 1) for (const id of penIds) if (id >= 0 && id < V) vals[id] = penalize(raw[id], f32(p.pen));
  const all = { bv: -Infinity, bi: Infinity, fn: Infinity };
  for (let q = 0; q < C; ++q) {
    const s = { bv: -Infinity, bi: Infinity, fn: Infinity };
    for (let j = Math.min(V, q * chunk); j < Math.min(V, q * chunk + chunk); ++j) {
      const v = vals[j];
      if (Number.isNaN(v)) s.fn = Math.min(s.fn, j);
      else if (v > s.bv || s.bi === Infinity) {
        s.bv = v;
        s.bi = j;
      }
    }
    firstMaxMerge(all, s.bv, s.bi, s.fn);
  }
  if (!(p.t > 0)) return Number.isNaN(vals[0]) ? 0 : all.bi === Infinity ? 0 : all.bi;
  if (all.fn !== Infinity || all.bi === Infinity || all.bv === Infinity || all.bv === -Infinity)
    return (p.minP > 0 ? 1 : p.k > 0 ? Math.min(p.k, V) : V) - 1;
  const invT = 1 / f32(p.t), mx = all.bv * invT;
  const aOf = (v) => v * invT - mx; // the kernel: __fma_rn (one rounding); the difference is ~1e-16
  const binOf = (a) => {
    const x = -a * BPN;
    return x < K_BINS - 1 ? Math.max(0, Math.trunc(x)) : K_BINS - 1;
  };
  const massFixed = (a) => BigInt(Math.round(f32(Math.exp(f32(a))) * SCALE));
  // 2. level-1 bins (merged over the blocks: integer sums, order-free)
  const mcnt = new Array(K_BINS).fill(0), mmass = new Array(K_BINS).fill(0n);
  for (let j = 0; j < V; ++j) {
    const a = aOf(vals[j]), b = binOf(a);
    mcnt[b]++;
    mmass[b] += massFixed(a);
  }
  // warp_cross: first non-empty bin whose inclusive value reaches theta; clampLast: else the last non-empty bin
  function cross(cnt, mass, byMass, theta, strict, clampLast) {
    let c = 0, m = 0n, last = -1;
    const reach = (cc, mm) => {
      const v = byMass ? Number(mm) * UNIT : cc;
      return strict ? v > theta : v >= theta;
    };
    for (let b = 0; b < cnt.length; ++b) {
      if (cnt[b] !== 0 && reach(c + cnt[b], m + mass[b])) return { bin: b, bc: c, bm: m };
      if (cnt[b] !== 0) last = b;
      c += cnt[b];
      m += mass[b];
    }
    if (!clampLast || last < 0) return { bin: cnt.length, bc: c, bm: m };
    c = 0;
    m = 0n;
    for (let b = 0; b < last; ++b) {
      c += cnt[b];
      m += mass[b];
    }
    return { bin: last, bc: c, bm: m };
  }
  // 3. bounds
  const keep0 = p.k > 0 ? Math.min(p.k, V) : V;
  const useMinp = p.minP > 0, useTopp = p.topP > 0 && p.topP < 1;
  const tm = mmass.reduce((a, x) => a + x, 0n);
  const S = Number(tm) * UNIT;
  const SAFE = 1 + 1e-5;
  // With a cut, the kept set (whose mass the pick renormalizes by) must lie among the candidates: the cuts' bounds.
  // Without one, the kept set is the row (mass 1) and the candidates need only reach the pick.
  let blim = K_BINS - 1, bm = K_BINS;
  if (keep0 < V) blim = Math.min(blim, cross(mcnt, mmass, false, keep0, false, false).bin);
  if (useMinp) {
    const xb = -Math.log(f32(p.minP)) * BPN;
    bm = !(xb > 0) ? 1 : xb < K_BINS - 2 ? Math.trunc(xb) + 1 : K_BINS - 1;
    blim = Math.min(blim, bm);
  }
  if (useTopp) blim = Math.min(blim, cross(mcnt, mmass, true, f32(p.topP) * SAFE * S, false, false).bin);
  if (keep0 === V && !useMinp && !useTopp) blim = Math.min(blim, cross(mcnt, mmass, true, f32(p.u) * SAFE * S, false, false).bin);
  let nc = 0, rest = 0n;
  for (let b = 0; b < K_BINS; ++b) {
    if (b <= blim) nc += mcnt[b];
    else rest += mmass[b];
  }
  const stats = { path: "fast" };
  if (nc <= K_CAP) {
    // 4-5. fast path
    const keys = [];
    for (let j = 0; j < V; ++j) if (binOf(aOf(vals[j])) <= blim) keys.push(keyOf(vals[j], j));
    keys.sort((a, b) => (a > b ? -1 : a < b ? 1 : 0));
    const c = keys.length;
    const e = keys.map((k) => Math.exp(aOf(keyLogit(k))));
    const Sx = Number(rest) * UNIT + e.reduce((a, x) => a + x, 0);
    const floor = f32(p.minP) * (1 / Sx);
    let jm = Infinity, jp = Infinity;
    const pr = e.map((x) => x / Sx);
    for (let i = 1; i < c; ++i) if (useMinp && pr[i] < floor) { jm = i; break; }
    // every candidate passes min-p and the min-p bound ended them: the next token (1/16 nat past the floor) fails
    if (useMinp && jm === Infinity && blim === bm && c < V) jm = c;
    const cum = [];
    for (let i = 0, s = 0; i < c; ++i) cum.push((s += pr[i]));
    if (useTopp) for (let i = 0; i < c; ++i) if (cum[i] >= f32(p.topP)) { jp = i; break; }
    let keep = Math.min(keep0, jm, jp + 1), mass, ok = true;
    if (keep > c) {
      if (!useMinp && !useTopp && keep0 === V && c > 0 && f32(p.u) < cum[c - 1]) {
        keep = c;
        mass = 1;
      } else ok = false;
    } else mass = cum[keep - 1];
    if (ok) {
      const target = f32(p.u) * mass;
      for (let i = 0; i < keep; ++i) if (target < cum[i]) return { id: keyId(keys[i]), stats };
      return { id: keyId(keys[keep - 1]), stats };
    }
    stats.path = "fast->deep"; if (process.env.WHY) console.log("fast->deep", JSON.stringify(p), JSON.stringify({ V, c, keep0, jm, jp, blim, useMinp, useTopp }));
  } else stats.path = "deep";
  // deep path
  stats.passes = 0;
  const elems = Array.from({ length: V }, (_, j) => ({ key: keyOf(vals[j], j), a: aOf(vals[j]), v: vals[j] }));
  for (const el of elems) el.bin = binOf(el.a);
  function select(byMass, theta, strict) {
    const c1 = cross(mcnt, mmass, byMass, theta, strict, false);
    if (c1.bin >= K_BINS) return { found: false };
    let beforeC = c1.bc, beforeM = c1.bm, rangeCnt = mcnt[c1.bin], prefix = 0n, mask = 0n, hbit = 63;
    let inRange = elems.filter((el) => el.bin === c1.bin);
    if (rangeCnt > K_CAP) {
      let mn = null, mxk = null;
      for (const el of inRange) {
        if (mn === null || el.key < mn) mn = el.key;
        if (mxk === null || el.key > mxk) mxk = el.key;
      }
      hbit = (mn ^ mxk).toString(2).length - 1;
      const low = (2n << BigInt(hbit)) - 1n;
      prefix = mn & ~low & 0xffffffffffffffffn;
      mask = ~low & 0xffffffffffffffffn;
      while (rangeCnt > K_CAP) {
        stats.passes++;
        const shift = Math.max(hbit - 7, 0), dmask = (2 << (hbit - shift)) - 1;
        const dcnt = new Array(K_DIGITS).fill(0), dmass = new Array(K_DIGITS).fill(0n);
        const sel = inRange.filter((el) => (el.key & mask) === prefix);
        for (const el of sel) {
          const d = Number((el.key >> BigInt(shift)) & BigInt(dmask));
          dcnt[K_DIGITS - 1 - d]++;
          dmass[K_DIGITS - 1 - d] += massFixed(el.a);
        }
        const restT = byMass ? theta - Number(beforeM) * UNIT : theta - beforeC;
        const cd = cross(dcnt, dmass, byMass, restT, strict, true);
        const d = K_DIGITS - 1 - cd.bin;
        beforeC += cd.bc;
        beforeM += cd.bm;
        rangeCnt = dcnt[cd.bin];
        prefix |= BigInt(d) << BigInt(shift);
        mask |= BigInt(dmask) << BigInt(shift);
        hbit = shift - 1;
      }
    }
    const win = inRange.filter((el) => (el.key & mask) === prefix).sort((x, y) => (x.key > y.key ? -1 : 1));
    if (win.length !== rangeCnt) throw new Error(`window ${win.length} != range count ${rangeCnt}`);
    const n = win.length;
    const cum = [];
    for (let i = 0, s = 0; i < n; ++i) cum.push((s += Math.exp(aOf(keyLogit(win[i].key)))));
    const restT = byMass ? theta - Number(beforeM) * UNIT : theta - beforeC;
    let j;
    if (byMass) {
      j = n - 1;
      for (let i = 0; i < n; ++i) if (strict ? cum[i] > restT : cum[i] >= restT) { j = i; break; }
    } else j = Math.trunc(Math.min(Math.max(restT, 1), n)) - 1;
    j = Math.max(j, 0);
    const before = j > 0 ? cum[j - 1] : 0;
    return { found: true, rank: beforeC + j + 1, key: win[j].key, before: Number(beforeM) * UNIT + before, own: cum[j] - before };
  }
  let keep = keep0;
  if (useMinp) {
    const amin = Math.log(f32(p.minP));
    let cnt = 0;
    for (const el of elems) if (el.a >= amin) cnt++;
    keep = Math.min(keep, Math.max(cnt, 1));
  }
  let ks = { found: false };
  if (useTopp) {
    const s = select(true, f32(p.topP) * S, false);
    if (s.found && s.rank <= keep) {
      keep = s.rank;
      ks = s;
    }
  }
  if (!ks.found && keep < V) ks = select(false, keep, false);
  const mass = ks.found ? ks.before + ks.own : S;
  const pk = select(true, f32(p.u) * mass, true);
  if (pk.found && pk.rank <= keep) return { id: keyId(pk.key), stats };
  if (!ks.found) ks = select(false, keep, false);
  return { id: keyId(ks.key), stats };
}

// Whether id is acceptable with every boundary misjudged by up to delta (test/helpers/reference.ts samplePickWithin).
function within(r, p, id, delta) {
  const c = cpuPick(r, p);
  if (!c.pr) return id === c.id ? null : `greedy ${id} want ${c.id}`;
  const { pr, idx } = c, V = r.length;
  const cum = new Float64Array(V);
  for (let j = 0, s = 0; j < V; ++j) cum[j] = s += pr[idx[j]];
  const keepWith = (slack) => {
    let keep = p.k > 0 ? Math.min(V, p.k) : V;
    if (p.minP > 0) {
      const floor = p.minP * pr[idx[0]] - slack;
      let n = 1;
      while (n < keep && pr[idx[n]] >= floor) ++n;
      keep = n;
    }
    if (p.topP > 0 && p.topP < 1) {
      let n = 0;
      while (n < keep && !(cum[n] >= p.topP + slack)) ++n;
      keep = Math.max(Math.min(n + 1, keep), 1);
    }
    return keep;
  };
  const lo = keepWith(-delta), hi = keepWith(delta);
  const rk = idx.indexOf(id);
  if (rk < 0 || rk >= hi) return `rank ${rk} not kept (${hi})`;
  const before = rk > 0 ? cum[rk - 1] : 0, after = cum[rk];
  const tLo = p.u * cum[lo - 1] - delta, tHi = p.u * cum[hi - 1] + delta;
  return after < tLo || before > tHi ? `rank ${rk}: [${before}, ${after}) vs u*mass [${tLo + delta}, ${tHi - delta}]` : null;
}

// ---- random rows
let seed = Number(process.argv[3] ?? 1);
function rnd() {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function normal() {
  return Math.sqrt(-2 * Math.log(rnd() || 1e-12)) * Math.cos(2 * Math.PI * rnd());
}
function row(kind, V) {
  const x = new Float32Array(V);
  switch (kind) {
    case "peaked":
      for (let j = 0; j < V; ++j) x[j] = 2 * normal();
      for (let j = 0; j < 30; ++j) x[Math.floor(rnd() * V)] += 12 + 6 * rnd();
      break;
    case "flat":
      for (let j = 0; j < V; ++j) x[j] = 0.3 * normal();
      break;
    case "const":
      x.fill(0.25);
      break;
    case "bimodal":
      for (let j = 0; j < V; ++j) x[j] = 0.1 * normal() - (j % 2 ? 0 : 3);
      break;
    case "nan":
      for (let j = 0; j < V; ++j) x[j] = 2 * normal();
      x[Math.floor(rnd() * V)] = [NaN, Infinity, NaN][Math.floor(rnd() * 3)];
      break;
    default: // ties: few distinct values
      for (let j = 0; j < V; ++j) x[j] = Math.floor(rnd() * 6) * 0.5;
  }
  return x;
}
function params() {
  const pick = (a) => a[Math.floor(rnd() * a.length)];
  return {
    t: f32(pick([0, 0.6, 0.8, 1, 1.3])),
    topP: f32(pick([1, 1, 0.95, 0.8, 0.5, 0.9])),
    minP: f32(pick([0, 0, 0.05, 0.2, 0.01])),
    u: f32(rnd()),
    k: pick([0, 0, 1, 5, 40, 3000, 5000]),
    pen: f32(pick([1, 1, 1.3, 0.7])),
  };
}

const N = Number(process.argv[2] ?? 400);
let exact = 0, near = 0, bad = 0, deep = 0;
const paths = {};
for (let i = 0; i < N; ++i) {
  const V = [64, 1000, 6000, 151552][i % 4 === 3 ? (i % 16 === 15 ? 3 : 2) : i % 4];
  const kind = ["peaked", "flat", "const", "bimodal", "nan", "ties"][Math.floor(rnd() * 6)];
  const r = row(kind, V);
  const p = params();
  const C = [2, 4, 8][Math.floor(rnd() * 3)];
  const penIds = p.pen !== 1 ? Array.from({ length: 20 }, () => Math.floor(rnd() * (V + 10)) - 5) : null;
  const rp = Float32Array.from(r);
  if (penIds) for (const id of penIds) if (id >= 0 && id < V) rp[id] = penalize(r[id], p.pen);
  const ref = cpuPick(rp, p);
  let got;
  try {
    const e = emulate(r, p, C, penIds);
    got = typeof e === "number" ? e : e.id;
    const path = typeof e === "number" ? "early" : e.stats.path;
    paths[path] = (paths[path] ?? 0) + 1;
    if (path !== "fast" && path !== "early") deep++;
  } catch (err) {
    bad++;
    console.log(`row ${i} (${kind}, V=${V}, C=${C}, ${JSON.stringify(p)}): ${err.stack}`);
    continue;
  }
  if (got === ref.id) exact++;
  else if (ref.margin < 1e-5) {
    const w = within(rp, p, got, 1e-5);
    if (w === null) near++;
    else {
      bad++;
      console.log(`row ${i} (${kind}, V=${V}, C=${C}, ${JSON.stringify(p)}): got ${got} want ${ref.id}; ${w}`);
    }
  } else {
    bad++;
    console.log(`row ${i} (${kind}, V=${V}, C=${C}, ${JSON.stringify(p)}): got ${got} want ${ref.id} (margin ${ref.margin})`);
  }
}
console.log(`${N} rows: ${exact} equal, ${near} within 1e-5 (boundary within 1e-5), ${bad} wrong; paths ${JSON.stringify(paths)}`);
process.exit(bad ? 1 : 0);
