/**
 * How much recording calibration does at ImageNet sizes, with and without block recompute, without running it:
 * one forward pass of one image through the model's segments gives every point's record size and segment;
 * the groups are planned as calibration plans them (planGroups, the same byte budget and per-image record
 * formula) and counted as recording work in whole forward+backward passes:
 *   whole passes   one per group
 *   recompute      one whole pass, then each later group's own segments (segments / segments per pass)
 * plus the boundary records recompute keeps (activations and ∂L/∂ at the needed segment boundaries).
 *
 *   npx tsc -p . && node dist/scripts/recompute_plan.js [--jobs vit_s:32,vit_s:128,vit_b:32,vit_b:128,swin_t:32]
 */
import { parseArgs } from 'node:util';
import type { Runner } from '../src/models/types.js';
import { DEFAULT_GROUP_BYTES, planGroups } from '../src/quant/calibrate.js';
import { linear as linearFp, matmul as matmulFp } from '../src/tensor/gemm.js';
import { Tensor } from '../src/tensor/tensor.js';
import { speedModel } from './speed_models.js';

const { values } = parseArgs({ options: { jobs: { type: 'string', default: 'vit_s:32,vit_s:128,vit_b:32,vit_b:128,swin_t:32,swin_t:128' } } });

for (const job of values.jobs!.split(',')) {
  const [name, count] = job.split(':');
  const images = Number(count);
  const model = speedModel(name);
  const segments = model.segments!;
  const { inChans, imgSize } = model.spec.arch;
  const sizes: { name: string; floats: number; segment: number }[] = [];
  const boundaryFloats: number[] = [];
  let segment = 0;
  const observe = (point: string, inputs: Tensor[], output: Tensor) => {
    const ins = inputs.map((t) => t.size);
    // calibrate.ts floatsPerImage with gradients: inputs + output + ∂L/∂O + the search's fake-quantized copy.
    sizes.push({ name: point, floats: ins.reduce((a, b) => a + b, 0) + 2 * output.size + Math.max(...ins), segment });
  };
  const runner: Runner = {
    linear: async (point, x, w, b) => { const y = await linearFp(x, w, b); observe(point, [x], y); return y; },
    matmul: async (point, a, b, t) => { const y = await matmulFp(a, b, t); observe(point, [a, b], y); return y; },
  };
  let x = new Tensor(Float32Array.from({ length: inChans * imgSize * imgSize }, (_, i) => Math.sin(i)), [1, inChans, imgSize, imgSize]);
  for (segment = 0; segment < segments.count; segment++) {
    x = await segments.run(segment, x, runner);
    boundaryFloats.push(x.size);
  }
  const groups = planGroups(sizes.map((s) => ({ name: s.name, bytes: 4 * s.floats * images })), DEFAULT_GROUP_BYTES);
  const segOf = new Map(sizes.map((s) => [s.name, s.segment]));
  let recompute = 1, acts = new Set<number>(), grads = new Set<number>();
  groups.forEach((g, i) => {
    const segs = g.map((p) => segOf.get(p)!);
    const lo = Math.min(...segs), hi = Math.max(...segs);
    if (lo > 0) acts.add(lo - 1);
    grads.add(hi);
    if (i > 0) recompute += (hi - lo + 1) / segments.count;
  });
  const boundaryBytes = 4 * images * ([...acts].reduce((a, s) => a + boundaryFloats[s], 0) + [...grads].reduce((a, s) => a + boundaryFloats[s], 0));
  console.log(`| ${model.spec.name} | ${images} | ${groups.length} | ${groups.length} | ${recompute.toFixed(1)} | ${(groups.length / recompute).toFixed(1)}× | ${(boundaryBytes / 2 ** 20).toFixed(0)} MiB |`);
}
