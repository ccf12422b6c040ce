/**
 * The README's screenshot of a quantization report: the top of the page and the first histograms, in
 * the same headless Chromium the tests use.
 *
 *   npx ptq4vit quantize … --report report.html
 *   npx tsc -p . && node dist/scripts/report_screenshot.js report.html docs/report.png [height]
 */
import { chartStates, openInChromium } from '../test/browser.js';

const [file, png, height = '2000'] = process.argv.slice(2);
if (!file || !png) {
  process.stderr.write('usage: node dist/scripts/report_screenshot.js REPORT.html OUT.png [HEIGHT]\n');
  process.exit(2);
}
const opened = await openInChromium(file, { width: 1240, height: Number(height) });
try {
  if (opened.problems.length) throw new Error(`the page has problems:\n${opened.problems.join('\n')}`);
  const charts = await chartStates(opened.page);
  process.stderr.write(`${charts.length} charts, smallest has ${Math.min(...charts.map((c) => c.shapes))} shapes\n`);
  await opened.page.screenshot({ path: png, clip: { x: 0, y: 0, width: 1240, height: Number(height) } });
} finally {
  await opened.close();
}
