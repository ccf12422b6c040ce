/**
 * The quantization report: one self-contained HTML page (no network: ECharts' minified build is
 * inlined), with the accuracy, every point's parameters and measures, and charts drawn by ECharts
 * from options built here. Same data → byte-identical page (no timestamps, no timings).
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { describeFsError } from '../io/safetensors.js';
import { kindOf } from '../quant/kinds/index.js';
import type { ActivationQuant, PointQuant } from '../quant/params.js';
import type { Histogram, PointReport } from './collect.js';

export interface Accuracy {
  top1: number;
  top5: number;
}

/** One quantization run, for the accuracy-vs-bits chart. */
export interface RunSummary {
  label: string;
  method: string;
  w_bits: number;
  a_bits: number;
  top1: number;
  top5: number;
}

export interface ReportData {
  title: string;
  /** Label/value lines under the title (model, method, calibration…). */
  facts: [string, string][];
  /** Class names by index, when the model names them (hub folders' label_names). */
  labelNames?: string[];
  accuracy?: { fp32: Accuracy; quantized: Accuracy; images: number };
  points?: PointReport[];
  histograms?: Histogram[];
  /** Several runs of one model: plotted as accuracy vs bits (with `fp32` as a reference line). */
  runs?: RunSummary[];
  fp32?: Accuracy;
}

interface Chart {
  id: string;
  title: string;
  option: Record<string, unknown>;
  height: number;
}

const num = (x: number): string => (x === 0 ? '0' : Math.abs(x) >= 1e-3 && Math.abs(x) < 1e4 ? Number(x.toPrecision(4)).toString() : x.toExponential(3));
const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

// Min and max by reduce: group multipliers run to 10^5 entries, past V8's limit on spread arguments.
const list = (xs: number[]): string => (xs.length <= 4 ? xs.map(num).join(', ') : `${num(xs.reduce((a, b) => Math.min(a, b)))} … ${num(xs.reduce((a, b) => Math.max(a, b)))} (${xs.length})`);

const describeActivation = (q: ActivationQuant): string => kindOf(q).describe(q, num, list);

function describeParams(p: PointQuant): { bits: string; first: string; second: string } {
  if (p.kind === 'matmul') return { bits: `A${p.a.bits} · B${p.b.bits}`, first: `A: ${describeActivation(p.a)}`, second: `B: ${describeActivation(p.b)}` };
  return { bits: `W${p.weightBits}${p.input ? ` · A${p.input.bits}` : ''}`, first: `W: Δ ${p.weightGroups ? `per row ${list(p.weightDeltas)} × an integer per ${p.weightGroups.size} input channels (${list(p.weightGroups.multipliers)})` : list(p.weightDeltas)}`, second: p.input ? `in: ${describeActivation(p.input)}` : 'in: float (image)' };
}

const COLORS = { before: '#b0b7c3', after: '#2f6fd6', r1: 'rgba(47,111,214,0.10)', r2: 'rgba(230,126,34,0.12)', hist: '#2f6fd6', mark: '#c0392b' };

function errorChart(points: PointReport[]): Chart {
  const positive = (x: number) => (x > 0 ? x : null);
  return {
    id: 'chart-layer-error',
    title: 'Per-layer quantization error: 1 − cos(O, Ô) of each point’s output, max-abs uniform (no search) vs searched',
    height: 420,
    option: {
      animation: false,
      color: [COLORS.before, COLORS.after],
      legend: { top: 0 },
      tooltip: { trigger: 'axis' },
      grid: { left: 70, right: 20, top: 40, bottom: 150 },
      xAxis: { type: 'category', data: points.map((p) => p.point), axisLabel: { rotate: 90, fontSize: 9, interval: 0 } },
      yAxis: { type: 'log', name: '1 − cos', nameLocation: 'middle', nameGap: 50 },
      series: [
        { name: 'max-abs uniform', type: 'bar', data: points.map((p) => positive(p.before.cosine_error)) },
        { name: 'searched', type: 'bar', data: points.map((p) => positive(p.after.cosine_error)) },
      ],
    },
  };
}

function histogramChart(h: Histogram, index: number): Chart {
  const log = h.x_scale === 'log';
  const clampX = (x: number) => (log ? Math.max(x, 1e-7) : x);
  const areas = h.ranges.map((r, i) => [
    { name: r.name, xAxis: clampX(r.from), itemStyle: { color: i === 0 ? COLORS.r1 : COLORS.r2 }, label: { position: 'insideTop', color: '#555' } },
    { xAxis: clampX(r.to) },
  ]);
  const xs = [...h.bins.map((b) => b[0]), ...h.marks.map((m) => m.value), ...h.ranges.flatMap((r) => [r.from, r.to])].map(clampX);
  // Fixed axis ranges, and marks drawn as two-point lines within them: ECharts drops some one-value
  // (xAxis only) mark lines on these axes.
  const fractions = h.bins.map((b) => b[1]);
  const positive = fractions.filter((f) => f > 0);
  const [y0, y1] = log ? [0, Math.max(...fractions)] : [10 ** Math.floor(Math.log10(Math.min(...positive))), 1];
  const step = log ? 1 : 10 ** Math.floor(Math.log10(Math.max(...xs) - Math.min(...xs)));
  const [x0, x1] = log ? [1e-7, 1] : [Math.floor(Math.min(...xs) * 10) / 10, Math.ceil(Math.max(...xs) / step) * step];
  return {
    id: `chart-hist-${index}`,
    title: `${h.point}: ${h.input} input (${h.values.toLocaleString('en-US')} values${h.below ? `, ${num(h.below / h.values)} of them below 1e-7` : ''})`,
    height: 300,
    option: {
      animation: false,
      grid: { left: 60, right: 30, top: 20, bottom: 50 },
      tooltip: { trigger: 'axis' },
      xAxis: { type: log ? 'log' : 'value', min: x0, max: x1, name: log ? 'value (log)' : 'value', nameLocation: 'middle', nameGap: 28 },
      yAxis: log ? { type: 'value', name: 'fraction', nameLocation: 'middle', nameGap: 45 } : { type: 'log', min: y0, max: y1, name: 'fraction', nameLocation: 'middle', nameGap: 45 },
      series: [
        {
          name: h.input,
          type: 'line',
          step: 'middle',
          symbol: 'none',
          color: COLORS.hist,
          areaStyle: { opacity: 0.35 },
          data: h.bins.map(([x, f]) => [x, log || f > 0 ? f : null]),
          markArea: { silent: true, data: areas },
          markLine: { silent: true, symbol: 'none', lineStyle: { color: COLORS.mark, type: 'dashed' }, label: { formatter: '{b}', fontSize: 9, position: 'insideEndTop' }, data: h.marks.map((m) => [{ name: m.name, coord: [clampX(m.value), y0] }, { coord: [clampX(m.value), y1] }]) },
        },
      ],
    },
  };
}

function runsChart(runs: RunSummary[], fp32?: Accuracy): Chart {
  const methods = [...new Set(runs.map((r) => r.method))];
  return {
    id: 'chart-accuracy-bits',
    title: 'Top-1 accuracy vs bits',
    height: 360,
    option: {
      animation: false,
      legend: { top: 0 },
      tooltip: { trigger: 'item' },
      grid: { left: 60, right: 30, top: 40, bottom: 50 },
      xAxis: { type: 'value', name: 'activation bits', nameLocation: 'middle', nameGap: 30, minInterval: 1, min: Math.min(...runs.map((r) => r.a_bits)) - 1, max: Math.max(...runs.map((r) => r.a_bits)) + 1 },
      yAxis: { type: 'value', name: 'top-1 %', nameLocation: 'middle', nameGap: 40, scale: true },
      series: methods.map((m, i) => ({
        name: m,
        type: 'line',
        symbolSize: 9,
        data: runs.filter((r) => r.method === m).sort((a, b) => a.a_bits - b.a_bits).map((r) => ({ name: `${r.label} (W${r.w_bits}A${r.a_bits})`, value: [r.a_bits, Number((r.top1 * 100).toFixed(2))] })),
        ...(i === 0 && fp32 ? { markLine: { symbol: 'none', label: { formatter: 'FP32 {c}%', position: 'insideEndTop' }, lineStyle: { type: 'dashed', color: '#555' }, data: [{ yAxis: Number((fp32.top1 * 100).toFixed(2)) }] } } : {}),
      })),
    },
  };
}

function echartsSource(): string {
  const file = createRequire(import.meta.url).resolve('echarts/dist/echarts.min.js');
  return fs.readFileSync(file, 'utf8');
}

/** JSON safe inside a <script> element. */
const scriptJson = (v: unknown): string => JSON.stringify(v).replace(/</g, '\\u003c');

export function renderReport(data: ReportData): string {
  const charts: Chart[] = [];
  if (data.runs && data.runs.length > 1) charts.push(runsChart(data.runs, data.fp32));
  if (data.points?.length) charts.push(errorChart(data.points));
  (data.histograms ?? []).forEach((h, i) => charts.push(histogramChart(h, i)));

  const body: string[] = [`<h1>${esc(data.title)}</h1>`, '<table class="facts">', ...data.facts.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`), '</table>'];
  if (data.labelNames) body.push(`<p class="classes"><b>Classes</b> (${data.labelNames.length}): ${esc(data.labelNames.slice(0, 50).join(', '))}${data.labelNames.length > 50 ? ', …' : ''}</p>`);
  if (data.accuracy) {
    const { fp32, quantized, images } = data.accuracy;
    body.push(
      `<h2>Accuracy on ${images.toLocaleString('en-US')} images</h2>`,
      '<table class="grid"><tr><th></th><th>top-1</th><th>top-5</th></tr>',
      `<tr><th>FP32</th><td>${pct(fp32.top1)}</td><td>${pct(fp32.top5)}</td></tr>`,
      `<tr><th>quantized</th><td>${pct(quantized.top1)}</td><td>${pct(quantized.top5)}</td></tr>`,
      `<tr><th>change</th><td>${((quantized.top1 - fp32.top1) * 100).toFixed(2)} points</td><td>${((quantized.top5 - fp32.top5) * 100).toFixed(2)} points</td></tr>`,
      '</table>',
    );
  }
  const chartDiv = (c: Chart) => `<figure><figcaption>${esc(c.title)}</figcaption><div class="chart" id="${c.id}" style="height:${c.height}px"></div></figure>`;
  const runs = charts.filter((c) => c.id === 'chart-accuracy-bits');
  if (runs.length) body.push('<h2>Accuracy vs bits</h2>', ...runs.map(chartDiv));
  if (data.points?.length) {
    body.push('<h2>Quantization error per point</h2>', chartDiv(charts.find((c) => c.id === 'chart-layer-error')!));
  }
  const hists = charts.filter((c) => c.id.startsWith('chart-hist-'));
  if (hists.length) {
    body.push(
      '<h2>Post-softmax and post-GELU inputs</h2>',
      '<p>Histograms of the calibration inputs of the attention softmax·v products (log value axis) and of fc2 (post-GELU, log fraction axis), with the quantizer’s ranges shaded (R1 blue, R2 orange for twin uniform) and its clipping points dashed.</p>',
      '<div class="hists">',
      ...hists.map(chartDiv),
      '</div>',
    );
  }
  if (data.points?.length) {
    const metric = data.points.length ? 'metric' : '';
    body.push(
      '<h2>Points</h2>',
      '<p>Per quantization point: bit widths, scales Δ (one per tensor, per q/k/v group, per head, or the range over per-channel scales), twin ranges, and the search metric and output cosine error with max-abs uniform scales (before the search) and with the searched ones (after).</p>',
      `<table class="grid points"><tr><th>point</th><th>bits</th><th>scales</th><th>${metric} before</th><th>${metric} after</th><th>1 − cos before</th><th>1 − cos after</th></tr>`,
      ...data.points.map((p) => {
        const d = describeParams(p.params);
        return `<tr><td>${esc(p.point)}</td><td>${esc(d.bits)}</td><td>${esc(d.first)}<br>${esc(d.second)}</td><td>${num(p.before.metric)}</td><td>${num(p.after.metric)}</td><td>${num(p.before.cosine_error)}</td><td>${num(p.after.cosine_error)}</td></tr>`;
      }),
      '</table>',
    );
  }

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(data.title)}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 24px auto; max-width: 1180px; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 8px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; } .facts th { text-align: left; padding: 1px 16px 1px 0; color: #555; font-weight: 600; }
.grid th, .grid td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } .grid th { background: #f5f6f8; }
.points td:nth-child(1), .points td:nth-child(3) { text-align: left; } .points td { font-size: 12px; }
figure { margin: 8px 0 16px; } figcaption { font-size: 13px; color: #444; margin-bottom: 2px; }
.hists { display: grid; grid-template-columns: 1fr 1fr; gap: 0 24px; } .chart { width: 100%; }
</style>
</head>
<body>
${body.join('\n')}
<script>${echartsSource()}</script>
<script>
const CHARTS = ${scriptJson(charts.map((c) => ({ id: c.id, option: c.option })))};
for (const c of CHARTS) echarts.init(document.getElementById(c.id), null, { renderer: 'svg' }).setOption(c.option);
</script>
</body>
</html>
`;
}

/** Write the page atomically (a temp file renamed into place): never a half-written report. */
export function writeReport(file: string, data: ReportData): void {
  const html = renderReport(data);
  const tmp = path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(tmp, html);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new Ptq4vitError(`cannot write report ${file}: ${describeFsError(e)}`);
  }
}

/** Fail before calibration if the report cannot be written, or would replace one of the run's files. */
export function checkReportTarget(file: string, others: Record<string, string | undefined>): void {
  for (const [flag, p] of Object.entries(others)) {
    if (p !== undefined && path.resolve(file) === path.resolve(p)) throw new Ptq4vitError(`--report ${file} would overwrite the ${flag} file`);
  }
  const dir = path.dirname(path.resolve(file));
  try {
    if (!fs.statSync(dir).isDirectory()) throw new Error('not a directory');
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new Ptq4vitError(`cannot write report ${file}: directory ${dir} does not exist or is not writable`);
  }
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) throw new Ptq4vitError(`cannot write report ${file}: it is a directory`);
}
