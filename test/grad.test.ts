import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { computeGradients } from '../src/grad/gradients.js';
import { SafeTensors } from '../src/io/safetensors.js';
import { specFromCard } from '../src/models/config.js';
import { buildModel } from '../src/models/load.js';
import { Tensor } from '../src/tensor/tensor.js';
import { fixturesDir, maxAbs, maxAbsDiff } from './helpers.js';

/** timm records the patch-embedding conv output NCHW; ours is [B, patches, D]. */
function toTimmLayout(point: string, t: Tensor): Float32Array {
  if (point !== 'patch_embed.proj') return t.data;
  const [b, patches, d] = t.shape;
  const out = new Float32Array(t.size);
  for (let i = 0; i < b; i++) for (let p = 0; p < patches; p++) for (let c = 0; c < d; c++) out[(i * d + c) * patches + p] = t.data[(i * patches + p) * d + c];
  return out;
}

for (const name of ['vit_p16_224_fixture', 'deit_distilled_p16_224_fixture', 'swin_p4_w7_224_fixture']) {
  for (const chunkSize of [1, 8]) {
    test(`${name}: ∂L/∂O at every recorded point matches torch autograd (chunks of ${chunkSize})`, async () => {
      const card = JSON.parse(fs.readFileSync(path.join(fixturesDir, `${name}.json`), 'utf8'));
      const model = buildModel(specFromCard(card, name), SafeTensors.read(path.join(fixturesDir, `${name}.safetensors`)));
      const acts = SafeTensors.read(path.join(fixturesDir, `${name}.activations.safetensors`));
      const images = acts.tensor('input');
      const batch = images.shape[0];
      const grads = new Map<string, Float32Array>();
      const loss = await computeGradients(model, images, Int32Array.from(card.labels), { loss: 'label', chunkSize }, (chunk, point, g) => {
        const perImage = g.size / chunk.count;
        const all = grads.get(point) ?? new Float32Array(perImage * batch);
        all.set(toTimmLayout(point, g), chunk.start * perImage);
        grads.set(point, all);
      });
      assert.ok(Math.abs(loss - card.loss_value) < 1e-4 * (1 + card.loss_value), `loss ${loss} vs ${card.loss_value}`);
      for (const point of card.recorded_points as string[]) {
        const ref = acts.tensor(`${point}.grad_out`);
        const ours = grads.get(point);
        assert.ok(ours, `no gradient for ${point}`);
        const { max, at } = maxAbsDiff(ours, ref.data);
        const bound = 1e-3 * maxAbs(ref.data);
        assert.ok(max <= bound, `${point}.grad_out: max abs error ${max} at ${at} (${ours[at]} vs ${ref.data[at]}) exceeds ${bound}`);
      }
    });
  }
}
