/**
 * A real headless Chromium (Debian's `chromium`, driven by puppeteer-core: nothing is downloaded) opening
 * a local HTML file with the network cut off: console errors, failed or outside requests and page
 * errors are collected for the caller to assert on.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));

export interface OpenedPage {
  page: Page;
  /** Console errors, page errors, and every request that was not the file itself. */
  problems: string[];
  close(): Promise<void>;
}

export async function openInChromium(file: string, viewport = { width: 1280, height: 900 }): Promise<OpenedPage> {
  if (!CHROMIUM) throw new Error('no chromium found (apt-get install chromium, or set CHROMIUM_PATH)');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-chromium-'));
  const browser: Browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
  const problems: string[] = [];
  try {
    const page = await browser.newPage();
    await page.setViewport(viewport);
    const url = pathToFileURL(path.resolve(file)).href;
    await page.setRequestInterception(true);
    page.on('request', (req) => {
      if (req.url() === url || req.url().startsWith('data:')) void req.continue();
      else {
        problems.push(`request to ${req.url()}`);
        void req.abort();
      }
    });
    page.on('console', (msg) => {
      if (msg.type() === 'error' || msg.type() === 'warn') problems.push(`console ${msg.type()}: ${msg.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`page error: ${(err as Error).message}`));
    page.on('requestfailed', (req) => {
      if (req.url() === url) problems.push(`failed: ${req.url()}`);
    });
    await page.goto(url, { waitUntil: 'load', timeout: 60_000 });
    return {
      page,
      problems,
      async close() {
        await browser.close();
        fs.rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
    throw e;
  }
}

export interface ChartState {
  id: string;
  width: number;
  height: number;
  /** SVG shapes ECharts drew inside the chart. */
  shapes: number;
  /** Text labels inside the chart. */
  texts: number;
}

/** Every `.chart` element on the page with what the chart library drew into it. */
export async function chartStates(page: Page): Promise<ChartState[]> {
  return page.$$eval('.chart', (els) =>
    els.map((el) => {
      const box = el.getBoundingClientRect();
      return { id: el.id, width: box.width, height: box.height, shapes: el.querySelectorAll('svg path, svg rect, svg polyline, svg polygon, svg line').length, texts: el.querySelectorAll('svg text').length };
    }),
  );
}
