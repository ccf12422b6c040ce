/**
 * `quantize --report`: one self-contained HTML page, opened in a real headless Chromium (Debian's
 * chromium via puppeteer-core, network cut off): no console errors, no outside requests, and every
 * chart drawn by ECharts with content; plus the page's numbers against the run's own JSON.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openModel } from '../src/open.js';
import { histogram, rangesOf } from '../src/report/collect.js';
import { renderReport, type RunSummary } from '../src/report/html.js';
import { CHROMIUM, chartStates, openInChromium, type OpenedPage } from './browser.js';
import { repoRoot, runCli, scratchDir, sharedDir, showRun, type CliRun } from './helpers.js';

const scratch = scratchDir('report');
const CALIB = path.join(sharedDir, 'data', 'cifar10', 'calib32.json');
const TEST1K = path.join(sharedDir, 'data', 'cifar10', 'test1k.json');
const CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

/** vit_tiny_c10 as a timm hub folder, so the report has class names. */
function hubFolder(): string {
  const dir = path.join(scratch.next(), 'vit_tiny_c10');
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(sharedDir, 'models', 'vit_tiny_c10.safetensors'), path.join(dir, 'model.safetensors'));
  const config = {
    architecture: 'vit_tiny_patch16_224',
    num_classes: 10,
    label_names: CLASSES,
    model_args: { img_size: 32, patch_size: 4 },
    pretrained_cfg: { input_size: [3, 32, 32], interpolation: 'bicubic', crop_pct: 1.0, crop_mode: 'center', mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] },
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

/** A small but complete PTQ4ViT W6A6 run with --eval and --report. */
function quantizeWithReport(model: string, report: string): CliRun {
  const out = path.join(path.dirname(report), `${path.basename(report, '.html')}.safetensors`);
  return runCli(['quantize', '--model', model, '--calib', CALIB, '--calib-size', '8', '--bits', '6', '--n', '10', '--rounds', '1', '--out', out, '--eval', TEST1K, '--limit', '64', '--report', report, '--json'], 300_000);
}

function assertBrowserOk(opened: OpenedPage): void {
  assert.deepEqual(opened.problems, [], `console errors or outside requests:\n${opened.problems.join('\n')}`);
}

describe('quantize --report', () => {
  let report = '';
  let run: CliRun;
  let quantPoints = 0;
  let opened: OpenedPage | null = null;

  before(() => {
    assert.ok(CHROMIUM, 'chromium is needed for the report tests: apt-get install chromium (.ci/run installs it)');
    const model = hubFolder();
    quantPoints = openModel({ weights: model }).model.quantPoints.length;
    report = path.join(scratch.next(), 'report.html');
    run = quantizeWithReport(model, report);
  });
  after(async () => {
    await opened?.close();
  });

  test('writes one self-contained page with the run’s accuracy, class names and every point', () => {
    assert.equal(run.status, 0, showRun(run));
    const html = fs.readFileSync(report, 'utf8');
    const json = JSON.parse(run.stdout.trimEnd().split('\n').pop()!) as Record<string, number>;
    // Nothing fetched: no external scripts, styles, images or fonts in the page around the inlined scripts.
    const page = html.replace(/<script>[\s\S]*?<\/script>/g, '<script></script>');
    const external = page.match(/<script[^>]+src=|<link[^>]+href=|<img[^>]+src=|url\(|@import|https?:\/\//gi);
    assert.equal(external, null, `external references: ${external?.join(', ')}`);
    assert.ok(html.includes('echarts.init('), 'ECharts draws the charts');
    assert.ok(html.length > 1_000_000, `the library is inlined (${html.length} bytes)`);
    const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
    const has = (text: string) => assert.ok(page.includes(text), `the page shows ${text}`);
    has(`<th>FP32</th><td>${pct(json.fp32_top1)}</td><td>${pct(json.fp32_top5)}</td>`);
    has(`<th>quantized</th><td>${pct(json.top1)}</td><td>${pct(json.top5)}</td>`);
    has('Accuracy on 64 images');
    has(CLASSES.join(', '));
    // …and the quantized file keeps them in its spec (for eval and export).
    const written = openModel({ weights: path.join(path.dirname(report), 'report.safetensors') });
    assert.deepEqual(written.model.spec.labelNames, CLASSES);
    const rows = page.match(/<tr><td>[a-z_]+[a-z_.0-9]*<\/td>/g) ?? [];
    assert.equal(rows.length, quantPoints, 'one table row per quantization point');
    // ViT: each block has a post-softmax (attn.matmul2) and a post-GELU (mlp.fc2) input.
    assert.equal((page.match(/<figcaption>blocks\.\d+\.attn\.matmul2: post-softmax input/g) ?? []).length, 12);
    assert.equal((page.match(/<figcaption>blocks\.\d+\.mlp\.fc2: post-gelu input/g) ?? []).length, 12);
    assert.ok(/twin: R1 = \[0, [0-9.e-]+\) Δ_R1/.test(page), 'softmax twin ranges in the table');
  });

  test('the search improves on max-abs scales: total metric and cosine error drop', () => {
    const html = fs.readFileSync(report, 'utf8');
    const cells = [...html.matchAll(/<\/td><td>([-0-9.e]+)<\/td><td>([-0-9.e]+)<\/td><td>([-0-9.e]+)<\/td><td>([-0-9.e]+)<\/td><\/tr>/g)].map((m) => m.slice(1, 5).map(Number));
    assert.equal(cells.length, quantPoints);
    const sum = (i: number) => cells.reduce((s, c) => s + c[i], 0);
    assert.ok(cells.every((c) => c.every((v) => Number.isFinite(v) && v >= 0)), 'finite, non-negative measures');
    assert.ok(sum(1) < sum(0), `metric after ${sum(1)} < before ${sum(0)}`);
    assert.ok(sum(3) < sum(2), `cosine error after ${sum(3)} < before ${sum(2)}`);
  });

  test('same inputs and seed: byte-identical report', () => {
    const again = path.join(scratch.next(), 'report.html');
    const r = quantizeWithReport(hubFolder(), again);
    assert.equal(r.status, 0, showRun(r));
    assert.ok(fs.readFileSync(again).equals(fs.readFileSync(report)), 'the two reports differ');
  });

  test('in Chromium: no console errors or requests, every chart drawn', async () => {
    opened = await openInChromium(report);
    assertBrowserOk(opened);
    const charts = await chartStates(opened.page);
    assert.equal(charts.length, 1 + 24, JSON.stringify(charts));
    for (const c of charts) {
      assert.ok(c.width > 300 && c.height > 200, `${c.id} has a size: ${JSON.stringify(c)}`);
      assert.ok(c.shapes >= 20 && c.texts >= 5, `${c.id} has drawn content: ${JSON.stringify(c)}`);
    }
    // The error chart has two bars per point; each histogram marks its ranges and clipping points.
    const error = charts.find((c) => c.id === 'chart-layer-error')!;
    assert.ok(error.shapes >= 2 * quantPoints, JSON.stringify(error));
    const labels = await opened.page.$$eval('.chart', (els) => els.map((el) => [...el.querySelectorAll('svg text')].map((t) => t.textContent ?? '')));
    for (const [i, texts] of labels.slice(1).entries()) {
      assert.ok(texts.includes('R1') && texts.includes('R2') && texts.includes('R2 clip'), `histogram ${i} marks R1, R2 and the R2 clip: ${texts.join(' | ')}`);
    }
  });
});

describe('report pieces', () => {
  test('accuracy vs bits from several runs (as the results script writes them), drawn in Chromium', async () => {
    const runs: RunSummary[] = [];
    for (const line of fs.readFileSync(path.join(repoRoot, 'results', 'results.jsonl'), 'utf8').trim().split('\n')) {
      const r = JSON.parse(line) as { model: string; config: string; method: string; w_bits?: number; a_bits?: number; top1: number; top5: number; variant?: object };
      if (r.model === 'vit_tiny_c10' && r.method !== 'fp32' && r.w_bits === r.a_bits && r.variant && Object.keys(r.variant).length === 0) runs.push({ label: r.config, method: r.method, w_bits: r.w_bits!, a_bits: r.a_bits!, top1: r.top1, top5: r.top5 });
    }
    assert.ok(runs.length >= 4, `runs from results.jsonl: ${runs.length}`);
    const file = path.join(scratch.next(), 'runs.html');
    fs.writeFileSync(file, renderReport({ title: 'vit_tiny_c10', facts: [['model', 'vit_tiny_c10']], runs, fp32: { top1: 0.7575, top5: 0.9865 } }));
    const page = await openInChromium(file);
    try {
      assertBrowserOk(page);
      const charts = await chartStates(page.page);
      assert.deepEqual(charts.map((c) => c.id), ['chart-accuracy-bits']);
      assert.ok(charts[0].shapes >= runs.length, JSON.stringify(charts));
      const texts = await page.page.$eval('#chart-accuracy-bits', (el) => [...el.querySelectorAll('svg text')].map((t) => t.textContent ?? ''));
      assert.ok(texts.includes('ptq4vit') && texts.includes('base'), `one line per method: ${texts.join(' | ')}`);
      assert.ok(texts.some((t) => t.startsWith('FP32 75.75')), `FP32 reference line: ${texts.join(' | ')}`);
    } finally {
      await page.close();
    }
  });

  test('histogram fractions add up; log bins count values below 1e-7 apart', () => {
    const data = Float32Array.from([0, 1e-9, 1e-3, 0.5, 0.5, 1]);
    const h = histogram(data, 'log');
    assert.equal(h.below, 2);
    assert.ok(Math.abs(h.bins.reduce((s, b) => s + b[1], 0) - 4 / 6) < 1e-12);
    const g = histogram(Float32Array.from([-0.17, 0, 0.1, 3]), 'linear');
    assert.equal(g.below, 0);
    assert.ok(Math.abs(g.bins.reduce((s, b) => s + b[1], 0) - 1) < 1e-12);
    assert.ok(g.bins[0][0] > -0.17 && g.bins[g.bins.length - 1][0] < 3);
  });

  test('twin ranges and clipping points follow the quantizers', () => {
    const soft = rangesOf({ kind: 'twin-softmax', bits: 6, deltaR1: 2 ** -9, deltaR2: 1 / 32 }, 'post-softmax');
    assert.deepEqual(soft.ranges, [{ name: 'R1', from: 0, to: 32 * 2 ** -9 }, { name: 'R2', from: 32 * 2 ** -9, to: 31 / 32 }]);
    const gelu = rangesOf({ kind: 'twin-gelu', bits: 4, deltaNeg: 0.025, deltaPos: 0.4 }, 'post-gelu');
    assert.deepEqual(gelu.marks.map((m) => m.value), [-8 * 0.025, 7 * 0.4]);
    const uni = rangesOf({ kind: 'uniform', bits: 8, deltas: [0.01, 0.02] }, 'post-gelu');
    assert.deepEqual(uni.ranges, [{ name: 'uniform', from: -128 * 0.02, to: 127 * 0.02 }]);
  });
});

describe('--report errors: exit 2 before calibration, nothing written', () => {
  test('into a missing directory, onto --out, onto the calibration manifest', () => {
    const dir = scratch.next();
    const model = path.join(sharedDir, 'models', 'vit_tiny_c10.safetensors');
    const card = path.join(sharedDir, 'models', 'vit_tiny_c10.json');
    const base = ['quantize', '--model', model, '--config', card, '--calib', CALIB, '--out', path.join(dir, 'q.safetensors')];
    const cases: [string, RegExp][] = [
      [path.join(dir, 'nope', 'r.html'), /cannot write report .*r\.html: directory .*nope does not exist or is not writable/],
      [path.join(dir, 'q.safetensors'), /--report .*q\.safetensors would overwrite the --out file/],
      [CALIB, /--report .*calib32\.json would overwrite the --calib file/],
      [dir, /cannot write report .*: it is a directory/],
    ];
    for (const [target, pattern] of cases) {
      const r = runCli([...base, '--report', target]);
      assert.equal(r.status, 2, showRun(r));
      assert.match(r.stderr.trimEnd(), new RegExp(`^ptq4vit: error: ${pattern.source}$`), showRun(r));
    }
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});
