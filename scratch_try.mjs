import ort from 'onnxruntime-node';
import fs from 'node:fs';
import { openModel } from './dist/src/models/load.js';
import { exportOnnx } from './dist/src/export/onnx.js';
import { openDataset, loadBatch } from './dist/src/data/datasets.js';
import { readQuantizedModel } from './dist/src/quant/file.js';

const [file, config] = process.argv.slice(2);
const opened = openModel({ weights: file, config });
const ds = await openDataset('/work/shared/data/cifar10/test1k.json');
const batch = await loadBatch(ds, Array.from({length: 64}, (_, i) => i), opened.model.spec.preprocess);
for (const mode of opened.quantized ? ['int', 'fp32-of-q'] : ['fp32']) {
  const t0 = performance.now();
  const bytes = await exportOnnx(opened.model, mode === 'int' ? { quant: opened.quantized.points } : {});
  console.log(mode, 'export ms', (performance.now() - t0).toFixed(0), 'bytes', bytes.length);
  fs.writeFileSync(`/tmp/q/${mode}.onnx`, bytes);
  const s = await ort.InferenceSession.create(bytes, { optimizedModelFilePath: `/tmp/q/${mode}.opt.onnx`, graphOptimizationLevel: 'all' });
  const out = await s.run({ pixel_values: new ort.Tensor('float32', batch.images.data, batch.images.shape) });
  const y = out.logits.data;
  const ref = (await opened.model.forward(batch.images, mode === 'int' ? opened.runner : undefined)).data;
  let max = 0, maxref = 0, agree = 0;
  for (let i = 0; i < y.length; i++) { max = Math.max(max, Math.abs(y[i] - ref[i])); maxref = Math.max(maxref, Math.abs(ref[i])); }
  const C = y.length / 64;
  for (let r = 0; r < 64; r++) { const am = (a) => { let b = 0; for (let c = 1; c < C; c++) if (a[r*C+c] > a[r*C+b]) b = c; return b; }; if (am(y) === am(ref)) agree++; }
  console.log(mode, 'max|Δ|', max, 'max|ref|', maxref, 'agree', agree, '/64');
}
