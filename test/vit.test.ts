import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { Ptq4vitError } from '../src/errors.js';
import { SafeTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { specFromCard } from '../src/models/config.js';
import { VisionTransformer } from '../src/models/vit.js';
import { RecordingRunner } from '../src/tensor/runner.js';
import { Tensor } from '../src/tensor/tensor.js';
import { assertClose, fixturesDir } from './helpers.js';

function fixture(name: string) {
  const card = JSON.parse(fs.readFileSync(path.join(fixturesDir, `${name}.json`), 'utf8'));
  const weights = SafeTensors.read(path.join(fixturesDir, `${name}.safetensors`));
  const acts = SafeTensors.read(path.join(fixturesDir, `${name}.activations.safetensors`));
  return { card, weights, acts, spec: specFromCard(card, name) };
}

/** Our layouts → timm's recorded ones: the conv output is NCHW there, k enters matmul1 transposed. */
function toTimmLayout(point: string, which: 'out' | 'in0' | 'in1', t: Tensor, expectedShape: number[]): Float32Array {
  if (point === 'patch_embed.proj' && which === 'out') {
    const [b, patches, d] = t.shape;
    const out = new Float32Array(t.size);
    for (let i = 0; i < b; i++) for (let p = 0; p < patches; p++) for (let c = 0; c < d; c++) out[(i * d + c) * patches + p] = t.data[(i * patches + p) * d + c];
    return out;
  }
  if (point.endsWith('matmul1') && which === 'in1') {
    const [g, n, d] = t.shape;
    const out = new Float32Array(t.size);
    for (let i = 0; i < g; i++) for (let r = 0; r < n; r++) for (let c = 0; c < d; c++) out[(i * d + c) * n + r] = t.data[(i * n + r) * d + c];
    return out;
  }
  assert.equal(t.size, expectedShape.reduce((a, b) => a * b, 1), `${point}.${which}: size`);
  return t.data;
}

for (const name of ['vit_p16_224_fixture', 'deit_distilled_p16_224_fixture']) {
  test(`${name}: logits and every recorded quantization point match timm`, async () => {
    const { card, weights, acts, spec } = fixture(name);
    const model = new VisionTransformer(spec, weights);
    assert.deepEqual(model.quantPoints.map((p) => p.name), card.quant_points);
    const runner = new RecordingRunner();
    const logits = await model.forward(acts.tensor('input'), runner);
    assertClose(logits.data, acts.tensor('logits').data, `${name} logits`);
    for (const point of card.recorded_points as string[]) {
      const rec = runner.records.get(point);
      assert.ok(rec, `${point} was not called`);
      for (const which of ['out', 'in0', 'in1'] as const) {
        const key = `${point}.${which}`;
        if (!acts.has(key) || (point === 'patch_embed.proj' && which === 'in0')) continue;
        const ours = which === 'out' ? rec.output : rec.inputs[which === 'in0' ? 0 : 1];
        const ref = acts.tensor(key);
        assertClose(toTimmLayout(point, which, ours, ref.shape as number[]), ref.data, `${name} ${key}`);
      }
    }
  });
}

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-vit-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

function rewrite(weights: SafeTensors, edit: (tensors: Record<string, TensorToWrite>) => void): string {
  const tensors: Record<string, TensorToWrite> = {};
  for (const n of weights.names()) {
    const t = weights.tensor(n);
    tensors[n] = { dtype: 'F32', shape: t.shape, data: t.data };
  }
  edit(tensors);
  const file = path.join(fs.mkdtempSync(path.join(tmpRoot, 'case-')), 'bad.safetensors');
  writeSafetensors(file, tensors);
  return file;
}

test('ViT checkpoint errors name the file and the tensor', () => {
  const { weights, spec } = fixture('vit_p16_224_fixture');
  const missing = rewrite(weights, (t) => delete t['blocks.1.mlp.fc2.weight']);
  assert.throws(() => new VisionTransformer(spec, SafeTensors.read(missing)), (e: Error) => e instanceof Ptq4vitError && e.message.includes(missing) && /'blocks\.1\.mlp\.fc2\.weight' is missing/.test(e.message));
  const misshaped = rewrite(weights, (t) => (t['pos_embed'] = { dtype: 'F32', shape: [1, 196, 48], data: new Float32Array(196 * 48) }));
  assert.throws(() => new VisionTransformer(spec, SafeTensors.read(misshaped)), /'pos_embed' has shape \[1, 196, 48\], expected \[1, 197, 48\]/);
  const deeper = rewrite(weights, (t) => (t['blocks.2.norm1.weight'] = { dtype: 'F32', shape: [48], data: new Float32Array(48) }));
  assert.throws(() => new VisionTransformer(spec, SafeTensors.read(deeper)), /not used by .*blocks\.2\.norm1\.weight/);
  const nan = rewrite(weights, (t) => {
    const d = Float32Array.from(t['head.weight'].data as Float32Array);
    d[5] = NaN;
    t['head.weight'] = { dtype: 'F32', shape: [16, 48], data: d };
  });
  assert.throws(() => new VisionTransformer(spec, SafeTensors.read(nan)), /'head\.weight' contains NaN at flat index 5/);
});
