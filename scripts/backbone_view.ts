/**
 * A classifier checkpoint viewed as a backbone (timm's `num_classes=0`: head = Identity): the same weights
 * without the classifier tensors, and a card that says num_classes 0. Used by scripts/backbone_losses.ts
 * and test/backbone.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SafeTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';

/** The classifier tensors of timm's ViT/DeiT (head, head_dist) and Swin (head.fc). */
const HEAD = /^(head|head_dist|head\.fc)\.(weight|bias)$/;

/** Write OUT_DIR/NAME.safetensors + OUT_DIR/NAME.json (a sibling card) and return the checkpoint's path. */
export function writeBackboneView(checkpoint: string, card: string, outDir: string, name: string): string {
  const st = SafeTensors.read(checkpoint);
  const tensors: Record<string, TensorToWrite> = {};
  for (const n of st.names()) {
    if (HEAD.test(n)) continue;
    tensors[n] = { dtype: 'F32', shape: st.info(n).shape, data: st.tensor(n).data };
  }
  const c = JSON.parse(fs.readFileSync(card, 'utf8')) as { timm_kwargs: Record<string, unknown> } & Record<string, unknown>;
  const backboneCard = { ...c, name, timm_kwargs: { ...c.timm_kwargs, num_classes: 0 } };
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `${name}.safetensors`);
  writeSafetensors(file, tensors);
  fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(backboneCard, null, 1));
  return file;
}
