/**
 * End-to-end parity with PyTorch on the trained CIFAR-10 checkpoints: the logits of test images
 * 0, 20, 40, … (500 rows) against the reference computed by timm (on a GPU in TF32, so agreement is
 * expected to about 5e-3), and the same predicted class on every row.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { loadBatch, openDataset } from '../src/data/datasets.js';
import { loadModel } from '../src/open.js';
import { sharedDir } from './helpers.js';

const TOLERANCE = 1e-2;
const EVERY = 20;
const BATCH = 100;

function argmax(a: Float32Array, offset: number, n: number): number {
  let best = 0;
  for (let k = 1; k < n; k++) if (a[offset + k] > a[offset + best]) best = k;
  return best;
}

for (const name of ['vit_tiny_c10', 'swin_micro_c10']) {
  test(`${name}: logits of every 20th test image match timm`, async (t) => {
    const modelsDir = path.join(sharedDir, 'models');
    const model = loadModel({ weights: path.join(modelsDir, `${name}.safetensors`), config: path.join(modelsDir, `${name}.json`) });
    const raw = fs.readFileSync(path.join(modelsDir, `${name}.logits_every20.f32`));
    const expected = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    const classes = model.spec.arch.numClasses;
    assert.equal(classes, 10);
    const rows = expected.length / classes;
    assert.equal(rows, 500);

    const dataset = await openDataset(path.join(sharedDir, 'data', 'cifar10', 'test.json'));
    assert.equal(dataset.size, rows * EVERY);
    const actual = new Float32Array(expected.length);
    for (let start = 0; start < rows; start += BATCH) {
      const indices: number[] = Array.from({ length: Math.min(BATCH, rows - start) }, (_, i) => (start + i) * EVERY);
      const batch = await loadBatch(dataset, indices, model.spec.preprocess);
      assert.equal(batch.skipped.length, 0);
      assert.deepEqual(batch.indices, indices);
      const logits = await model.forward(batch.images);
      assert.deepEqual(logits.shape, [indices.length, classes]);
      actual.set(logits.data, start * classes);
    }

    let maxDiff = 0, at = -1, disagreements = 0, maxRef = 0;
    const disagreeRows: number[] = [];
    for (let i = 0; i < actual.length; i++) {
      const d = Math.abs(actual[i] - expected[i]);
      if (!(d <= maxDiff)) { maxDiff = d; at = i; } // NaN fails
      maxRef = Math.max(maxRef, Math.abs(expected[i]));
    }
    for (let r = 0; r < rows; r++) {
      if (argmax(actual, r * classes, classes) !== argmax(expected, r * classes, classes)) {
        disagreements++;
        disagreeRows.push(r * EVERY);
      }
    }
    t.diagnostic(`${name}: max |Δlogit| = ${maxDiff.toExponential(3)} (row ${Math.floor(at / classes)}, image ${Math.floor(at / classes) * EVERY}; max |logit| ${maxRef.toFixed(2)}); argmax disagreements: ${disagreements}/${rows}`);
    assert.ok(maxDiff <= TOLERANCE, `${name}: max |Δlogit| ${maxDiff} at row ${Math.floor(at / classes)} class ${at % classes} (ours ${actual[at]}, timm ${expected[at]}) exceeds ${TOLERANCE}`);
    assert.equal(disagreements, 0, `${name}: predicted class differs on test images ${disagreeRows.join(', ')}`);
  });
}
