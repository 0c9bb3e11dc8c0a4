/**
 * Draws a trace as an SVG waterfall (span names, services, durations, parent/child nesting, span
 * links, events) from Jaeger's query API. A Jaeger built from source (npm run jaeger) has no UI,
 * so this is how a trace gets into the docs.
 *
 *   npx tsx scripts/trace-picture.ts --demo
 *       starts a local Jaeger, runs `npm run demo` with the worker exporting to it, picks one
 *       request's trace and draws it with the batch and send spans that link to it
 *       (docs/tracing/worker-trace.svg)
 *   npx tsx scripts/trace-picture.ts --query-url http://127.0.0.1:16686 --service streamscore
 *   npx tsx scripts/trace-picture.ts --query-url http://127.0.0.1:16686 --trace-id <32 hex>
 *       draws a trace from a Jaeger you run (npm run jaeger -- start)
 *
 * Spans in other traces that link to the chosen trace (a worker's batch span links every request
 * it answered) are drawn beneath it, with the link as a dashed arrow.
 */
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import {
  findTraces,
  getTrace,
  spanTree,
  startLocalJaeger,
  type Trace,
  type TraceSpan,
} from '../src/telemetry/local-jaeger.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const log = (msg: string): void => console.error(`[trace-picture] ${msg}`);

// ---------------------------------------------------------------------------------------------
// Choosing what to draw
// ---------------------------------------------------------------------------------------------

/** Traces (other than `main`) with a span that links to a span of `main`. */
function linkingTraces(main: Trace, candidates: Trace[]): Trace[] {
  const ids = new Set(main.spans.map((s) => s.spanId));
  return candidates.filter(
    (t) =>
      t.traceId !== main.traceId &&
      t.spans.some((s) => s.links.some((l) => l.traceId === main.traceId && ids.has(l.spanId))),
  );
}

/** The trace with the most spans that other traces link to; ties: the most spans, then latest. */
/** One linking trace per first-span name: the batch's `infer` and the answers' `send`. */
function onePerName(traces: Trace[]): Trace[] {
  const seen = new Set<string>();
  return traces.filter((t) => {
    const name = t.spans[0]?.name ?? '';
    if (seen.has(name)) return false;
    seen.add(name);
    return true;
  });
}

function pickTrace(traces: Trace[]): { main: Trace; related: Trace[] } {
  let best: { main: Trace; related: Trace[]; score: number } | undefined;
  for (const trace of traces) {
    const related = linkingTraces(trace, traces);
    const score = (related.length > 0 ? 1000 : 0) + trace.spans.length;
    if (best === undefined || score >= best.score) best = { main: trace, related, score };
  }
  if (best === undefined) throw new Error('no traces to draw');
  return { main: best.main, related: onePerName(best.related) };
}

// ---------------------------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------------------------

const WIDTH = 1400;
const LABEL_W = 470;
const ROW_H = 30;
const BAR_H = 14;
const PAD = 24;
/** Bars are coloured by span kind: what a span does reads better than which service did it. */
const KIND_COLOURS: Record<string, string> = {
  CONSUMER: '#4e79a7',
  SERVER: '#76b7b2',
  PRODUCER: '#f28e2b',
  CLIENT: '#edc948',
  INTERNAL: '#59a14f',
};
const OTHER_COLOUR = '#9c755f';

const esc = (text: string): string => text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

function ms(value: number): string {
  if (value === 0) return '0';
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
  if (value >= 10) return `${value.toFixed(0)} ms`;
  if (value >= 1) return `${value.toFixed(1)} ms`;
  return `${(value * 1000).toFixed(0)} µs`;
}

function niceStep(span: number): number {
  const raw = span / 8;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? raw;
}

interface Row {
  kind: 'header' | 'span';
  text: string;
  span?: TraceSpan;
  depth: number;
}

/** Rows in tree order: each trace's header, then its spans depth-first by start time. */
function layout(traces: Trace[]): Row[] {
  const rows: Row[] = [];
  traces.forEach((trace, i) => {
    const services = [...new Set(trace.spans.map((s) => s.serviceName))].join(', ');
    rows.push({
      kind: 'header',
      text: `${i === 0 ? 'trace' : 'linking trace'} ${trace.traceId} · ${services} · ${trace.spans.length} span${trace.spans.length === 1 ? '' : 's'}`,
      depth: 0,
    });
    const { roots, children } = spanTree(trace);
    const visit = (span: TraceSpan, depth: number): void => {
      rows.push({ kind: 'span', text: span.name, span, depth });
      for (const child of children(span)) visit(child, depth + 1);
    };
    for (const root of roots) visit(root, 0);
  });
  return rows;
}

function renderWaterfall(traces: Trace[], title: string): string {
  const spans = traces.flatMap((t) => t.spans);
  const t0 = Math.min(...spans.map((s) => s.startMs));
  const t1 = Math.max(...spans.map((s) => s.endMs));
  const total = Math.max(t1 - t0, 0.001);
  const chartX = PAD + LABEL_W;
  const chartW = WIDTH - chartX - PAD - 90;
  const x = (t: number): number => chartX + ((t - t0) / total) * chartW;

  const rows = layout(traces);
  const top = PAD + 58;
  const y = (i: number): number => top + i * ROW_H;
  const rowOf = new Map<string, number>();
  rows.forEach((row, i) => {
    if (row.span) rowOf.set(`${row.span.traceId}/${row.span.spanId}`, i);
  });
  const kinds = [...new Set(spans.map((s) => s.kind))];
  const colour = (s: TraceSpan): string => KIND_COLOURS[s.kind] ?? OTHER_COLOUR;

  const out: string[] = [];
  const height = y(rows.length) + PAD + 40;
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="13">`,
    `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${PAD}" y="${PAD + 6}" font-size="17" font-weight="bold">${esc(title)}</text>`,
    `<text x="${PAD}" y="${PAD + 26}" fill="#555">${esc(`${spans.length} spans in ${traces.length} trace${traces.length === 1 ? '' : 's'}, ${ms(total)} from first start to last end; bars on one time axis, nesting = parent/child, dashed arrow = span link, ◆ = event`)}</text>`,
  );

  // Time axis.
  const step = niceStep(total);
  for (let t = 0; t <= total + 1e-9; t += step) {
    const tx = x(t0 + t);
    out.push(
      `<line x1="${tx.toFixed(1)}" y1="${top - 8}" x2="${tx.toFixed(1)}" y2="${y(rows.length)}" stroke="#eee"/>`,
      `<text x="${tx.toFixed(1)}" y="${top - 12}" fill="#777" font-size="11" text-anchor="middle">${esc(ms(t))}</text>`,
    );
  }

  rows.forEach((row, i) => {
    const ry = y(i);
    if (row.kind === 'header') {
      out.push(
        `<rect x="${PAD / 2}" y="${ry + 2}" width="${WIDTH - PAD}" height="${ROW_H - 4}" fill="#f3f4f6" rx="3"/>`,
        `<text x="${PAD}" y="${ry + ROW_H / 2 + 4}" font-weight="bold" fill="#333">${esc(row.text)}</text>`,
      );
      return;
    }
    const span = row.span!;
    const indent = PAD + row.depth * 18;
    if (i % 2 === 0) {
      out.push(
        `<rect x="${PAD / 2}" y="${ry}" width="${WIDTH - PAD}" height="${ROW_H}" fill="#fafafa"/>`,
      );
    }
    const error = span.status.code === 'ERROR';
    const remoteParent =
      span.parentSpanId !== undefined &&
      !rowOf.has(`${span.traceId}/${span.parentSpanId}`) &&
      row.depth === 0;
    out.push(
      `<text x="${indent}" y="${ry + ROW_H / 2 + 4}"><tspan fill="#555" font-weight="bold">${esc(span.serviceName)}</tspan> ${esc(span.name)} <tspan fill="#888" font-size="11">${esc(span.kind.toLowerCase())}${remoteParent ? ` · parent ${span.parentSpanId} (remote)` : ''}</tspan></text>`,
    );
    const bx = x(span.startMs);
    const bw = Math.max(x(span.endMs) - bx, 2);
    out.push(
      `<rect x="${bx.toFixed(1)}" y="${ry + (ROW_H - BAR_H) / 2}" width="${bw.toFixed(1)}" height="${BAR_H}" rx="2" fill="${colour(span)}"${error ? ' stroke="#d62728" stroke-width="2"' : ''}><title>${esc(`${span.name}\nspan ${span.spanId}\n${JSON.stringify(span.attributes, null, 1)}`)}</title></rect>`,
      `<text x="${(bx + bw + 6).toFixed(1)}" y="${ry + ROW_H / 2 + 4}" fill="#444" font-size="11">${esc(ms(span.durationMs))}${error ? ` ✗ ${esc(span.status.message)}` : ''}</text>`,
    );
    // Event names alternate left and right of their marks, so a start/end pair does not collide.
    span.events.forEach((event, k) => {
      const ex = x(event.timeMs);
      const anchor = k % 2 === 0 ? 'end' : 'start';
      const lx = k % 2 === 0 ? ex - 5 : ex + 5;
      out.push(
        `<path d="M${ex.toFixed(1)},${ry + ROW_H / 2 - 5} l4,5 l-4,5 l-4,-5 z" fill="#222"><title>${esc(event.name)}</title></path>`,
        `<text x="${lx.toFixed(1)}" y="${ry + 6}" fill="#333" font-size="9" text-anchor="${anchor}">${esc(event.name)}</text>`,
      );
    });
    // Links to spans drawn here become arrows; others are named.
    const external = span.links.filter((l) => !rowOf.has(`${l.traceId}/${l.spanId}`));
    if (external.length > 0) {
      out.push(
        `<text x="${(bx + bw + 70).toFixed(1)}" y="${ry + ROW_H / 2 + 4}" fill="#888" font-size="11">${esc(`⤳ ${external.length} link${external.length === 1 ? '' : 's'} elsewhere`)}</text>`,
      );
    }
  });

  // Link arrows: from the linking span's bar to the linked span's bar.
  rows.forEach((row, i) => {
    for (const link of row.span?.links ?? []) {
      const target = rowOf.get(`${link.traceId}/${link.spanId}`);
      if (target === undefined) continue;
      const from = row.span!;
      const fx = x(from.startMs) + 1;
      const fy = y(i) + (i > target ? (ROW_H - BAR_H) / 2 : (ROW_H + BAR_H) / 2);
      const to = rows[target]!.span!;
      const tx = Math.max(x(to.startMs), Math.min(fx, x(to.endMs)));
      const ty = y(target) + (i > target ? (ROW_H + BAR_H) / 2 : (ROW_H - BAR_H) / 2);
      const bend = fx - 40;
      out.push(
        `<path d="M${fx.toFixed(1)},${fy} C${bend.toFixed(1)},${fy} ${bend.toFixed(1)},${ty} ${tx.toFixed(1)},${ty}" fill="none" stroke="#555" stroke-width="1.3" stroke-dasharray="5,4" marker-end="url(#arrow)"/>`,
      );
    }
  });

  // Legend: one swatch per span kind drawn, then where the picture came from.
  const ly = height - PAD / 2;
  kinds.forEach((kind, i) => {
    const lx = PAD + i * 110;
    out.push(
      `<rect x="${lx}" y="${ly - 10}" width="14" height="10" rx="2" fill="${KIND_COLOURS[kind] ?? OTHER_COLOUR}"/>`,
      `<text x="${lx + 19}" y="${ly}" fill="#555" font-size="11">${esc(kind.toLowerCase())}</text>`,
    );
  });
  out.push(
    `<text x="${WIDTH - PAD}" y="${ly}" fill="#999" font-size="11" text-anchor="end">${esc("drawn by scripts/trace-picture.ts from Jaeger's query API (GET /api/v3/traces)")}</text>`,
    '</svg>',
    '',
  );
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------------------------

async function fromJaeger(
  queryUrl: string,
  opts: { traceId?: string; service?: string },
): Promise<Trace[]> {
  if (opts.traceId !== undefined) {
    const main = await getTrace(queryUrl, opts.traceId, { timeoutMs: 5_000 });
    if (main === undefined) throw new Error(`Jaeger at ${queryUrl} has no trace ${opts.traceId}`);
    const services = [...new Set(main.spans.map((s) => s.serviceName))];
    const candidates = (
      await Promise.all(services.map((s) => findTraces(queryUrl, s, { limit: 5000 })))
    ).flat();
    return [main, ...onePerName(linkingTraces(main, candidates))];
  }
  const service = opts.service ?? 'streamscore';
  const traces = await findTraces(queryUrl, service, { limit: 5000, timeoutMs: 10_000 });
  if (traces.length === 0) throw new Error(`Jaeger at ${queryUrl} has no traces of ${service}`);
  const { main, related } = pickTrace(traces);
  return [main, ...related];
}

/** A local Jaeger, `npm run demo` exporting to it, and the worker's traces read back. */
async function fromDemo(): Promise<Trace[]> {
  const jaeger = await startLocalJaeger({ log });
  try {
    log(`running npm run demo with STREAMSCORE_TELEMETRY_OTLP_ENDPOINT=${jaeger.otlpHttpEndpoint}`);
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/demo.ts'], {
        cwd: ROOT,
        env: { ...process.env, STREAMSCORE_TELEMETRY_OTLP_ENDPOINT: jaeger.otlpHttpEndpoint },
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      child.once('error', reject);
      child.once('exit', resolve);
    });
    if (code !== 0) throw new Error(`the demo exited with code ${code}`);
    return await fromJaeger(jaeger.queryUrl, { service: 'streamscore' });
  } finally {
    await jaeger.stop();
  }
}

const program = new Command('trace-picture')
  .description("draw a trace from Jaeger's query API as an SVG waterfall")
  .option('--demo', 'start a local Jaeger, run npm run demo against it, draw a worker trace')
  .option('--query-url <url>', 'a running Jaeger query service, e.g. http://127.0.0.1:16686')
  .option('--trace-id <id>', 'the trace to draw (default: one of --service, see above)')
  .option('--service <name>', 'pick a trace of this service', 'streamscore')
  .option('--title <text>', 'the title above the picture')
  .option('--out <file>', 'where the SVG goes', 'docs/tracing/worker-trace.svg')
  .action(
    async (opts: {
      demo?: boolean;
      queryUrl?: string;
      traceId?: string;
      service: string;
      title?: string;
      out: string;
    }) => {
      if (opts.demo !== true && opts.queryUrl === undefined) {
        throw new Error('give --demo or --query-url (see --help)');
      }
      const traces =
        opts.demo === true
          ? await fromDemo()
          : await fromJaeger(opts.queryUrl!, { traceId: opts.traceId, service: opts.service });
      const main = traces[0]!;
      const title =
        opts.title ??
        `${[...new Set(main.spans.map((s) => s.serviceName))].join(', ')}: ${spanTree(main).roots[0]?.name ?? main.traceId}`;
      const file = path.resolve(opts.out);
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, renderWaterfall(traces, title));
      log(`wrote ${path.relative(process.cwd(), file)} (trace ${main.traceId})`);
    },
  );

try {
  await program.parseAsync();
} catch (err) {
  log(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
}
